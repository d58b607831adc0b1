// Validation (1): the Postfix retry schedule. One message to a destination that is always down, under
// Postfix's defaults, is attempted when Postfix's formula says — next = end of attempt + clamp(age,
// minimal_backoff_time, maximal_backoff_time), without queue_run_delay's discretisation (Postern arms a
// timer instead of scanning) and with no jitter (Postern has none) — until it expires after 5 days.
import { describe, expect, test } from "vitest"
import { decodeScenario } from "../../src/sim/scenario.js"
import { runAll } from "../../src/sim/simulate.js"

const MIN = 300_000
const MAX = 4_000_000
const LIFETIME = 5 * 86_400_000

/** Attempt end times (ms after arrival at 0) by Postfix's formula, for attempts that take `duration`. */
const postfixSchedule = (duration: number): Array<number> => {
  const ends: Array<number> = []
  let start = 0
  for (;;) {
    const end = start + duration
    ends.push(end)
    if (end >= LIFETIME) return ends // this attempt's deferral finds the message expired
    start = end + Math.min(Math.max(end, MIN), MAX)
  }
}

const alwaysDown = (mode: "refuse" | "hang" | "421") =>
  decodeScenario(
    {
      traffic: { messages: 1, arrival: { process: "burst", at: 0 }, sender: "s@sender.example", domains: { "down.example": 1 } },
      destinations: [{ domain: "down.example", latency: 0, outages: [{ start: 0, duration: "30d", mode }] }],
      policies: { "postfix-defaults": { backoffJitter: 0 } },
    },
    `always-down-${mode}`,
  )

const attemptsOf = async (mode: "refuse" | "hang" | "421") => {
  const { results } = await runAll({ scenario: alwaysDown(mode), seed: 7 })
  const r = results[0]!
  r.run.db.close()
  return r
}

describe("the Postfix schedule against a destination that is always down", () => {
  test("refused connections: about 5, 10, 20, 40, 80 minutes, then every 4000 s, exactly as the formula, expiring after 5 days", async () => {
    const r = await attemptsOf("refuse")
    const rows = r.attempts.filter((a) => a.message === 1)
    const tries = rows.filter((a) => a.outcome !== "expired")
    const expected = postfixSchedule(0)
    expect(tries.map((a) => a.at)).toEqual(expected)
    // The same in Postfix's own words.
    expect(expected.slice(0, 6).map((t) => t / 60_000)).toEqual([0, 5, 10, 20, 40, 80])
    const gaps = expected.slice(6).map((t, i) => t - expected[i + 5]!)
    expect(new Set(gaps)).toEqual(new Set([4_000_000]))
    expect(tries).toHaveLength(113)
    expect(tries.map((a) => a.attempt)).toEqual(tries.map((_, i) => i + 1))
    expect(tries.every((a) => a.outcome === "deferred" && a.dsn === "4.4.1")).toBe(true)
    expect(tries[0]!.reply).toBe("connect to mx.down.example[10.0.0.1]:25: Connection refused")
    // The last attempt is past the 5-day lifetime: the recipient expires there, with its last reason.
    const last = rows[rows.length - 1]!
    expect(last.outcome).toBe("expired")
    expect(last.at).toBe(expected[expected.length - 1])
    expect(last.at).toBeGreaterThanOrEqual(LIFETIME)
    expect(expected[expected.length - 2]!).toBeLessThan(LIFETIME)
    expect(r.summary.expired).toBe(1)
    expect(r.summary.nonDeliveryReports).toBe(1)
  })

  test("hanging connections: each attempt takes smtpConnectTimeout (30 s) and the next is due clamp(age) after its end", async () => {
    const r = await attemptsOf("hang")
    const tries = r.attempts.filter((a) => a.message === 1 && a.outcome !== "expired")
    expect(tries.map((a) => a.at)).toEqual(postfixSchedule(30_000))
    expect(tries.every((a) => a.durationMs === 30_000 && a.reply.endsWith("Connection timed out"))).toBe(true)
    expect(r.summary.expired).toBe(1)
  })

  test("a 421 greeting is a temporary failure of the site: the same schedule", async () => {
    const r = await attemptsOf("421")
    const tries = r.attempts.filter((a) => a.message === 1 && a.outcome !== "expired")
    expect(tries.map((a) => a.at)).toEqual(postfixSchedule(0))
    expect(tries[0]!.reply).toMatch(/^host mx\.down\.example\[10\.0\.0\.1\]:25 refused to talk to me: 421 /)
  })
})
