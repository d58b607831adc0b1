// Chance for the simulator's models (traffic, modelled destinations), drawn from the production seeded
// Rng. Each model gets its own named stream derived from the run's seed, so a draw in one model never
// shifts another's, and the engine's own streams (queue ids, MX order) stay untouched by modelling.
import { seededRng, type RngShape } from "../runtime/rng.js"

/** FNV-1a over the string's UTF-16 units, then murmur3's finaliser: a well-mixed 32-bit hash. */
export const hash32 = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A named, independent stream of the run's seed. */
export const stream = (seed: number, name: string): RngShape => seededRng(hash32(`${seed >>> 0}/${name}`))

/** A uniform number in [0, 1) fixed by (seed, key): the same key always draws the same value. */
export const unitHash = (seed: number, key: string): number => hash32(`${seed >>> 0}#${key}`) / 4294967296

/** A distribution of durations (ms) or sizes; sampled values are rounded to whole units, never negative. */
export type Distribution =
  | { readonly kind: "fixed"; readonly value: number }
  | { readonly kind: "uniform"; readonly min: number; readonly max: number }
  | { readonly kind: "exponential"; readonly mean: number }
  /** Log-normal with the given median; `sigma` is the standard deviation of the logarithm. */
  | { readonly kind: "lognormal"; readonly median: number; readonly sigma: number }

/** The z-score of the 90th percentile of the standard normal distribution. */
export const Z90 = 1.2815515655446004

const normal = (rng: RngShape): number => {
  // Box–Muller; 1 - u keeps the logarithm finite.
  const u = 1 - rng.next()
  const v = rng.next()
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
}

export const sample = (d: Distribution, rng: RngShape): number => {
  switch (d.kind) {
    case "fixed":
      return d.value
    case "uniform":
      return Math.round(d.min + (d.max - d.min) * rng.next())
    case "exponential":
      return Math.round(-Math.log(1 - rng.next()) * d.mean)
    case "lognormal":
      return Math.round(d.median * Math.exp(d.sigma * normal(rng)))
  }
}

/** An index drawn from cumulative weights (the last entry is the total). */
export const pickWeighted = (cumulative: ReadonlyArray<number>, rng: RngShape): number => {
  const total = cumulative[cumulative.length - 1] ?? 0
  const x = rng.next() * total
  let lo = 0
  let hi = cumulative.length - 1
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (cumulative[mid]! > x) hi = mid
    else lo = mid + 1
  }
  return lo
}
