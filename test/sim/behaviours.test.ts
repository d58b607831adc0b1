// The modelled destinations' behaviours, each seen through the production engine's attempts log: rate
// limit windows, unknown users (5xx → bounce and a report), 4xx at DATA, slow DATA past the timeout,
// an outage of the primary MX only (the backup takes the mail) and a connection limit.
import { describe, expect, test } from "vitest"
import { decodeScenario } from "../../src/sim/scenario.js"
import { runAll } from "../../src/sim/simulate.js"

const HOUR = 3_600_000

const runOne = async (destination: Record<string, unknown>, traffic: Record<string, unknown> = {}, policy: Record<string, unknown> = {}) => {
  const scenario = decodeScenario(
    {
      traffic: { messages: 10, arrival: { process: "burst", at: 0 }, sender: "s@sender.example", domains: { "t.example": 1 }, ...traffic },
      destinations: [{ domain: "t.example", latency: "1s", ...destination }],
      policies: { p: policy },
    },
    "behaviour",
  )
  const { results } = await runAll({ scenario, seed: 3 })
  const r = results[0]!
  r.run.db.close()
  return r
}

describe("modelled destination behaviours", () => {
  test("a rate limit: at most N accepted per fixed window, the rest deferred with its reply", async () => {
    const r = await runOne({ rateLimit: { limit: 4, window: "1h", per: "message", reply: "451 4.7.1 slow down" } })
    const sent = r.attempts.filter((a) => a.message !== null && a.outcome === "sent")
    expect(sent).toHaveLength(10)
    const perWindow = new Map<number, number>()
    for (const a of sent) perWindow.set(Math.floor((a.at - 1) / HOUR), (perWindow.get(Math.floor((a.at - 1) / HOUR)) ?? 0) + 1)
    expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(4)
    expect(r.attempts.some((a) => a.outcome === "deferred" && a.reply.endsWith("said: 451 4.7.1 slow down"))).toBe(true)
  })

  test("unknown users: 5xx at RCPT bounces the recipient and the sender gets a report", async () => {
    const r = await runOne({ unknownRecipients: { share: 1 } })
    expect(r.summary.bounced).toBe(10)
    expect(r.summary.nonDeliveryReports).toBe(10)
    expect(r.attempts.filter((a) => a.message === null).every((a) => a.outcome === "sent" && a.recipient === "s@sender.example")).toBe(true)
    expect(r.recipients.every((x) => x.dsn === "5.1.1")).toBe(true)
  })

  test("4xx after DATA defers the message's recipients", async () => {
    const r = await runOne({ tempfail: { probability: 1, stage: "data", reply: "451 4.3.0 queue full" } }, { messages: 1 }, { maximalQueueLifetime: "1h" })
    const first = r.attempts[0]!
    expect(first.outcome).toBe("deferred")
    expect(first.reply).toContain("(in reply to end of DATA command)")
    expect(r.summary.expired).toBe(1)
  })

  test("slow DATA past smtpDataDoneTimeout loses the connection after the timeout", async () => {
    const r = await runOne({ slowData: { delay: "700s" } }, { messages: 1 }, { maximalQueueLifetime: "1h" })
    const first = r.attempts[0]!
    expect(first.reply).toMatch(/lost connection with .*Connection timed out/)
    expect(first.durationMs).toBe(1_000 + 1_000 + 600_000) // connect, transaction, then the DATA timeout
  })

  test("an outage of the primary MX: the backup MX takes the mail at once", async () => {
    const r = await runOne({
      mx: [{ host: "primary.t.example", priority: 10 }, { host: "backup.t.example", priority: 20 }],
      outages: [{ start: 0, duration: "1d", mode: "refuse", hosts: ["primary.t.example"] }],
    })
    expect(r.summary.delivered).toBe(10)
    expect(r.attempts.filter((a) => a.message !== null).every((a) => a.attempt === 1 && a.relay!.startsWith("backup.t.example["))).toBe(true)
  })

  test("a connection limit: connections past it get a 421 greeting and are retried", async () => {
    const r = await runOne({ maxConnections: { limit: 1 } }, { messages: 30 })
    expect(r.summary.delivered).toBe(30)
    expect(r.summary.destinations["t.example"]!["peakSessions"]).toBe(1)
    expect(r.attempts.some((a) => a.reply.includes("refused to talk to me: 421 4.7.0"))).toBe(true)
  })

  test("a destination that hangs for good: mail due while it is dead is deferred as it is read, attempt after attempt, until it expires", async () => {
    const r = await runOne(
      { outages: [{ start: "0s", duration: "30d", mode: "hang" }] },
      { messages: 40, arrival: { process: "poisson", rate: "10/h" } },
      { maximalQueueLifetime: "1d", bounceQueueLifetime: "1d" },
    )
    expect(r.summary.engineErrors).toBe(0)
    expect(r.summary.expired).toBe(40)
    const mail = r.attempts.filter((a) => a.message !== null)
    const suspended = mail.filter((a) => a.reply.startsWith("delivery temporarily suspended"))
    // About half the attempts never reach a server: the destination is dead between its probes.
    expect(suspended.length).toBeGreaterThan(mail.length / 3)
    // Each recipient's attempts are numbered 1, 2, 3 ... once each (none read twice), and its last is the expiry.
    const byRecipient = new Map<string, Array<(typeof mail)[number]>>()
    for (const a of mail) byRecipient.set(a.recipient, [...(byRecipient.get(a.recipient) ?? []), a])
    expect(byRecipient.size).toBe(40)
    for (const rows of byRecipient.values()) {
      const deferred = rows.filter((a) => a.outcome === "deferred")
      expect(deferred.map((a) => a.attempt)).toEqual(deferred.map((_, i) => i + 1))
      expect(rows.at(-1)!.outcome).toBe("expired")
      // Postfix's backoff: never sooner than the minimal backoff time (300s) after the previous attempt, less its 10% jitter.
      for (let i = 1; i < deferred.length; i++) expect(deferred[i]!.at - deferred[i - 1]!.at).toBeGreaterThanOrEqual(270_000)
    }
  })

  test("more mail due for a dead destination than one scan reads: each message is deferred once per retry", async () => {
    // 2,500 messages at once, 1,000 in the active window: when the destination dies and the window empties,
    // the scan reads the 1,500 waiting, 1,000 at a time, and defers them as it reads them. Its second read of
    // the due index comes before the first thousand's deferrals are committed.
    const r = await runOne(
      { outages: [{ start: "0s", duration: "30d", mode: "hang" }] },
      { messages: 2500 },
      { backoffJitter: 0, qmgrMessageActiveLimit: 1000, maximalQueueLifetime: "2h", bounceQueueLifetime: "2h" },
    )
    expect(r.summary.engineErrors).toBe(0)
    const mail = r.attempts.filter((a) => a.message !== null && a.outcome === "deferred")
    const attemptsOf = new Map<string, Array<number>>()
    for (const a of mail) attemptsOf.set(a.recipient, [...(attemptsOf.get(a.recipient) ?? []), a.attempt])
    expect(attemptsOf.size).toBe(2500)
    for (const numbers of attemptsOf.values()) expect(numbers).toEqual(numbers.map((_, i) => i + 1))
    expect(r.summary.expired).toBe(2500)
  })

  test("a full active window: the rest waits in the queue and is scanned in as room frees", async () => {
    const r = await runOne({ greylist: { delay: "60s" } }, { messages: 200 }, { qmgrMessageActiveLimit: 5 })
    expect(r.summary.delivered).toBe(200)
    expect(r.summary.engineErrors).toBe(0)
    expect(r.recipients.every((x) => x.attempts === 2)).toBe(true)
  })
})
