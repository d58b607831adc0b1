// Seeded randomness for the chaos and soak drivers: a small PRNG (mulberry32) for schedules, and a
// string hash for decisions that must be the same whatever the timing (the flaky receiver's 451s are a
// function of (seed, recipient, attempt), not of the order in which RCPTs happen to arrive).

/** mulberry32: a fast 32-bit PRNG; the same seed gives the same sequence of floats in [0, 1). */
export const mulberry32 = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** FNV-1a over the UTF-16 code units, then murmur3's finaliser: a well-mixed 32-bit hash. */
export const hash32 = (s: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A float in [0, 1) that depends only on the parts. */
export const unitHash = (...parts: ReadonlyArray<string | number>): number => hash32(parts.join("\u0000")) / 4294967296

/** Uniform in [lo, hi). */
export const between = (rng: () => number, lo: number, hi: number): number => lo + rng() * (hi - lo)
