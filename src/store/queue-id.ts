// Queue ids in the spirit of Postfix's long queue ids: the arrival time in base 32 followed by random
// characters, so ids sort by arrival and are unique without coordination. Time and chance come from the
// injected Clock and Rng, so a seeded run names its messages the same way every time.
import type { ClockShape } from "../runtime/clock.js"
import type { RngShape } from "../runtime/rng.js"

const ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZb" // 32 characters, no vowels: ids never spell words

export const makeQueueIdGenerator = (clock: ClockShape, rng: RngShape) => {
  let last = -1
  let seq = 0
  return (): string => {
    const now = Math.floor(clock.now())
    seq = now === last ? seq + 1 : 0
    last = now
    let t = now
    let time = ""
    for (let i = 0; i < 9; i++) {
      time = ALPHABET[t % 32]! + time
      t = Math.floor(t / 32)
    }
    let rand = ""
    for (let i = 0; i < 6; i++) rand += ALPHABET[Math.floor(rng.next() * 32)]!
    return `${time}${ALPHABET[seq % 32]!}${rand}`
  }
}
