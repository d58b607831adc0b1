// Postfix time values ("300s", "5m", "1h", "5d", "1w", a bare number of seconds, plus "100ms") → milliseconds.
// Guarantees: whole, non-negative, safe-integer milliseconds; anything else is rejected with a message that
// names the accepted forms. `PostfixDuration` is the same parser as an Effect Schema (string | number ⇄ ms).
import { Effect, Schema, SchemaGetter, SchemaIssue } from "effect"

/** What a duration may look like; every duration error message carries this text. */
export const DURATION_EXPECTED =
  'a duration such as "300s", "5m", "1h", "5d", "1w" or a number of seconds (units: ms, s, m, h, d, w)'

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const
type Unit = keyof typeof UNIT_MS

/**
 * Parses a Postfix time value into milliseconds: `"300s"`, `"5m"`, `"1h"`, `"5d"`, `"1w"`, `"100ms"`,
 * or a bare number / numeric string of seconds (`300`, `"300"`). Whole numbers only, no sign, no spaces
 * inside (surrounding spaces are ignored). Returns `undefined` for anything else, including negatives,
 * fractions, the empty string and values too large to represent exactly.
 */
export function parseDuration(text: string | number): number | undefined {
  if (typeof text === "number") {
    return Number.isSafeInteger(text) && text >= 0 ? checked(text * 1_000) : undefined
  }
  if (typeof text !== "string") return undefined
  const match = /^(\d+)(ms|s|m|h|d|w)?$/.exec(text.trim())
  if (match === null) return undefined
  const amount = Number(match[1])
  const unit = (match[2] ?? "s") as Unit
  return checked(amount * UNIT_MS[unit])
}

const checked = (ms: number): number | undefined => (Number.isSafeInteger(ms) ? ms : undefined)

/** Milliseconds → the shortest exact Postfix form (`300000` → `"5m"`, `100` → `"100ms"`, `0` → `"0s"`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s"
  for (const unit of ["w", "d", "h", "m", "s"] as const) {
    if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`
  }
  return `${ms}ms`
}

/** A short, quoted rendering of a user-supplied value for error messages. */
export function showValue(value: unknown): string {
  if (value === undefined) return "nothing"
  let text: string
  try {
    text = typeof value === "bigint" ? `${value}` : (JSON.stringify(value) ?? String(value))
  } catch {
    text = String(value)
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

/** The error message for a value that is not a duration. */
export const durationMessage = (value: unknown): string => `expected ${DURATION_EXPECTED}, got ${showValue(value)}`

/**
 * Effect Schema for a Postfix duration. Encoded: `string | number` as written in YAML;
 * decoded: milliseconds. Encodes back to the shortest exact form (`"5m"`).
 */
export const PostfixDuration = Schema.Union([Schema.String, Schema.Number])
  .annotate({ expected: DURATION_EXPECTED })
  .pipe(
    Schema.decodeTo(Schema.Number, {
      decode: SchemaGetter.transformEffect((input: string | number, options) => {
        const ms = parseDuration(input)
        return ms === undefined
          ? Effect.fail(new SchemaIssue.InvalidValue({ message: durationMessage(input) }, input, options))
          : Effect.succeed(ms)
      }),
      encode: SchemaGetter.transform((ms: number): string | number => formatDuration(ms)),
    }),
  )
