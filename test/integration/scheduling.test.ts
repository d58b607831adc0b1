// The queue manager over real sockets: recipients packed per transaction, connections reused, routes
// taken from the config current when mail enters the active window, and queue lifetime expiry.
import { describe, expect, test } from "vitest"
import { inject, makeMessage } from "../support/inject.js"
import { startPostern, tempDir, waitFor, type TestPostern } from "../support/postern.js"
import { withCleanup } from "../support/cleanup.js"

const { receiverWith, posternWith } = withCleanup()
const queued = (p: TestPostern) => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n

describe("scheduling", () => {
  test("recipients of one message to one destination share a transaction, up to the recipient limit", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` }, defaultDestinationRecipientLimit: 2 })
    const to = ["a@d.test", "b@d.test", "c@d.test"]
    expect((await inject(postern.port, { from: "s@s.test", to, body: makeMessage({ from: "s@s.test", to: "a@d.test" }) })).ok).toBe(true)
    await receiver.waitForMessages(2)
    expect(receiver.messages.map((m) => m.to.length).sort()).toEqual([1, 2])
    expect(receiver.messages.flatMap((m) => m.to).sort()).toEqual(to)
  })

  test("a connection to the nexthop is reused for the next message (RSET between)", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` } })
    for (let i = 0; i < 5; i++) {
      expect((await inject(postern.port, { from: "s@s.test", to: [`r${i}@d.test`], body: makeMessage({ from: "s@s.test", to: `r${i}@d.test` }) })).ok).toBe(true)
      await receiver.waitForMessages(i + 1)
    }
    expect(receiver.connections).toBe(1)
  })

  test("queued mail follows a config change: routes are resolved when mail enters the active window", async () => {
    const dataDir = tempDir()
    const dead = await receiverWith({ rcpt: () => ({ code: 451, message: "4.3.2 not now" }) })
    const first = await startPostern({ transports: { "*": `smtp:[127.0.0.1]:${dead.port}` }, minimalBackoffTime: "1s", maximalBackoffTime: "1s" }, { dataDir })
    expect((await inject(first.port, { from: "s@s.test", to: ["x@d.test"], body: makeMessage({ from: "s@s.test", to: "x@d.test" }) })).ok).toBe(true)
    await waitFor("the first attempt", () => dead.rcptAttempts("x@d.test") >= 1)
    await first.close()
    const good = await receiverWith()
    await posternWith({ transports: { "*": `smtp:[127.0.0.1]:${good.port}` }, minimalBackoffTime: "1s", maximalBackoffTime: "1s" }, { dataDir })
    await good.waitForMessages(1, 10_000)
    expect(good.messages[0]!.to).toEqual(["x@d.test"])
  })

  test("past maximalQueueLifetime a deferred recipient bounces as expired, with its last reason", async () => {
    const failing = await receiverWith({ rcpt: () => ({ code: 451, message: "4.4.7 still busy" }) })
    const senders = await receiverWith()
    const postern = await posternWith({
      transports: { "d.test": `smtp:[127.0.0.1]:${failing.port}`, "s.test": `smtp:[127.0.0.1]:${senders.port}` },
      minimalBackoffTime: "1s",
      maximalBackoffTime: "1s",
      maximalQueueLifetime: "2s",
    })
    expect((await inject(postern.port, { from: "s@s.test", to: ["x@d.test"], body: makeMessage({ from: "s@s.test", to: "x@d.test", subject: "too late" }) })).ok).toBe(true)
    await senders.waitForMessages(1, 10_000)
    const report = senders.messages[0]!
    expect(report.from).toBe("")
    const text = report.body.toString()
    expect(text).toContain("Final-Recipient: rfc822; x@d.test")
    expect(text).toContain("Action: failed")
    expect(text).toContain("Status: 4.4.7")
    expect(text).toContain("Subject: too late")
    expect(failing.rcptAttempts("x@d.test")).toBeGreaterThanOrEqual(2)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    const outcomes = postern.queue.db.prepare("SELECT outcome FROM attempts WHERE recipient = 'x@d.test' ORDER BY id").all() as Array<{ outcome: string }>
    expect(outcomes.at(-1)!.outcome).toBe("expired")
  })

  test("a discard: transport accepts and drops; an error: transport bounces with its text", async () => {
    const senders = await receiverWith()
    const postern = await posternWith({
      transports: { "gone.test": "error:5.1.1 this domain no longer receives mail", "bin.test": "discard:", "s.test": `smtp:[127.0.0.1]:${senders.port}` },
    })
    expect((await inject(postern.port, { from: "s@s.test", to: ["a@bin.test", "b@gone.test"], body: makeMessage({ from: "s@s.test", to: "a@bin.test" }) })).ok).toBe(true)
    await senders.waitForMessages(1)
    expect(senders.messages[0]!.body.toString()).toContain("this domain no longer receives mail")
    await waitFor("the queue to empty", () => queued(postern) === 0)
    const log = postern.queue.db.prepare("SELECT recipient, outcome FROM attempts ORDER BY recipient").all()
    expect(log).toEqual([
      { recipient: "a@bin.test", outcome: "sent" },
      { recipient: "b@gone.test", outcome: "bounced" },
      { recipient: "s@s.test", outcome: "sent" },
    ])
  })
})

describe("a damaged message", () => {
  test("a message whose stored body is damaged goes to the corrupt queue; the rest of the queue runs on", async () => {
    const { openQueueForWriting } = await import("../../src/store/open.js")
    const { commitMessage, BODY_CHUNK_BYTES } = await import("../../src/store/queue-store.js")
    const { queueList } = await import("../../src/cli/queue-list.js")
    const dataDir = tempDir()
    const q = openQueueForWriting(dataDir)
    const big = Buffer.alloc(BODY_CHUNK_BYTES * 2 + 10, 0x61)
    const chunks = [big.subarray(0, BODY_CHUNK_BYTES), big.subarray(BODY_CHUNK_BYTES, 2 * BODY_CHUNK_BYTES), big.subarray(2 * BODY_CHUNK_BYTES)]
    const damaged = commitMessage(
      q.db,
      { queueId: "DAMAGED1", arrivalTime: Date.now(), sender: "s@s.test", mailParams: {}, client: { address: "127.0.0.1", helo: "x", hostname: "" }, recipients: [{ address: "x@d.test", params: {} }], size: big.length },
      chunks,
      0,
      null,
      false,
      0,
    )
    q.db.prepare("DELETE FROM bodies WHERE message_id = ? AND seq = 1").run(damaged.messageId)
    q.close()
    const receiver = await receiverWith()
    const postern = await posternWith({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` } }, { dataDir })
    expect((await inject(postern.port, { from: "s@s.test", to: ["ok@d.test"], body: makeMessage({ from: "s@s.test", to: "ok@d.test" }) })).ok).toBe(true)
    await receiver.waitForMessages(1)
    await waitFor("the damaged message set aside", () => (postern.queue.db.prepare("SELECT state FROM messages WHERE queue_id = 'DAMAGED1'").get() as { state: string }).state === "corrupt")
    await waitFor("the good message to leave the queue", () => (postern.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 1)
    let out = ""
    queueList(dataDir, true, { write: (s: string) => ((out += s), true) } as unknown as NodeJS.WritableStream)
    const listed = out.trim().split("\n").map((l) => JSON.parse(l) as { queue_name: string; queue_id: string; recipients: Array<{ delay_reason?: string }> })
    expect(listed).toHaveLength(1)
    expect(listed[0]).toMatchObject({ queue_name: "corrupt", queue_id: "DAMAGED1" })
    expect(listed[0]!.recipients[0]!.delay_reason).toMatch(/damaged: 2\/3 chunks/)
    expect(receiver.messages.map((m) => m.to[0])).toEqual(["ok@d.test"])
  })
})

describe("mail that comes due while its destination is dead", () => {
  test("is deferred as the scan reads it; a damaged one goes to the corrupt queue, and mail due after it still runs", async () => {
    const { openQueueForWriting } = await import("../../src/store/open.js")
    const { commitMessage } = await import("../../src/store/queue-store.js")
    const dataDir = tempDir()
    const q = openQueueForWriting(dataDir)
    const client = { address: "127.0.0.1", helo: "x", hostname: "" }
    const now = Date.now()
    const stored = (queueId: string, to: string, dueInMs: number) => {
      const body = Buffer.from(makeMessage({ from: "s@s.test", to }))
      const m = commitMessage(q.db, { queueId, arrivalTime: now, sender: "s@s.test", mailParams: {}, client, recipients: [{ address: to, params: {} }], size: body.length }, [body], 0, null, false, 0)
      q.db.prepare("UPDATE recipients SET next_attempt_at = ? WHERE message_id = ?").run(now + dueInMs, m.messageId)
      return m.messageId
    }
    // Due once the dead destination below has been declared dead: read by the scan, not admitted fresh.
    stored("DEFERME1", "a@dead.test", 2_500)
    const damaged = stored("DAMAGED2", "b@dead.test", 2_500)
    q.db.prepare("UPDATE messages SET size = size + 1 WHERE id = ?").run(damaged) // its body no longer adds up
    stored("LATER001", "c@ok.test", 3_500) // due after both: the timer must be armed again for it
    q.close()
    const receiver = await receiverWith()
    const postern = await posternWith(
      // Nothing listens on port 1: connection refused is a site failure, a whole cohort with a window of
      // one, and the destination is dead after its first delivery.
      {
        transports: { "dead.test": "smtp:[127.0.0.1]:1", "ok.test": `smtp:[127.0.0.1]:${receiver.port}` },
        initialDestinationConcurrency: 1,
        minimalBackoffTime: "60s",
        maximalBackoffTime: "60s",
      },
      { dataDir },
    )
    expect((await inject(postern.port, { from: "s@s.test", to: ["z@dead.test"], body: makeMessage({ from: "s@s.test", to: "z@dead.test" }) })).ok).toBe(true)
    const attempts = (queueId: string) =>
      postern.queue.db.prepare("SELECT outcome, reply FROM attempts WHERE queue_id = ? ORDER BY id").all(queueId) as Array<{ outcome: string; reply: string }>
    await waitFor("the stored message deferred without a connection", () => attempts("DEFERME1").length === 1)
    expect(attempts("DEFERME1")[0]).toMatchObject({ outcome: "deferred", reply: expect.stringMatching(/^delivery temporarily suspended: connect to /) })
    const rcpt = postern.queue.db.prepare("SELECT state, attempts, next_attempt_at AS due FROM recipients WHERE address = 'a@dead.test'").get() as { state: string; attempts: number; due: number }
    expect(rcpt).toMatchObject({ state: "pending", attempts: 1 })
    expect(rcpt.due).toBeGreaterThan(Date.now() + 30_000)
    await waitFor("the damaged message set aside", () => (postern.queue.db.prepare("SELECT state FROM messages WHERE queue_id = 'DAMAGED2'").get() as { state: string }).state === "corrupt")
    expect(attempts("DAMAGED2")).toEqual([])
    await receiver.waitForMessages(1, 10_000)
    expect(receiver.messages[0]!.to).toEqual(["c@ok.test"])
  })
})

describe("destinationRateDelay", () => {
  test("at most one delivery per delay to the destination (Postfix's rate delay), concurrency forced to 1", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith({
      services: { slow: { type: "smtp", destinationRateDelay: "400ms", destinationConcurrencyFailedCohortLimit: 10 } },
      transports: { "*": `slow:[127.0.0.1]:${receiver.port}` },
    })
    const results = await Promise.all(
      Array.from({ length: 4 }, (_, i) => inject(postern.port, { from: "s@s.test", to: [`r${i}@d.test`], body: makeMessage({ from: "s@s.test", to: `r${i}@d.test` }) })),
    )
    expect(results.every((r) => r.ok)).toBe(true)
    await receiver.waitForMessages(4, 10_000)
    const times = receiver.messages.map((m) => m.at).sort((a, b) => a - b)
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(380)
    const state = postern.system.qmgr.destinationStates().find((d) => d.key === `slow:[127.0.0.1]:${receiver.port}`)
    expect(state === undefined || state.state === "rate-delayed" || state.state === "active").toBe(true)
  })
})

describe("smtpFallbackRelay", () => {
  test("when the destination's own server cannot take the mail, the fallback relay gets it on the same attempt", async () => {
    const fallback = await receiverWith()
    const postern = await posternWith({
      transports: { "*": "smtp:[127.0.0.1]:1" }, // nothing listens there
      smtpFallbackRelay: [`[127.0.0.1]:${fallback.port}`],
    })
    expect((await inject(postern.port, { from: "s@s.test", to: ["x@d.test"], body: makeMessage({ from: "s@s.test", to: "x@d.test" }) })).ok).toBe(true)
    await fallback.waitForMessages(1)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    const log = postern.queue.db.prepare("SELECT outcome, relay FROM attempts").all() as Array<{ outcome: string; relay: string }>
    expect(log).toEqual([{ outcome: "sent", relay: `127.0.0.1[127.0.0.1]:${fallback.port}` }])
  })
})

describe("mail that would loop back to ourselves", () => {
  test("a server greeting with our own hostname gets nothing: 5.4.6", async () => {
    const receiver = await receiverWith() // greets as receiver.postern.test
    const postern = await posternWith({ hostname: "receiver.postern.test", transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` } })
    expect((await inject(postern.port, { from: "s@s.test", to: ["x@d.test"], body: makeMessage({ from: "s@s.test", to: "x@d.test" }) })).ok).toBe(true)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    expect(receiver.messages).toHaveLength(0)
    const first = postern.queue.db.prepare("SELECT outcome, dsn, reply FROM attempts WHERE recipient = 'x@d.test'").get() as { outcome: string; dsn: string; reply: string }
    expect(first).toMatchObject({ outcome: "bounced", dsn: "5.4.6" })
    expect(first.reply).toMatch(/loops back to myself/)
  })

  test("an MX host that is one of our own listeners is not used; with no other, 5.4.6", async () => {
    const { freePort } = await import("../support/child.js")
    const port = await freePort()
    const postern = await posternWith(
      { listen: [{ address: `127.0.0.1:${port}`, greetWait: "0s" }], transports: { "loop.test": `smtp:loop.test:${port}` } },
      { dns: { mx: { "loop.test": [{ exchange: "mx.loop.test", priority: 10 }] }, addresses: { "mx.loop.test": ["127.0.0.1"] } } },
    )
    expect((await inject(postern.port, { from: "", to: ["x@loop.test"], body: makeMessage({ from: "MAILER-DAEMON@s.test", to: "x@loop.test" }) })).ok).toBe(true)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    const row = postern.queue.db.prepare("SELECT outcome, dsn, reply FROM attempts").get() as { outcome: string; dsn: string; reply: string }
    expect(row).toMatchObject({ outcome: "bounced", dsn: "5.4.6", reply: "mail for loop.test loops back to myself" })
  })
})

describe("LMTP", () => {
  test("lmtp:[host]:port delivers with a reply per recipient after DATA (smtp-server in LMTP mode)", async () => {
    const lmtp = await receiverWith({
      lmtp: true,
      data: (msg) =>
        msg.to[0] === "later@box.test"
          ? { code: 452, message: "4.2.2 mailbox full, try later" }
          : msg.to[0] === "gone@box.test"
            ? { code: 550, message: "5.1.1 no such mailbox" }
            : undefined,
    })
    const postern = await posternWith({ transports: { "box.test": `lmtp:[127.0.0.1]:${lmtp.port}` }, minimalBackoffTime: "10m", maximalBackoffTime: "10m" })
    const to = ["ok@box.test", "later@box.test", "gone@box.test"]
    expect((await inject(postern.port, { from: "", to, body: makeMessage({ from: "MAILER-DAEMON@s.test", to: "ok@box.test" }) })).ok).toBe(true)
    await waitFor("three outcomes", () => (postern.queue.db.prepare("SELECT count(*) AS n FROM attempts").get() as { n: number }).n === 3)
    const rows = postern.queue.db.prepare("SELECT recipient, outcome, dsn FROM attempts ORDER BY recipient").all()
    expect(rows).toEqual([
      { recipient: "gone@box.test", outcome: "bounced", dsn: "5.1.1" },
      { recipient: "later@box.test", outcome: "deferred", dsn: "4.2.2" },
      { recipient: "ok@box.test", outcome: "sent", dsn: "2.0.0" },
    ])
    expect(lmtp.messages.flatMap((m) => m.to)).toEqual(["ok@box.test"])
  })
})
