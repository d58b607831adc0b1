// Validation (2): greylisting (postgrey's model, 300 s) under Postfix's defaults. Every recipient is
// tempfailed once and delivered on its second attempt, and the first-delivery delay is what the retry
// formula gives: the first attempt's end, plus clamp(age, 300 s, 4000 s), plus the second attempt.
import { beforeAll, describe, expect, test } from "vitest"
import { decodeScenario } from "../../src/sim/scenario.js"
import type { PolicyResult } from "../../src/sim/results.js"
import { runAll } from "../../src/sim/simulate.js"
import type { SimMessage } from "../../src/sim/traffic.js"

const scenario = decodeScenario(
  {
    traffic: {
      messages: 400,
      arrival: { process: "poisson", rate: "6/min" },
      recipients: { min: 1, max: 3 },
      sender: "news@sender.example",
      domains: { "grey.example": 1 },
    },
    destinations: [{ domain: "grey.example", latency: "500ms", greylist: { delay: "300s" } }],
    policies: { "postfix-defaults": { backoffJitter: 0 } },
  },
  "greylisting-validation",
)

const backoff = (age: number) => Math.min(Math.max(age, 300_000), 4_000_000)

describe("greylisting with a 300 s greylist and Postfix's defaults", () => {
  let r: PolicyResult
  let traffic: ReadonlyArray<SimMessage>
  beforeAll(async () => {
    const run = await runAll({ scenario, seed: 42 })
    r = run.results[0]!
    traffic = run.traffic
    r.run.db.close()
  })

  test("every recipient is delivered on its second attempt", () => {
    expect(r.recipients).toHaveLength(traffic.reduce((n, m) => n + m.recipients.length, 0))
    for (const x of r.recipients) {
      expect(x.state).toBe("delivered")
      expect(x.attempts).toBe(2)
    }
    const rows = r.attempts.filter((a) => a.message !== null)
    expect(rows.filter((a) => a.attempt === 1).every((a) => a.outcome === "deferred" && a.reply.includes("450 4.2.0") && a.reply.includes("Greylisted"))).toBe(true)
    expect(rows.filter((a) => a.attempt === 2).every((a) => a.outcome === "sent")).toBe(true)
    expect(r.summary.bounced + r.summary.expired + r.summary.nonDeliveryReports).toBe(0)
  })

  test("each first-delivery delay is the formula's: first attempt + clamp(age, 300 s, 4000 s) + second attempt", () => {
    const byKey = new Map(r.attempts.map((a) => [`${a.queueId}/${a.recipient}/${a.attempt}`, a]))
    for (const x of r.recipients) {
      const first = byKey.get(`${x.queueId}/${x.recipient}/1`)!
      const second = byKey.get(`${x.queueId}/${x.recipient}/2`)!
      const firstAge = first.at - x.arrival
      // The retry starts exactly when the formula says (no scan interval, no jitter)...
      expect(second.at - second.durationMs).toBe(first.at + backoff(firstAge))
      // ...so the delay is the two attempts' durations plus the backoff.
      expect(x.finalAt! - x.arrival).toBe(firstAge + backoff(firstAge) + second.durationMs)
    }
  })

  test("the delay distribution: 300 s plus one or two 500 ms round trips per attempt", () => {
    const delays = r.recipients.map((x) => x.finalAt! - x.arrival)
    // An attempt is a connect (500 ms) and a transaction (500 ms), or only the transaction on a cached session.
    expect(new Set(delays.map((d) => d - 300_000)).size).toBeLessThanOrEqual(3)
    for (const d of delays) expect([301_000, 301_500, 302_000]).toContain(d)
    expect(new Set(delays).size).toBeGreaterThan(1) // both fresh and cached sessions occur
    const p = r.summary.latency!
    expect(p.p50).toBeGreaterThanOrEqual(301)
    expect(p.max).toBeLessThanOrEqual(302)
  })
})
