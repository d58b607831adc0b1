// Chance as a service: every random choice (queue ids, jitter, MX shuffling) draws from an Rng, seeded in
// tests and the simulator so runs repeat exactly. The production layer seeds from the OS.
import { randomBytes } from "node:crypto"
import { Context, Layer } from "effect"

export interface RngShape {
  /** Uniform in [0, 1). */
  readonly next: () => number
}

/** mulberry32: small, fast, good enough for scheduling decisions (not for secrets). */
export const seededRng = (seed: number): RngShape => {
  let a = seed >>> 0
  return {
    next: () => {
      a = (a + 0x6d2b79f5) >>> 0
      let t = a
      t = Math.imul(t ^ (t >>> 15), t | 1)
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    },
  }
}

export class Rng extends Context.Service<Rng, RngShape>()("postern/runtime/Rng") {
  static readonly layer = Layer.sync(Rng, () => Rng.of(seededRng(randomBytes(4).readUInt32LE(0))))
  static readonly layerSeeded = (seed: number) => Layer.succeed(Rng, Rng.of(seededRng(seed)))
}
