// Every destination fault survived (issue 5): a real Postern relays to a misbehaving SMTP server on
// 127.0.0.1 (test/support/bad-server.ts). Whatever the server does (refuse, hang, reset, drop, 421,
// trickle), the message is deferred with a temporary status that says what happened, never bounced,
// never lost (`postern queue list` still shows it), and once the server behaves it is delivered exactly
// once on a later retry. Postern never escalates to the root. A hanging destination never slows a
// healthy one. The last block checks which configured timeout actually bounds each phase.
//
// Postfix's rules (smtp_trouble.c; reference §7): a connection that cannot be made, a bad greeting, a
// timeout or a dropped connection defers every remaining recipient; a 421 is a lost session: defer.
import { Writable } from "node:stream"
import { describe, expect, test, type TestContext } from "vitest"
import { queueList } from "../../src/cli/queue-list.js"
import type { DnsTable } from "../../src/transport/dns.js"
import { startBadServer, type BadServer, type FaultMode, type FaultOptions } from "../support/bad-server.js"
import { inject, makeMessage } from "../support/inject.js"
import { startPostern, waitFor, type TestPostern } from "../support/postern.js"
import { startReceiver } from "../support/receiver.js"

/** Small timeouts so every fault resolves in seconds. */
const FAST = {
  smtpConnectTimeout: "2s",
  smtpHeloTimeout: "2s",
  smtpDataDoneTimeout: "3s",
  minimalBackoffTime: "1s",
  maximalBackoffTime: "1s",
} as const

interface AttemptRow {
  recipient: string
  outcome: string
  dsn: string
  reply: string
  attempt: number
  relay: string | null
  duration_ms: number
}

const attemptsOf = (p: TestPostern, recipient?: string): Array<AttemptRow> =>
  (p.queue.db.prepare("SELECT recipient, outcome, dsn, reply, attempt, relay, duration_ms FROM attempts ORDER BY id").all() as Array<AttemptRow>).filter(
    (a) => recipient === undefined || a.recipient === recipient,
  )

const messagesQueued = (p: TestPostern): number => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n

interface ListedMessage {
  queue_name: string
  queue_id: string
  sender: string
  recipients: Array<{ address: string; delay_reason?: string; next_attempt_time: number; attempts: number }>
}

/** `postern queue list --json`, as the command runs it: a second reader on the WAL database. */
const queueListJson = (p: TestPostern): Array<ListedMessage> => {
  let out = ""
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out += chunk.toString()
      done()
    },
  })
  queueList(p.dataDir, true, sink)
  return out
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as ListedMessage)
}

/** Starts Postern with an exit hook that records and throws if the supervision tree escalates to the root. */
const startWatched = async (ctx: TestContext, overrides: Record<string, unknown>) => {
  const escalations: Array<string> = []
  const postern = await startPostern(overrides, {
    exit: (code, reason) => {
      escalations.push(`exit ${code}: ${String(reason)}`)
      throw new Error(`postern escalated to the root (exit ${code}): ${String(reason)}`)
    },
  })
  ctx.onTestFinished(() => postern.close())
  return { postern, escalations }
}

/** As startWatched, with a DNS table: several MX records for one nexthop (all 127.0.0.1). */
const startWatchedWithDns = async (ctx: TestContext, overrides: Record<string, unknown>, dns: DnsTable) => {
  const escalations: Array<string> = []
  const postern = await startPostern(overrides, {
    dns,
    exit: (code, reason) => {
      escalations.push(`exit ${code}: ${String(reason)}`)
      throw new Error(`postern escalated to the root (exit ${code}): ${String(reason)}`)
    },
  })
  ctx.onTestFinished(() => postern.close())
  return { postern, escalations }
}

const badServer = async (ctx: TestContext, mode: FaultMode, options?: FaultOptions): Promise<BadServer> => {
  const s = await startBadServer(mode, options)
  ctx.onTestFinished(() => s.close())
  return s
}

interface FaultCase {
  readonly mode: FaultMode
  /** Test name when one mode has several cases. */
  readonly label?: string
  readonly options?: FaultOptions
  /** Recipients of the message, all to the bad destination (default 1). */
  readonly recipients?: number
  readonly dsn: RegExp
  readonly reply: RegExp
  /** Message size (dropMidData needs a body larger than the drop point). */
  readonly bytes?: number
  /** Bounds on how long the failed attempt took (ms): which timeout ended it. */
  readonly took?: readonly [number, number]
}

// Replies are checked for what happened, not for Postern's exact wording (see "a deferral names the
// phase that failed" for that).
const CASES: ReadonlyArray<FaultCase> = [
  { mode: "refuse", dsn: /^4\.4\.1$/, reply: /connect to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: Connection refused/, took: [0, 1000] },
  // the greeting wait: smtpHeloTimeout (2 s), also capped by what is left of smtpConnectTimeout (2 s)
  { mode: "hangAfterConnect", dsn: /^4\.4\.[12]$/, reply: /timed out/i, took: [1800, 2900] },
  { mode: "closeAfterConnect", dsn: /^4\.4\.[12]$/, reply: /lost connection|closed|reset/i, took: [0, 1000] },
  { mode: "rst", dsn: /^4\.4\.[12]$/, reply: /lost connection|reset/i, took: [0, 1000] },
  { mode: "greet421", dsn: /^4\.3\.2$/, reply: /refused to talk to me: 421 4\.3\.2 Service not available/, took: [0, 1000] },
  // smtp_skip_5xx_greeting = yes: a 5xx greeting defers too
  { mode: "greet554", dsn: /^4\.3\.2$/, reply: /refused to talk to me: 554 5\.3\.2 No SMTP service here/, took: [0, 1000] },
  // the wait for the EHLO reply: see "timeouts actually applied" below (it is smtpDataDoneTimeout, 3 s)
  { mode: "hangAfterGreeting", dsn: /^4\.4\.[12]$/, reply: /timed out/i, took: [1800, 3900] },
  { mode: "421MidSession", dsn: /^4\.3\.2$/, reply: /421 4\.3\.2 .*Service not available/, took: [0, 1000] },
  {
    mode: "421MidSession",
    label: "421MidSession, PIPELINING, 3 recipients",
    options: { pipelining: true },
    recipients: 3,
    dsn: /^4\.[34]\.2$/,
    reply: /421 4\.3\.2 .*Service not available|lost connection/,
    took: [0, 1000],
  },
  { mode: "dropMidData", options: { dropAfterBytes: 1000 }, bytes: 200_000, dsn: /^4\.4\.2$/, reply: /lost connection/i, took: [0, 1000] },
  {
    mode: "dropMidData",
    label: "dropMidData, 3 recipients",
    options: { dropAfterBytes: 1000 },
    recipients: 3,
    bytes: 200_000,
    dsn: /^4\.4\.2$/,
    reply: /lost connection/i,
    took: [0, 1000],
  },
  // the whole message was read, the final "." is never answered: smtpDataDoneTimeout (3 s)
  { mode: "hangAfterDot", dsn: /^4\.4\.2$/, reply: /timed out/i, took: [2800, 3900] },
  // one byte a second: the 35-byte greeting outlasts the greeting timeout (2 s)
  { mode: "slow", dsn: /^4\.4\.[12]$/, reply: /timed out/i, took: [1800, 2900] },
]

describe.concurrent("every destination fault is survived: deferred, kept in the queue, delivered once later", () => {
  for (const c of CASES) {
    test(c.label ?? c.mode, async (ctx) => {
      const { expect } = ctx
      const bad = await badServer(ctx, c.mode, c.options)
      const { postern, escalations } = await startWatched(ctx, { ...FAST, transports: { "*": `smtp:[127.0.0.1]:${bad.port}` } })
      const tag = (c.label ?? c.mode).toLowerCase().replace(/[^a-z0-9]+/g, "-")
      const rcpts = Array.from({ length: c.recipients ?? 1 }, (_, i) => `r${i}-${tag}@dest.test`)
      const subject = `fault ${c.label ?? c.mode}`
      const r = await inject(postern.port, {
        from: "alice@source.test",
        to: rcpts,
        body: makeMessage({ from: "alice@source.test", to: rcpts[0]!, subject, ...(c.bytes !== undefined ? { bytes: c.bytes } : {}) }),
      })
      expect(r.ok, r.response).toBe(true)

      // 1. the attempt fails and every recipient is deferred, with a status that says what happened
      await waitFor("the first attempt", () => rcpts.every((a) => attemptsOf(postern, a).length > 0), 8_000)
      for (const a of rcpts) {
        const first = attemptsOf(postern, a)[0]!
        expect(first.outcome, first.reply).toBe("deferred")
        expect(first.dsn).toMatch(c.dsn)
        expect(first.reply).toMatch(c.reply)
        if (c.took !== undefined) {
          expect(first.duration_ms, `attempt took ${first.duration_ms} ms`).toBeGreaterThanOrEqual(c.took[0])
          expect(first.duration_ms, `attempt took ${first.duration_ms} ms`).toBeLessThanOrEqual(c.took[1])
        }
      }
      if (c.mode !== "refuse") expect(bad.connections).toBeGreaterThanOrEqual(1)
      if (c.mode === "dropMidData") expect(bad.records[0]!.dataBytes).toBeGreaterThanOrEqual(1000)
      if (c.mode === "hangAfterDot") expect(bad.records[0]!.dataBytes).toBeGreaterThan(0)

      // 2. never lost: `postern queue list` shows it deferred, each recipient with the reason
      await waitFor(
        "queue list to show the message deferred",
        () => queueListJson(postern).some((m) => m.queue_name === "deferred" && m.recipients.every((x) => x.attempts >= 1)),
        5_000,
      )
      const listed = queueListJson(postern)
      expect(listed).toHaveLength(1)
      expect(listed[0]!.sender).toBe("alice@source.test")
      expect(listed[0]!.recipients.map((x) => x.address)).toEqual(rcpts)
      for (const x of listed[0]!.recipients) expect(x.delay_reason ?? "").toMatch(c.reply)
      expect(bad.messages).toHaveLength(0)

      // 3. the server heals: the next retry delivers it, exactly once
      await bad.setMode("ok")
      await bad.waitForMessages(1, 12_000)
      await waitFor("the queue to empty", () => messagesQueued(postern) === 0, 5_000)
      await new Promise((res) => setTimeout(res, 300))
      expect(bad.messages).toHaveLength(1)
      expect([...bad.messages[0]!.to].sort()).toEqual([...rcpts].sort())
      expect(bad.messages[0]!.body.toString()).toContain(`Subject: ${subject}`)
      if (c.bytes !== undefined) expect(bad.messages[0]!.body.length).toBeGreaterThanOrEqual(c.bytes)
      for (const a of rcpts) {
        const log = attemptsOf(postern, a)
        const outcomes = log.map((x) => x.outcome)
        expect(outcomes.at(-1)).toBe("sent")
        expect(outcomes.filter((o) => o === "sent")).toHaveLength(1)
        expect(outcomes.slice(0, -1).every((o) => o === "deferred"), outcomes.join(",")).toBe(true)
        expect(log.map((x) => x.attempt)).toEqual(log.map((_, i) => i + 1))
      }
      expect(queueListJson(postern)).toEqual([])
      expect(escalations).toEqual([])
    })
  }
})

describe("a hanging destination never slows a healthy one", () => {
  test("20 messages to a healthy destination are delivered in < 3 s while another destination hangs after connect (timeout 5 s)", async (ctx) => {
    const hang = await badServer(ctx, "hangAfterConnect")
    const healthy = await startReceiver()
    ctx.onTestFinished(() => healthy.close())
    const { postern, escalations } = await startWatched(ctx, {
      smtpConnectTimeout: "5s",
      smtpHeloTimeout: "5s",
      smtpDataDoneTimeout: "5s",
      minimalBackoffTime: "1s",
      maximalBackoffTime: "1s",
      transports: { "hang.test": `smtp:[127.0.0.1]:${hang.port}`, "*": `smtp:[127.0.0.1]:${healthy.port}` },
    })
    const stuck = await inject(postern.port, {
      from: "s@source.test",
      to: ["stuck@hang.test"],
      body: makeMessage({ from: "s@source.test", to: "stuck@hang.test" }),
    })
    expect(stuck.ok).toBe(true)
    await hang.waitForConnections(1, 3_000)
    const hungSince = hang.records[0]!.openedAt

    const t0 = performance.now()
    const sent = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        inject(postern.port, { from: "s@source.test", to: [`r${i}@ok.test`], body: makeMessage({ from: "s@source.test", to: `r${i}@ok.test` }) }),
      ),
    )
    // one message for both: its healthy recipient does not wait for the hanging one
    const mixed = await inject(postern.port, {
      from: "s@source.test",
      to: ["stuck2@hang.test", "fine@ok.test"],
      body: makeMessage({ from: "s@source.test", to: "fine@ok.test" }),
    })
    expect(sent.every((s) => s.ok)).toBe(true)
    expect(mixed.ok).toBe(true)
    await healthy.waitForMessages(21, 3_000)
    const elapsed = performance.now() - t0

    expect(elapsed, `healthy deliveries took ${Math.round(elapsed)} ms`).toBeLessThan(3_000)
    expect(new Set(healthy.messages.flatMap((m) => m.to)).size).toBe(21)
    // the hung attempt is still pending: its connection is open, it has no outcome yet
    expect(Date.now() - hungSince).toBeLessThan(5_000)
    expect(hang.openConnections).toBeGreaterThanOrEqual(1)
    expect(attemptsOf(postern, "stuck@hang.test")).toEqual([])
    expect(attemptsOf(postern).filter((a) => a.recipient.endsWith("@ok.test")).every((a) => a.outcome === "sent")).toBe(true)
    expect(escalations).toEqual([])
    // let the hung delivery fail now rather than at shutdown
    await hang.close()
    await waitFor("the hung attempts to be deferred", () => attemptsOf(postern).filter((a) => a.recipient.endsWith("@hang.test")).length >= 1, 5_000)
    expect(attemptsOf(postern).filter((a) => a.recipient.endsWith("@hang.test")).every((a) => a.outcome === "deferred")).toBe(true)
  })
})

// Which configured timeout bounds each phase. openSession (src/actors/delivery.ts:164-166) maps
// smtpConnectTimeout → nodemailer connectionTimeout, smtpHeloTimeout → greetingTimeout and
// smtpDataDoneTimeout → socketTimeout (an idle timeout on the socket for the whole session).
describe.concurrent("timeouts actually applied", () => {
  test("a server that never answers EHLO is given up after smtpHeloTimeout (Postfix: smtp_helo_timeout)", async (ctx) => {
    const bad = await badServer(ctx, "hangAfterGreeting")
    const { postern, escalations } = await startWatched(ctx, {
      smtpConnectTimeout: "1s",
      smtpHeloTimeout: "1s",
      smtpDataDoneTimeout: "5s",
      minimalBackoffTime: "1s",
      maximalBackoffTime: "1s",
      transports: { "*": `smtp:[127.0.0.1]:${bad.port}` },
    })
    expect((await inject(postern.port, { from: "a@s.test", to: ["b@d.test"], body: makeMessage({ from: "a@s.test", to: "b@d.test" }) })).ok).toBe(true)
    await waitFor("the first attempt", () => attemptsOf(postern).length > 0, 8_000)
    const first = attemptsOf(postern)[0]!
    expect(first.outcome).toBe("deferred")
    expect(bad.records[0]!.commands.map((c) => c.split(" ")[0])).toEqual(["EHLO"])
    // smtpHeloTimeout is 1 s; smtpDataDoneTimeout (5 s) must not be what ends the EHLO wait
    expect(first.duration_ms, `the EHLO wait lasted ${first.duration_ms} ms`).toBeLessThan(1_800)
    expect(escalations).toEqual([])
  })

  test("a greeting later than smtpConnectTimeout but within smtpHeloTimeout is waited for (Postfix: smtp_helo_timeout)", async (ctx) => {
    const bad = await badServer(ctx, "ok", { greetDelayMs: 1_800 })
    const { postern, escalations } = await startWatched(ctx, {
      smtpConnectTimeout: "1s",
      smtpHeloTimeout: "4s",
      smtpDataDoneTimeout: "4s",
      minimalBackoffTime: "1s",
      maximalBackoffTime: "1s",
      transports: { "*": `smtp:[127.0.0.1]:${bad.port}` },
    })
    expect((await inject(postern.port, { from: "a@s.test", to: ["b@d.test"], body: makeMessage({ from: "a@s.test", to: "b@d.test" }) })).ok).toBe(true)
    await waitFor("the first attempt", () => attemptsOf(postern).length > 0, 8_000)
    const first = attemptsOf(postern)[0]!
    // the TCP connect took a millisecond; the greeting came 1.8 s later, well inside smtpHeloTimeout (4 s)
    expect(`${first.outcome} ${first.dsn} ${first.reply} (${first.duration_ms} ms)`).toMatch(/^sent /)
    expect(escalations).toEqual([])
  })

  // Every timeout after the greeting is the socket's idle timeout: a server that trickles its replies
  // keeps it from firing, and nothing bounds a whole reply. Postfix with its default
  // smtp_per_record_deadline = no behaves the same (its timeouts are per read() too), so this documents
  // the behaviour rather than a divergence.
  test("a server trickling its EHLO reply holds the delivery past every configured timeout (no per-reply deadline)", async (ctx) => {
    const bad = await badServer(ctx, "slow", { slowByteMs: 400, slowAfterGreeting: true })
    const { postern, escalations } = await startWatched(ctx, { ...FAST, transports: { "*": `smtp:[127.0.0.1]:${bad.port}` } })
    expect((await inject(postern.port, { from: "a@s.test", to: ["b@d.test"], body: makeMessage({ from: "a@s.test", to: "b@d.test" }) })).ok).toBe(true)
    await bad.waitForConnections(1, 3_000)
    // smtpConnectTimeout 2 s + smtpHeloTimeout 2 s + smtpDataDoneTimeout 3 s, and some
    await new Promise((res) => setTimeout(res, 7_500))
    expect(bad.records[0]!.commands.map((c) => c.split(" ")[0])).toEqual(["EHLO"])
    expect(bad.records[0]!.closedAt).toBeNull()
    expect(attemptsOf(postern)).toEqual([])
    expect(escalations).toEqual([])
    await bad.close()
    await waitFor("the attempt to end once the server is gone", () => attemptsOf(postern).length > 0, 3_000)
    expect(attemptsOf(postern)[0]!.outcome).toBe("deferred")
  })
})

// Postfix (smtp_trouble.c): a failure on a server that is not the last of the nexthop's list tries the
// next one in the same delivery. Two MX records (preference 10 and 20) both lead to the bad server,
// whose first connection misbehaves and whose second works: the message goes out on the first attempt.
describe.concurrent("with several MX hosts, a fault on the first sends the mail to the next", () => {
  const modes = ["hangAfterConnect", "closeAfterConnect", "rst", "greet421", "greet554", "hangAfterGreeting", "421MidSession", "dropMidData", "hangAfterDot", "slow"] as const
  for (const mode of modes) {
    test(mode, async (ctx) => {
      const { expect } = ctx
      const bad = await badServer(ctx, "ok")
      bad.plan([mode], { dropAfterBytes: 1000 })
      const { postern, escalations } = await startWatchedWithDns(
        ctx,
        { ...FAST, transports: { "*": `smtp:mx.test:${bad.port}` } },
        {
          mx: { "mx.test": [{ exchange: "mx2.mx.test", priority: 20 }, { exchange: "mx1.mx.test", priority: 10 }] },
          addresses: { "mx1.mx.test": ["127.0.0.1"], "mx2.mx.test": ["127.0.0.1"] },
        },
      )
      const rcpt = `mx-${mode.toLowerCase()}@dest.test`
      const r = await inject(postern.port, { from: "a@source.test", to: [rcpt], body: makeMessage({ from: "a@source.test", to: rcpt, bytes: 20_000 }) })
      expect(r.ok, r.response).toBe(true)
      await bad.waitForMessages(1, 8_000)
      await waitFor("the queue to empty", () => messagesQueued(postern) === 0, 5_000)
      await new Promise((res) => setTimeout(res, 200))
      expect(bad.records.map((c) => c.mode).slice(0, 2)).toEqual([mode, "ok"])
      expect(bad.messages).toHaveLength(1)
      const log = attemptsOf(postern, rcpt)
      expect(log.map((a) => `${a.outcome} ${a.relay ?? ""}`)).toEqual([`sent mx2.mx.test[127.0.0.1]:${bad.port}`])
      expect(escalations).toEqual([])
    })
  }
})

// What the deferral says, compared with Postfix and RFC 3463: X.4.1 is "no answer from host" (the
// connection could not be made), X.4.2 "bad connection" (it was made, then failed). Postfix says
// "connect to ..." only for the TCP connect; once connected it says "lost connection with host while
// receiving the initial server greeting" or "conversation with host timed out while performing the EHLO
// handshake" (4.4.2). Only the first attempt is looked at. (`rst` is left out: a reset sent right at
// accept may reach the client before its connect() completes, and then "connect to ...: Connection reset
// by peer", 4.4.1, is what Postfix says too.)
describe.concurrent("a deferral names the phase that failed", () => {
  const cases: ReadonlyArray<{ mode: FaultMode; phase: RegExp }> = [
    { mode: "hangAfterConnect", phase: /timed out while receiving the initial server greeting/ },
    { mode: "slow", phase: /timed out while receiving the initial server greeting/ },
    { mode: "closeAfterConnect", phase: /lost connection with .* while receiving the initial server greeting/ },
    { mode: "hangAfterGreeting", phase: /timed out while performing the EHLO handshake/ },
  ]
  for (const c of cases) {
    test(`${c.mode}: connected, so 4.4.2 and not "connect to"`, async (ctx) => {
      const { expect } = ctx
      const bad = await badServer(ctx, c.mode)
      const { postern, escalations } = await startWatched(ctx, { ...FAST, transports: { "*": `smtp:[127.0.0.1]:${bad.port}` } })
      expect((await inject(postern.port, { from: "a@s.test", to: ["b@d.test"], body: makeMessage({ from: "a@s.test", to: "b@d.test" }) })).ok).toBe(true)
      await waitFor("the first attempt", () => attemptsOf(postern).length > 0, 8_000)
      const first = attemptsOf(postern)[0]!
      expect(first.outcome).toBe("deferred")
      expect(`${first.dsn} ${first.reply}`).toMatch(new RegExp(`^4\\.4\\.2 .*${c.phase.source}`))
      expect(first.relay, "the server was reached: the relay is known").toBe(`127.0.0.1[127.0.0.1]:${bad.port}`)
      expect(escalations).toEqual([])
    })
  }
})
