// Issue 6, "Same code, proven": one short scenario, run twice. Once by the simulator (the production
// engine on a virtual clock, modelled destinations behind the Connector seam) and once live (a real
// Postern in this process, real sockets on 127.0.0.1, one scripted SMTP receiver per destination doing
// what the scenario says). Both runs write the production `attempts` table; per recipient, the ordered
// outcomes (attempt number, outcome, enhanced status code, and the remote reply without its relay name)
// must be the same, and so must Postern's own non-delivery reports.
//
// The scenario: three destinations plus the sender's domain, which takes the non-delivery reports.
// - grey.example greylists every (sender, recipient) triplet on its first attempt (451), then accepts;
// - picky.example answers 550 5.1.1 to about half of its addresses (the model's fixed, seeded draw);
// - open.example accepts everything.
// Backoff is 1 s to 2 s without jitter in both runs, so the live run takes a few seconds.
//
// How the live receivers match the models:
// - greylisting: the model tempfails a triplet until `delay` after it was first seen. Its delay (500 ms) is
//   below the minimal backoff (1 s), so the retry always passes it: "attempt 1 → 451, then accept" is
//   the model's own answer, which the live script gives by counting RCPTs per address (one sender only,
//   so an address is a triplet). Counting, not a clock, keeps the live side free of timing races.
// - unknown users: the model rejects an address when unitHash(seed, "unknown/<address>") < share; the
//   live script asks the same function for the same addresses (that draw *is* the scenario's user list).
// - replies: the same reply templates, with {rcpt} filled in the same way; a successful DATA answers the
//   model's "250 2.0.0 Ok: queued".
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { runAll } from "../../src/sim/simulate.js"
import { unitHash } from "../../src/sim/random.js"
import { parseScenario } from "../../src/sim/scenario.js"
import type { SimMessage } from "../../src/sim/traffic.js"
import { inject, makeMessage } from "../support/inject.js"
import { startPostern, waitFor, type TestPostern } from "../support/postern.js"
import { startReceiver, type Receiver, type ReplySpec } from "../support/receiver.js"

/**
 * The run's seed: it draws the traffic (8 messages, 13 recipients) and picky.example's unknown users.
 * This one gives, among others, a message with two unknown users and a greylisted one (one report for
 * both bounces, sent while the message stays deferred) and a message with a bounce and a greylisting.
 */
const SEED = 6
const SENDER = "news@sender.example"
/** The policy both runs use: Postern's config overrides, as in postern.yaml. */
const POLICY = { minimalBackoffTime: "1s", maximalBackoffTime: "2s", backoffJitter: 0 } as const
const GREYLIST_REPLY = "451 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, try again later"
const UNKNOWN_REPLY = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
const UNKNOWN_SHARE = 0.5
const ACCEPT_REPLY = "250 2.0.0 Ok: queued"

const SCENARIO_YAML = `
name: live-vs-sim
description: greylisting, unknown users and a plain destination, run by the simulator and live
traffic:
  messages: 8
  arrival: { process: burst, at: 0s }
  recipients: { min: 1, max: 3 }
  size: 2000
  sender: ${SENDER}
  domains: { grey.example: 1, picky.example: 1, open.example: 1 }
destinations:
  - domain: grey.example
    latency: 50ms
    greylist: { delay: 500ms, reply: "${GREYLIST_REPLY}" }
  - domain: picky.example
    latency: 50ms
    unknownRecipients: { share: ${UNKNOWN_SHARE}, reply: "${UNKNOWN_REPLY}" }
  - domain: open.example
    latency: 50ms
policies:
  short-backoff: ${JSON.stringify(POLICY)}
`

/** One row of the `attempts` table, as both runs read it. */
interface Attempt {
  readonly queueId: string
  readonly recipient: string
  readonly attempt: number
  readonly outcome: string
  readonly dsn: string
  readonly reply: string
}

/** Per recipient (traffic recipients are unique), the ordered outcomes; reports listed apart. */
interface Outcomes {
  readonly recipients: Record<string, Array<string>>
  /** Each non-delivery report's outcomes (to the sender), sorted: reports have no traffic identity. */
  readonly reports: Array<string>
}

/**
 * What an attempt row says, without time, relay or destination name: "1 deferred 4.7.1 <reply>". The
 * reply keeps the remote's words and the SMTP stage ("... (in reply to RCPT TO command)") but drops the
 * relay, "host <name>[<address>]:<port> said: " (a refusal) or "<name>[<address>]:<port> said: " (a
 * delivery), which names the modelled or the real server.
 */
const RELAY = /^(?:host )?\S+\[[^\]\s]*\]:\d+ said: /
const step = (a: Attempt): string => `${a.attempt} ${a.outcome} ${a.dsn} ${a.reply.replace(RELAY, "")}`

const outcomesOf = (rows: ReadonlyArray<Attempt>, isTraffic: (queueId: string) => boolean): Outcomes => {
  const recipients: Record<string, Array<string>> = {}
  const reports = new Map<string, Array<string>>()
  for (const a of rows) {
    if (isTraffic(a.queueId)) (recipients[a.recipient] ??= []).push(step(a))
    else {
      const seq = reports.get(a.queueId) ?? []
      seq.push(`${a.recipient}: ${step(a)}`)
      reports.set(a.queueId, seq)
    }
  }
  const sorted: Record<string, Array<string>> = {}
  for (const k of Object.keys(recipients).sort()) sorted[k] = recipients[k]!
  return { recipients: sorted, reports: [...reports.values()].map((s) => s.join(" | ")).sort() }
}

const ATTEMPTS_SQL = "SELECT queue_id AS queueId, recipient, attempt, outcome, dsn, reply FROM attempts ORDER BY id"

/** `{rcpt}` and `{domain}` as the models fill them (no template here uses `{host}`). */
const fill = (template: string, rcpt: string): string =>
  template.replaceAll("{rcpt}", rcpt).replaceAll("{domain}", rcpt.slice(rcpt.lastIndexOf("@") + 1))

/** "451 4.7.1 text" → the receiver's reply spec (it sends `code message` verbatim). */
const replySpec = (template: string, rcpt: string): ReplySpec => {
  const text = fill(template, rcpt)
  return { code: Number(text.slice(0, 3)), message: text.slice(4) }
}

const isUnknown = (rcpt: string): boolean => unitHash(SEED, `unknown/${rcpt}`) < UNKNOWN_SHARE
const domainOf = (a: string): string => a.slice(a.lastIndexOf("@") + 1)

const scenario = parseScenario(SCENARIO_YAML, "live-vs-sim")

/** Both sequences side by side, for a failure message. */
const sideBySide = (sim: Outcomes, live: Outcomes): string => {
  const lines: Array<string> = ["per recipient (sim | live):"]
  for (const r of new Set([...Object.keys(sim.recipients), ...Object.keys(live.recipients)])) {
    const s = sim.recipients[r] ?? []
    const l = live.recipients[r] ?? []
    lines.push(`${s.join(" ; ") === l.join(" ; ") ? " " : "≠"} ${r}`)
    lines.push(`    sim:  ${s.join(" ; ") || "(none)"}`)
    lines.push(`    live: ${l.join(" ; ") || "(none)"}`)
  }
  lines.push("non-delivery reports:", `    sim:  ${sim.reports.join(" ; ") || "(none)"}`, `    live: ${live.reports.join(" ; ") || "(none)"}`)
  return lines.join("\n")
}

describe("the same scenario, simulated and live: the same outcomes per recipient", () => {
  let traffic: ReadonlyArray<SimMessage> = []
  let sim: Outcomes
  let live: Outcomes
  let simErrors: ReadonlyArray<string> = []
  const receivers: Array<Receiver> = []
  let postern: TestPostern | undefined

  beforeAll(async () => {
    // --- simulated: the simulator's entry point, the scenario's own traffic and seed
    const { traffic: t, results } = await runAll({ scenario, seed: SEED })
    traffic = t
    const r = results[0]!
    simErrors = r.run.errors
    const simRows = r.run.db.prepare(ATTEMPTS_SQL).all() as Array<Attempt>
    r.run.db.close()
    sim = outcomesOf(simRows, (q) => r.run.queueIds.has(q))

    // --- live: one scripted receiver per destination, the same messages injected over SMTP
    const grey = await startReceiver({
      rcpt: (address, attempt) => (attempt === 1 ? replySpec(GREYLIST_REPLY, address) : undefined),
      data: () => replySpec(ACCEPT_REPLY, ""),
    })
    receivers.push(grey)
    const picky = await startReceiver({
      rcpt: (address) => (isUnknown(address) ? replySpec(UNKNOWN_REPLY, address) : undefined),
      data: () => replySpec(ACCEPT_REPLY, ""),
    })
    receivers.push(picky)
    const open = await startReceiver({ data: () => replySpec(ACCEPT_REPLY, "") })
    receivers.push(open)
    const home = await startReceiver({ data: () => replySpec(ACCEPT_REPLY, "") })
    receivers.push(home)
    const via = (rc: Receiver) => `smtp:[127.0.0.1]:${rc.port}`
    postern = await startPostern({
      ...POLICY,
      transports: {
        "grey.example": via(grey),
        "picky.example": via(picky),
        "open.example": via(open),
        [domainOf(SENDER)]: via(home),
      },
    })
    const p = postern
    const liveQueueIds = new Set<string>()
    for (const m of traffic) {
      const res = await inject(p.port, {
        from: SENDER,
        to: m.recipients,
        body: makeMessage({ from: SENDER, to: m.recipients[0]!, subject: `message ${m.index}` }),
      })
      if (!res.ok || res.queueId === undefined || res.rejected.length > 0) throw new Error(`could not inject message ${m.index}: ${res.response}`)
      liveQueueIds.add(res.queueId)
    }
    // A bounce's report is queued in the transaction that completes the bounced recipient, so an empty
    // queue means every recipient and every report is final.
    const queued = () => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n
    await waitFor("the live queue to empty", () => queued() === 0, 15_000)
    live = outcomesOf(p.queue.db.prepare(ATTEMPTS_SQL).all() as Array<Attempt>, (q) => liveQueueIds.has(q))
  }, 25_000)

  afterAll(async () => {
    await postern?.close()
    await Promise.all(receivers.map((r) => r.close()))
  })

  test("the scenario exercises every behaviour (else the comparison would prove little)", () => {
    const all = traffic.flatMap((m) => m.recipients)
    expect(new Set(all).size, "traffic recipients are unique").toBe(all.length)
    const at = (d: string) => all.filter((a) => domainOf(a) === d)
    expect(at("grey.example").length).toBeGreaterThan(0)
    expect(at("open.example").length).toBeGreaterThan(0)
    expect(at("picky.example").filter(isUnknown).length, "some picky.example addresses are unknown").toBeGreaterThan(0)
    expect(at("picky.example").filter((a) => !isUnknown(a)).length, "some picky.example addresses exist").toBeGreaterThan(0)
    expect(traffic.some((m) => new Set(m.recipients.map(domainOf)).size > 1), "a message spans destinations").toBe(true)
    const bounces = (m: SimMessage) => m.recipients.filter((a) => domainOf(a) === "picky.example" && isUnknown(a)).length
    expect(traffic.some((m) => bounces(m) >= 2), "a message with two unknown users (one report for both)").toBe(true)
    expect(
      traffic.some((m) => bounces(m) > 0 && m.recipients.some((a) => domainOf(a) === "grey.example")),
      "a message with a bounce and a greylisted recipient (its report goes out while it stays queued)",
    ).toBe(true)
    expect(simErrors).toEqual([])
    // The simulated run itself does what the scenario says: greylisted once, bounced, or sent at once.
    for (const a of all) {
      const seq = (sim.recipients[a] ?? []).map((s) => s.split(" ").slice(0, 3).join(" "))
      const want =
        domainOf(a) === "grey.example" ? ["1 deferred 4.7.1", "2 sent 2.0.0"]
        : domainOf(a) === "picky.example" && isUnknown(a) ? ["1 bounced 5.1.1"]
        : ["1 sent 2.0.0"]
      expect(seq, a).toEqual(want)
    }
    expect(sim.reports, "one report per message with a bounced recipient").toHaveLength(traffic.filter((m) => bounces(m) > 0).length)
  })

  test("per recipient, the live run's outcomes are the simulator's", () => {
    expect(live, sideBySide(sim, live)).toEqual(sim)
  })
})
