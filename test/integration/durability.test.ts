// 250 only after the commit is on disk: the queue commits with synchronous=NORMAL and the WAL is fsynced
// off the event loop (src/store/wal-sync.ts). Here that fsync is held back: the client must not get its 250
// until it has completed, and while it waits the server goes on serving other clients.
import { Socket } from "node:net"
import { describe, expect, test } from "vitest"
import type { DurableSync } from "../../src/store/wal-sync.js"
import { withCleanup } from "../support/cleanup.js"
import { inject, makeMessage } from "../support/inject.js"

const { receiverWith, posternWith } = withCleanup()

const greeting = (port: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const s = new Socket()
    s.once("data", () => {
      resolve(performance.now() - started)
      s.destroy()
    })
    s.once("error", reject)
    s.connect(port, "127.0.0.1")
  })

describe("durability", () => {
  test("the 250 waits for the WAL's fsync; the server stays responsive meanwhile", async () => {
    const receiver = await receiverWith()
    let held = true
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    let realSyncs = 0
    const wrap = (sync: DurableSync): DurableSync => () =>
      sync().then(() => {
        realSyncs++
        return held ? gate : undefined
      })
    const postern = await posternWith({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` } }, { durable: wrap })

    let answeredAt = 0
    const sent = inject(postern.port, { from: "s@s.test", to: ["r@d.test"], body: makeMessage({ from: "s@s.test", to: "r@d.test" }) }).then((r) => {
      answeredAt = performance.now()
      return r
    })
    await new Promise((r) => setTimeout(r, 400))
    // Committed and fsynced by the real WalSync, but the fsync's completion is held: no 250 yet.
    expect(realSyncs).toBeGreaterThanOrEqual(1)
    expect(answeredAt).toBe(0)
    // The event loop is free meanwhile: a new client is greeted at once.
    expect(await greeting(postern.port)).toBeLessThan(200)
    const released = performance.now()
    held = false
    release()
    const r = await sent
    expect(r.ok).toBe(true)
    expect(answeredAt).toBeGreaterThanOrEqual(released)
    await receiver.waitForMessages(1)
  })
})
