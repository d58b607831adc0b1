// The scenario decoder's reader: typed readers for YAML values (durations, sizes, rates, domains,
// distributions) that collect every problem with its key path instead of stopping at the first.
import { parseDuration } from "../config/index.js"
import { isDomainName } from "../config/schema.js"
import { Z90, type Distribution } from "./random.js"

export interface ScenarioIssue {
  readonly key: string
  readonly message: string
}

export type Path = ReadonlyArray<string | number>

const formatKey = (keys: Path): string => {
  let out = ""
  for (const k of keys) {
    if (typeof k === "number") out += `[${k}]`
    else if (/^[A-Za-z_$][\w$]*$/.test(k)) out += out === "" ? k : `.${k}`
    else out += `[${JSON.stringify(k)}]`
  }
  return out
}

export const show = (v: unknown): string => {
  const t = JSON.stringify(v) ?? String(v)
  return t.length > 60 ? `${t.slice(0, 57)}...` : t
}

export class Reader {
  readonly issues: Array<ScenarioIssue> = []

  fail(path: Path, message: string): undefined {
    this.issues.push({ key: formatKey(path), message })
    return undefined
  }

  /** A mapping with only the allowed keys (unknown keys are reported). */
  map(v: unknown, path: Path, allowed: ReadonlyArray<string>): Record<string, unknown> | undefined {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return this.fail(path, `expected a mapping (key: value), got ${show(v)}`)
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k)) this.fail([...path, k], `unknown key; expected one of ${allowed.join(", ")}`)
    }
    return v as Record<string, unknown>
  }

  string(v: unknown, path: Path): string | undefined {
    return typeof v === "string" && v.trim() !== "" ? v : this.fail(path, `expected text, got ${show(v)}`)
  }

  duration(v: unknown, path: Path): number | undefined {
    const ms = typeof v === "string" || typeof v === "number" ? parseDuration(v) : undefined
    return ms ?? this.fail(path, `expected a duration such as "300ms", "30s", "5m", "6h", "5d" or a number of seconds, got ${show(v)}`)
  }

  /** Bytes: a whole number, or with k (1000) or M (1000000), e.g. "20k", "1.5M". */
  size(v: unknown, path: Path): number | undefined {
    if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return v
    const m = typeof v === "string" ? /^(\d+(?:\.\d+)?)([kM]?)$/.exec(v.trim()) : null
    if (m === null) return this.fail(path, `expected a size in bytes such as 4000, "20k" or "1.5M", got ${show(v)}`)
    return Math.round(Number(m[1]) * (m[2] === "k" ? 1e3 : m[2] === "M" ? 1e6 : 1))
  }

  count(v: unknown, path: Path, min = 0): number | undefined {
    return typeof v === "number" && Number.isSafeInteger(v) && v >= min ? v : this.fail(path, `expected a whole number ≥ ${min}, got ${show(v)}`)
  }

  number(v: unknown, path: Path, min: number, max = Infinity): number | undefined {
    return typeof v === "number" && Number.isFinite(v) && v >= min && v <= max
      ? v
      : this.fail(path, `expected a number${max === Infinity ? ` ≥ ${min}` : ` from ${min} to ${max}`}, got ${show(v)}`)
  }

  /** "10/s", "600/m", "600/min", "1000/h", "20000/d", or a number per second. */
  rate(v: unknown, path: Path): number | undefined {
    if (typeof v === "number" && v > 0 && Number.isFinite(v)) return v
    const m = typeof v === "string" ? /^(\d+(?:\.\d+)?)\s*\/\s*(s|m|min|h|d)$/.exec(v.trim()) : null
    if (m === null || Number(m[1]) <= 0) return this.fail(path, `expected a rate such as "10/s", "600/min", "1000/h" or "20000/d", got ${show(v)}`)
    const per = { s: 1, m: 60, min: 60, h: 3600, d: 86400 }[m[2] as "s" | "m" | "min" | "h" | "d"]
    return Number(m[1]) / per
  }

  oneOf<T extends string>(v: unknown, path: Path, allowed: ReadonlyArray<T>): T | undefined {
    const s = typeof v === "number" ? String(v) : v
    return typeof s === "string" && (allowed as ReadonlyArray<string>).includes(s)
      ? (s as T)
      : this.fail(path, `expected one of ${allowed.join(", ")}, got ${show(v)}`)
  }

  domain(v: unknown, path: Path): string | undefined {
    return typeof v === "string" && isDomainName(v) ? v.toLowerCase() : this.fail(path, `expected a domain name, got ${show(v)}`)
  }

  /**
   * A distribution of `unit` values: a scalar (fixed), `{min, max}` (uniform), or
   * `{distribution: fixed|uniform|exponential|lognormal, ...}`.
   */
  distribution(v: unknown, path: Path, unit: (v: unknown, path: Path) => number | undefined): Distribution | undefined {
    if (typeof v !== "object" || v === null) {
      const value = unit(v, path)
      return value === undefined ? undefined : { kind: "fixed", value }
    }
    const m = this.map(v, path, ["distribution", "value", "min", "max", "mean", "median", "p90", "sigma"])
    if (m === undefined) return undefined
    const kind = m["distribution"] === undefined ? "uniform" : this.oneOf(m["distribution"], [...path, "distribution"], ["fixed", "uniform", "exponential", "lognormal"] as const)
    const need = (key: string) => (m[key] === undefined ? this.fail([...path, key], `required for a ${kind} distribution`) : unit(m[key], [...path, key]))
    switch (kind) {
      case "fixed": {
        const value = need("value")
        return value === undefined ? undefined : { kind, value }
      }
      case "uniform": {
        const min = need("min")
        const max = need("max")
        if (min === undefined || max === undefined) return undefined
        return max < min ? this.fail([...path, "max"], `max is less than min`) : { kind, min, max }
      }
      case "exponential": {
        const mean = need("mean")
        return mean === undefined ? undefined : { kind, mean }
      }
      case "lognormal": {
        const median = need("median")
        if (median === undefined) return undefined
        if (m["sigma"] !== undefined) {
          const sigma = this.number(m["sigma"], [...path, "sigma"], 0)
          return sigma === undefined ? undefined : { kind, median, sigma }
        }
        const p90 = need("p90")
        if (p90 === undefined) return undefined
        if (p90 < median || median <= 0) return this.fail([...path, "p90"], "p90 must be at least the median, and the median above 0")
        return { kind, median, sigma: Math.log(p90 / median) / Z90 }
      }
      default:
        return undefined
    }
  }
}

