// End to end over real sockets: a client injects into Postern, Postern queues durably and relays to a
// real SMTP receiver; deferrals are retried on the timer, bounces come back as RFC 3464 reports.
import { afterEach, describe, expect, test } from "vitest"
import { simpleParser } from "mailparser"
import { inject, makeMessage } from "../support/inject.js"
import { startReceiver, type Receiver } from "../support/receiver.js"
import { startPostern, waitFor, type TestPostern } from "../support/postern.js"

let postern: TestPostern | undefined
let receiver: Receiver | undefined

afterEach(async () => {
  await postern?.close()
  await receiver?.close()
  postern = undefined
  receiver = undefined
})

const attempts = (p: TestPostern) =>
  p.queue.db.prepare("SELECT recipient, outcome, dsn, reply, attempt FROM attempts ORDER BY id").all() as Array<{
    recipient: string
    outcome: string
    dsn: string
    reply: string
    attempt: number
  }>

describe("relay end to end", () => {
  test("a recipient refused with 451 on its first attempt is delivered once, after a timer-driven retry", async () => {
    receiver = await startReceiver({
      rcpt: (_address, attempt) => (attempt === 1 ? { code: 451, message: "4.7.1 greylisted, try again" } : undefined),
    })
    postern = await startPostern({
      transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` },
      minimalBackoffTime: "1s",
      maximalBackoffTime: "2s",
    })
    const r = await inject(postern.port, {
      from: "alice@source.test",
      to: ["bob@dest.test"],
      body: makeMessage({ from: "alice@source.test", to: "bob@dest.test", subject: "retry me" }),
    })
    expect(r.ok).toBe(true)
    expect(r.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$/)
    await receiver.waitForMessages(1, 10_000)
    await new Promise((res) => setTimeout(res, 300))
    expect(receiver.messages).toHaveLength(1)
    expect(receiver.rcptAttempts("bob@dest.test")).toBe(2)
    const body = receiver.messages[0]!.body.toString()
    expect(body).toMatch(/^Received: from client\.postern\.test \(.*\[127\.0\.0\.1\]\)\r\n\tby postern\.test \(Postern\) with ESMTP id /)
    expect(body).toContain("Subject: retry me")
    await waitFor("the queue to empty", () => (postern!.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
    const log = attempts(postern)
    expect(log.map((a) => a.outcome)).toEqual(["deferred", "sent"])
    expect(log[0]!.dsn).toBe("4.7.1")
    expect(log[0]!.reply).toContain("451 4.7.1 greylisted")
    expect(log.map((a) => a.attempt)).toEqual([1, 2])
  })

  test("a 550 to one recipient bounces it with a parseable RFC 3464 report; the other is delivered", async () => {
    receiver = await startReceiver({
      rcpt: (address) => (address === "nobody@dest.test" ? { code: 550, message: "5.1.1 <nobody@dest.test>: no such user" } : undefined),
    })
    postern = await startPostern({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` } })
    const r = await inject(postern.port, {
      from: "alice@source.test",
      to: ["bob@dest.test", "nobody@dest.test"],
      body: makeMessage({ from: "alice@source.test", to: "bob@dest.test", subject: "hello both" }),
    })
    expect(r.ok).toBe(true)
    await receiver.waitForMessages(2, 10_000)
    const original = receiver.messages.find((m) => m.from === "alice@source.test")!
    expect(original.to).toEqual(["bob@dest.test"])
    const report = receiver.messages.find((m) => m.from === "")!
    expect(report.to).toEqual(["alice@source.test"])
    const parsed = await simpleParser(report.body)
    expect(parsed.headers.get("content-type")).toMatchObject({ value: "multipart/report", params: { "report-type": "delivery-status" } })
    const text = report.body.toString()
    expect(text).toContain("Final-Recipient: rfc822; nobody@dest.test")
    expect(text).toContain("Action: failed")
    expect(text).toContain("Status: 5.1.1")
    expect(text).toMatch(/Diagnostic-Code: smtp; 550 5\.1\.1 <nobody@dest\.test>: no such user/)
    expect(text).toContain("Subject: hello both")
    await waitFor("the queue to empty", () => (postern!.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
    expect(attempts(postern).map((a) => `${a.recipient}:${a.outcome}`).sort()).toEqual([
      "alice@source.test:sent",
      "bob@dest.test:sent",
      "nobody@dest.test:bounced",
    ])
  })

  test("a bounce of a message from the null sender is dropped, never sent", async () => {
    receiver = await startReceiver({ rcpt: () => ({ code: 550, message: "5.1.1 no such user" }) })
    postern = await startPostern({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` } })
    const r = await inject(postern.port, { from: "", to: ["x@dest.test"], body: makeMessage({ from: "MAILER-DAEMON@x.test", to: "x@dest.test" }) })
    expect(r.ok).toBe(true)
    await waitFor("the queue to empty", () => (postern!.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
    expect(receiver.messages).toHaveLength(0)
    expect(attempts(postern).map((a) => a.outcome)).toEqual(["bounced"])
  })
})

describe("a failing delivery agent", () => {
  test("an exception inside a delivery defers its recipients; the retry delivers them (predecessor backs off)", async () => {
    receiver = await startReceiver()
    let faults = 0
    postern = await startPostern(
      { transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` }, minimalBackoffTime: "1s", maximalBackoffTime: "1s" },
      {
        deliveryFault: () => {
          if (faults++ === 0) throw new Error("injected fault in the delivery agent")
        },
      },
    )
    const r = await inject(postern.port, { from: "a@s.test", to: ["b@d.test"], body: makeMessage({ from: "a@s.test", to: "b@d.test" }) })
    expect(r.ok).toBe(true)
    await receiver.waitForMessages(1, 10_000)
    expect(receiver.messages).toHaveLength(1)
    await waitFor("the queue to empty", () => (postern!.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
    const log = attempts(postern)
    expect(log.map((a) => a.outcome)).toEqual(["deferred", "sent"])
    expect(log[0]!.reply).toContain("injected fault in the delivery agent")
  })
})

describe("leases", () => {
  test("a delivery that hangs past its lease is stopped, its recipients deferred and retried; nothing is applied twice", async () => {
    receiver = await startReceiver()
    let calls = 0
    let releaseHung: () => void = () => undefined
    postern = await startPostern(
      {
        transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` },
        minimalBackoffTime: "1s",
        maximalBackoffTime: "1s",
        // lease = 2 x (connect + helo + data-done) = 2.4 s (the receiver greets after 100 ms)
        smtpConnectTimeout: "100ms",
        smtpHeloTimeout: "1s",
        smtpDataDoneTimeout: "100ms",
      },
      {
        deliveryFault: () => {
          // the first attempt hangs inside the delivery agent until the test lets it go, long after its lease
          if (calls++ === 0) return new Promise<void>((resolve) => (releaseHung = resolve))
        },
      },
    )
    const r = await inject(postern.port, { from: "a@s.test", to: ["b@d.test"], body: makeMessage({ from: "a@s.test", to: "b@d.test" }) })
    expect(r.ok).toBe(true)
    await receiver.waitForMessages(1, 10_000)
    releaseHung() // the late result of the first attempt: it must be discarded
    await new Promise((res) => setTimeout(res, 300))
    expect(receiver.messages).toHaveLength(1)
    await waitFor("the queue to empty", () => (postern!.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
    const log = attempts(postern)
    expect(log.map((a) => a.outcome)).toEqual(["deferred", "sent"])
    expect(log[0]!.dsn).toBe("4.4.7")
    expect(log[0]!.reply).toMatch(/did not finish within its lease/)
  })
})

describe("a destination whose deliveries keep failing", () => {
  test("goes dead: its queued mail is deferred without new attempts (predecessor backs off)", async () => {
    receiver = await startReceiver()
    let calls = 0
    postern = await startPostern(
      { transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` }, minimalBackoffTime: "10m", maximalBackoffTime: "10m" },
      {
        deliveryFault: () => {
          calls++
          throw new Error("injected: the delivery agent dies every time")
        },
      },
    )
    const p = postern
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => inject(p.port, { from: "a@s.test", to: [`r${i}@d.test`], body: makeMessage({ from: "a@s.test", to: `r${i}@d.test` }) })),
    )
    expect(results.every((r) => r.ok)).toBe(true)
    await waitFor("10 deferred recipients", () => (p.queue.db.prepare("SELECT count(*) AS n FROM recipients WHERE state = 'pending' AND attempts > 0").get() as { n: number }).n === 10)
    const key = `smtp:[127.0.0.1]:${receiver.port}`
    expect(p.system.qmgr.destinationStates().find((d) => d.key === key)?.state).toBe("dead")
    expect(calls).toBeLessThan(10) // the dead destination took no more attempts
    const replies = (p.queue.db.prepare("SELECT reply FROM attempts").all() as Array<{ reply: string }>).map((r) => r.reply)
    expect(replies.some((r) => r.startsWith("delivery temporarily suspended"))).toBe(true)
    expect(receiver.messages).toHaveLength(0)
  })
})
