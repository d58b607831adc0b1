// The lmtp service end to end: smtp-server in LMTP mode on TCP and on a UNIX socket, scripted to answer
// each recipient differently after DATA, and Dovecot's real LMTP server (installed by the setup when
// missing) delivering into Maildirs. Every recipient's outcome is the server's own reply.
import { rmSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { ensureDovecot, startDovecot, type Dovecot } from "../support/dovecot.js"
import { inject, makeMessage } from "../support/inject.js"
import { tempDir, waitFor, type TestPostern } from "../support/postern.js"
import type { Receiver } from "../support/receiver.js"
import { withCleanup } from "../support/cleanup.js"

const { onCleanup, receiverWith, posternWith } = withCleanup()

interface AttemptRow {
  recipient: string
  outcome: string
  dsn: string
  reply: string
  relay: string | null
}
const attempts = (p: TestPostern) => p.queue.db.prepare("SELECT recipient, outcome, dsn, reply, relay FROM attempts ORDER BY id").all() as Array<AttemptRow>
const queued = (p: TestPostern) => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n

/** One message to these recipients, from a sender whose bounces are discarded (so they are counted, not sent). */
const sendTo = async (p: TestPostern, to: ReadonlyArray<string>, subject: string): Promise<void> => {
  const r = await inject(p.port, { from: "alice@source.test", to: [...to], body: makeMessage({ from: "alice@source.test", to: to[0]!, subject }) })
  expect(r.ok).toBe(true)
}

/** ok@ is delivered, later@ is told 452 once then accepted, gone@ is refused 550: all after the final dot. */
const mixedScript = {
  lmtp: true,
  data: (msg: { to: ReadonlyArray<string> }, attempt: number) =>
    msg.to[0] === "later@box.test" && attempt === 1
      ? { code: 452, message: "4.2.2 <later@box.test> mailbox full, try later" }
      : msg.to[0] === "gone@box.test"
        ? { code: 550, message: "5.1.1 <gone@box.test> no such mailbox" }
        : undefined,
}

const expectMixedOutcomes = async (postern: TestPostern, receiver: Receiver, relay: string): Promise<void> => {
  await sendTo(postern, ["ok@box.test", "later@box.test", "gone@box.test"], "mixed")
  await waitFor("the queue to empty", () => queued(postern) === 0, 15_000)
  const rows = attempts(postern).filter((a) => a.recipient.endsWith("@box.test"))
  expect(rows).toEqual([
    { recipient: "ok@box.test", outcome: "sent", dsn: "2.0.0", reply: `${relay} said: 250 Ok: delivered to ok@box.test`, relay },
    {
      recipient: "later@box.test",
      outcome: "deferred",
      dsn: "4.2.2",
      reply: `host ${relay} said: 452 4.2.2 <later@box.test> mailbox full, try later (in reply to end of DATA command)`,
      relay,
    },
    {
      recipient: "gone@box.test",
      outcome: "bounced",
      dsn: "5.1.1",
      reply: `host ${relay} said: 550 5.1.1 <gone@box.test> no such mailbox (in reply to end of DATA command)`,
      relay,
    },
    // the retry: only later@ goes again, alone, and gets its own 250
    { recipient: "later@box.test", outcome: "sent", dsn: "2.0.0", reply: `${relay} said: 250 Ok: delivered to later@box.test`, relay },
  ])
  // one transaction carried all three the first time; the server kept only the accepted recipient
  expect(receiver.messages.map((m) => m.to)).toEqual([["ok@box.test"], ["later@box.test"]])
  // the bounce for gone@ was made (its sender's domain is discarded here)
  expect(attempts(postern).filter((a) => a.recipient === "alice@source.test").map((a) => a.outcome)).toEqual(["sent"])
}

const lmtpTo = (nexthop: string) => ({
  transports: { "box.test": `lmtp:${nexthop}`, "source.test": "discard:" },
  minimalBackoffTime: "1s",
  maximalBackoffTime: "1s",
  backoffJitter: 0,
})

describe("LMTP against smtp-server in LMTP mode", () => {
  test("lmtp:[127.0.0.1]:port: 250, 452 and 550 to three recipients of one transaction, each with the server's own reply", async () => {
    const receiver = await receiverWith(mixedScript)
    const postern = await posternWith(lmtpTo(`[127.0.0.1]:${receiver.port}`))
    await expectMixedOutcomes(postern, receiver, `127.0.0.1[127.0.0.1]:${receiver.port}`)
  })

  test("lmtp:unix:/path: the same over a UNIX-domain socket", async () => {
    const dir = tempDir("postern-lmtp-")
    onCleanup(async () => rmSync(dir, { recursive: true, force: true }))
    const socketPath = join(dir, "lmtp.sock")
    const receiver = await receiverWith({ ...mixedScript, socketPath })
    const postern = await posternWith(lmtpTo(`unix:${socketPath}`))
    await expectMixedOutcomes(postern, receiver, `postern.test[${socketPath}]`)
  })

  test("lmtp:unix:/path with nothing listening: deferred, and the reason names the socket", async () => {
    const dir = tempDir("postern-lmtp-")
    onCleanup(async () => rmSync(dir, { recursive: true, force: true }))
    const postern = await posternWith(lmtpTo(`unix:${dir}/missing.sock`))
    await sendTo(postern, ["ok@box.test"], "nobody home")
    await waitFor("an attempt", () => attempts(postern).length >= 1)
    expect(attempts(postern)[0]).toMatchObject({
      outcome: "deferred",
      dsn: "4.4.1",
      reply: `connect to postern.test[${dir}/missing.sock]: No such file or directory`,
    })
  })
})

// Dovecot needs root (to be installed and to deliver as the mail user); on a machine without root this
// suite is skipped with the reason below. This machine and CI run as root, so it runs there.
const dovecotUnavailable = ensureDovecot()

describe.skipIf(dovecotUnavailable !== null)(`LMTP against Dovecot's LMTP server${dovecotUnavailable !== null ? ` (skipped: ${dovecotUnavailable})` : ""}`, () => {
  let dovecot: Dovecot
  let dir: string
  beforeAll(async () => {
    dir = tempDir("postern-dovecot-")
    dovecot = await startDovecot(dir, ["alice@box.test", "bob@box.test"])
  }, 60_000)
  afterAll(async () => {
    await dovecot?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test("lmtp:unix:<socket>: delivered into two users' Maildirs; an unknown user bounced 5.1.1 with Dovecot's reply", async () => {
    const postern = await posternWith(lmtpTo(`unix:${dovecot.socketPath}`))
    await sendTo(postern, ["alice@box.test", "bob@box.test", "nobody@box.test"], "to dovecot over a unix socket")
    await waitFor("the queue to empty", () => queued(postern) === 0, 15_000)
    for (const user of ["alice@box.test", "bob@box.test"]) {
      const mail = dovecot.newMail(user)
      expect(mail).toHaveLength(1)
      expect(mail[0]).toContain("Subject: to dovecot over a unix socket")
    }
    const relay = `postern.test[${dovecot.socketPath}]`
    const rows = attempts(postern).filter((a) => a.recipient.endsWith("@box.test"))
    expect(rows.map((r) => [r.recipient, r.outcome, r.dsn])).toEqual([
      ["alice@box.test", "sent", "2.0.0"],
      ["bob@box.test", "sent", "2.0.0"],
      ["nobody@box.test", "bounced", "5.1.1"],
    ])
    // Dovecot's own words: "<alice@box.test> <id> Saved" after DATA; "User doesn't exist" at RCPT
    expect(rows[0]!.reply).toMatch(new RegExp(`^${relay.replace(/[[\]./]/g, "\\$&")} said: 250 2\\.0\\.0 <alice@box\\.test> \\S+ Saved$`))
    expect(rows[2]!.reply).toBe(`host ${relay} said: 550 5.1.1 <nobody@box.test> User doesn't exist: nobody@box.test (in reply to RCPT TO command)`)
    expect(attempts(postern).filter((a) => a.recipient === "alice@source.test").map((a) => a.outcome)).toEqual(["sent"])
  })

  test("lmtp:[127.0.0.1]:port: the same Dovecot over TCP", async () => {
    const postern = await posternWith(lmtpTo(`[127.0.0.1]:${dovecot.port}`))
    await sendTo(postern, ["bob@box.test"], "to dovecot over tcp")
    await waitFor("the queue to empty", () => queued(postern) === 0, 15_000)
    expect(attempts(postern)).toMatchObject([{ recipient: "bob@box.test", outcome: "sent", dsn: "2.0.0", relay: `127.0.0.1[127.0.0.1]:${dovecot.port}` }])
    expect(dovecot.newMail("bob@box.test").some((m) => m.includes("Subject: to dovecot over tcp"))).toBe(true)
  })
})
