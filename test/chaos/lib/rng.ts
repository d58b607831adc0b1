// Seeded randomness for the chaos and soak drivers: a small PRNG (mulberry32) for schedules, and a
// string hash for decisions that must be the same whatever the timing (the flaky receiver's 451s are a
// function of (seed, recipient, attempt), not of the order in which RCPTs happen to arrive).

import { seededRng } from "../../../src/runtime/rng.js"
import { hash32 } from "../../../src/sim/random.js"

/** Postern's own seeded PRNG (mulberry32), as a function: the same seed gives the same floats in [0, 1). */
export const mulberry32 = (seed: number): (() => number) => {
  const rng = seededRng(seed)
  return () => rng.next()
}

/** A float in [0, 1) that depends only on the parts. */
export const unitHash = (...parts: ReadonlyArray<string | number>): number => hash32(parts.join("\u0000")) / 4294967296

/** Uniform in [lo, hi). */
export const between = (rng: () => number, lo: number, hi: number): number => lo + rng() * (hi - lo)
