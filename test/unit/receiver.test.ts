import { connect, type Socket } from "node:net"
import SMTPConnection from "nodemailer/lib/smtp-connection"
import { afterEach, describe, expect, it } from "vitest"
import { inject, makeMessage } from "../support/inject.js"
import { startReceiver, type Receiver, type ReceiverScript } from "../support/receiver.js"

const open: Receiver[] = []
async function receiver(script?: ReceiverScript): Promise<Receiver> {
  const r = await startReceiver(script)
  open.push(r)
  return r
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
})

/** Reads from a raw socket until `pattern` matches what arrived so far */
function readUntil(socket: Socket, pattern: RegExp, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = ""
    const timer = setTimeout(() => {
      socket.off("data", onData)
      reject(new Error(`timed out waiting for ${String(pattern)}, got ${JSON.stringify(buf)}`))
    }, timeoutMs)
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString("utf8")
      if (pattern.test(buf)) {
        clearTimeout(timer)
        socket.off("data", onData)
        resolve(buf)
      }
    }
    socket.on("data", onData)
  })
}

describe("makeMessage", () => {
  it("builds a CRLF message of exactly the requested size", () => {
    const m = makeMessage({ from: "a@example.test", to: "b@example.test", subject: "hi", bytes: 5000, headers: { "X-Test": "1" } })
    expect(Buffer.byteLength(m)).toBe(5000)
    expect(m.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
    const [head, body] = m.split("\r\n\r\n", 2)
    expect(head).toMatch(/^From: <a@example\.test>\r\nTo: <b@example\.test>\r\nSubject: hi\r\n/)
    expect(head).toMatch(/\r\nX-Test: 1$/)
    expect(head).toMatch(/\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n/)
    expect(head).toMatch(/\r\nMessage-ID: <[0-9a-f-]+@example\.test>\r\n/)
    for (const line of (body ?? "").split("\r\n")) expect(line.length).toBeLessThanOrEqual(78)
  })

  it("uses a short default body when no size is asked for", () => {
    const m = makeMessage({ from: "a@example.test", to: "b@example.test" })
    expect(m.endsWith("\r\n\r\nThis is a Postern test message.\r\n")).toBe(true)
  })
})

describe("receiver + inject", () => {
  it("delivers a message and records envelope, body and params", async () => {
    const r = await receiver()
    expect(r.host).toBe("127.0.0.1")
    const body = makeMessage({ from: "sender@example.test", to: "rcpt@example.test", bytes: 3000 })
    const res = await inject(r.port, { from: "sender@example.test", to: ["rcpt@example.test"], body })
    expect(res).toEqual({ ok: true, code: 250, response: "250 Ok: message accepted", rejected: [] })
    await r.waitForMessages(1)
    expect(r.messages).toHaveLength(1)
    const m = r.messages[0]
    expect(m?.from).toBe("sender@example.test")
    expect(m?.to).toEqual(["rcpt@example.test"])
    expect(m?.body.toString("utf8")).toBe(body)
    expect(typeof m?.connectionId).toBe("string")
    expect(m?.rcptParams).toEqual({ "rcpt@example.test": {} })
    expect(r.connections).toBe(1)
    expect(r.rcptAttempts("RCPT@example.test")).toBe(1)
  })

  it("dot-stuffing round-trips and the null sender is kept", async () => {
    const r = await receiver()
    const body = "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
    const res = await inject(r.port, { from: "", to: ["rcpt@example.test"], body })
    expect(res.ok).toBe(true)
    expect(r.messages[0]?.from).toBe("")
    expect(r.messages[0]?.body.toString("utf8")).toBe(body)
  })

  it("parses a queue id from the DATA reply", async () => {
    const r = await receiver({ data: () => ({ code: 250, message: "2.0.0 Ok: queued as 4XyZ9" }) })
    const res = await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body: makeMessage({ from: "a@example.test", to: "b@example.test" }) })
    expect(res).toMatchObject({ ok: true, code: 250, response: "250 2.0.0 Ok: queued as 4XyZ9", queueId: "4XyZ9" })
  })

  it("scripted 451 on the first RCPT, accepted on the second attempt; reply line is verbatim", async () => {
    const r = await receiver({ rcpt: (_addr, attempt) => (attempt === 1 ? { code: 451, message: "4.7.1 try later" } : undefined) })
    const body = makeMessage({ from: "a@example.test", to: "b@example.test" })
    const first = await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body })
    expect(first.ok).toBe(false)
    expect(first.code).toBe(451)
    // smtp-server adds no enhanced code of its own (hideENHANCEDSTATUSCODES)
    expect(first.response).toBe("451 4.7.1 try later")
    expect(first.rejected).toEqual([{ address: "b@example.test", code: 451, response: "451 4.7.1 try later" }])
    expect(r.messages).toHaveLength(0)

    const second = await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body })
    expect(second.ok).toBe(true)
    expect(r.rcptAttempts("b@example.test")).toBe(2)
    expect(r.connections).toBe(2)
    expect(r.messages).toHaveLength(1)
  })

  it("the exact reply line on the wire", async () => {
    const r = await receiver({ rcpt: () => ({ code: 451, message: "4.7.1 try later" }) })
    const s = connect(r.port, "127.0.0.1")
    try {
      await readUntil(s, /^220 .*\r\n/)
      s.write("EHLO client.postern.test\r\n")
      const ehlo = await readUntil(s, /\r\n250 [^\r\n]*\r\n$/)
      expect(ehlo).not.toMatch(/ENHANCEDSTATUSCODES/)
      expect(ehlo).toMatch(/^250-receiver\.postern\.test /)
      expect(ehlo).toMatch(/250[- ]DSN\r\n/)
      s.write("MAIL FROM:<a@example.test>\r\n")
      expect(await readUntil(s, /\r\n$/)).toBe("250 Accepted\r\n")
      s.write("RCPT TO:<b@example.test>\r\n")
      expect(await readUntil(s, /\r\n$/)).toBe("451 4.7.1 try later\r\n")
    } finally {
      s.destroy()
    }
  })

  it("550 on RCPT", async () => {
    const r = await receiver({ rcpt: (addr) => (addr.startsWith("nobody@") ? { code: 550, message: "5.1.1 no such user" } : undefined) })
    const body = makeMessage({ from: "a@example.test", to: "nobody@example.test" })
    const res = await inject(r.port, { from: "a@example.test", to: ["nobody@example.test"], body })
    expect(res).toEqual({
      ok: false,
      code: 550,
      response: "550 5.1.1 no such user",
      rejected: [{ address: "nobody@example.test", code: 550, response: "550 5.1.1 no such user" }],
    })

    // partial rejection: the message still goes to the others
    const mixed = await inject(r.port, { from: "a@example.test", to: ["nobody@example.test", "c@example.test"], body })
    expect(mixed.ok).toBe(true)
    expect(mixed.rejected).toEqual([{ address: "nobody@example.test", code: 550, response: "550 5.1.1 no such user" }])
    expect(r.messages[0]?.to).toEqual(["c@example.test"])
  })

  it("MAIL and DATA rejections", async () => {
    const r = await receiver({
      mail: (from) => (from === "spammer@example.test" ? { code: 554, message: "5.7.1 go away" } : undefined),
      data: (_msg, attempt) => (attempt === 1 ? { code: 452, message: "4.3.1 out of space" } : undefined),
    })
    const body = makeMessage({ from: "a@example.test", to: "b@example.test" })
    expect(await inject(r.port, { from: "spammer@example.test", to: ["b@example.test"], body })).toEqual({
      ok: false,
      code: 554,
      response: "554 5.7.1 go away",
      rejected: [],
    })
    expect(await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body })).toEqual({
      ok: false,
      code: 452,
      response: "452 4.3.1 out of space",
      rejected: [],
    })
    expect((await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body })).ok).toBe(true)
    expect(r.messages).toHaveLength(1)
  })

  it("smtputf8 option and hidden extensions", async () => {
    const r = await receiver({ hideExtensions: ["DSN"] })
    const body = makeMessage({ from: "a@example.test", to: "b@example.test" })
    expect((await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body, smtputf8: true })).ok).toBe(true)
    expect((await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body })).ok).toBe(true)
    expect(r.messages[0]?.mailParams).toEqual({ SMTPUTF8: "" })
    expect(r.messages[1]?.mailParams).toEqual({})

    const hidden = await receiver({ hideExtensions: ["SMTPUTF8", "PIPELINING"] })
    const s = connect(hidden.port, "127.0.0.1")
    try {
      await readUntil(s, /^220 .*\r\n/)
      s.write("EHLO client.postern.test\r\n")
      const ehlo = await readUntil(s, /\r\n250 [^\r\n]*\r\n$/)
      expect(ehlo).not.toMatch(/SMTPUTF8|PIPELINING/)
      expect(ehlo).toMatch(/8BITMIME/)
    } finally {
      s.destroy()
    }
  })

  it("a connection error resolves with ok=false and code 0", async () => {
    const r = await startReceiver()
    const port = r.port
    await r.close()
    const res = await inject(port, { from: "a@example.test", to: ["b@example.test"], body: "Subject: x\r\n\r\nx\r\n" })
    expect(res.ok).toBe(false)
    expect(res.code).toBe(0)
    expect(res.response).toMatch(/ECONNREFUSED/)
  })

  it("binds a loopback localAddress", async () => {
    const r = await receiver()
    const res = await inject(r.port, { from: "a@example.test", to: ["b@example.test"], body: "Subject: x\r\n\r\nx\r\n", localAddress: "127.0.0.2" })
    expect(res.ok).toBe(true)
  })

  it("refuses non-loopback targets", async () => {
    await expect(inject(25, { host: "192.0.2.1", from: "a@example.test", to: ["b@example.test"], body: "x" })).rejects.toThrow(/loopback/)
  })

  it("LMTP mode gives a reply per recipient", async () => {
    const r = await receiver({
      lmtp: true,
      data: (msg) => (msg.to[0] === "full@example.test" ? { code: 452, message: "4.2.2 mailbox full" } : undefined),
    })
    const conn = new SMTPConnection({
      host: "127.0.0.1",
      port: r.port,
      lmtp: true,
      name: "client.postern.test",
      ignoreTLS: true,
      connectionTimeout: 3000,
      greetingTimeout: 3000,
      socketTimeout: 3000,
      logger: false,
    })
    conn.on("error", () => undefined)
    try {
      await new Promise<void>((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())))
      const body = makeMessage({ from: "a@example.test", to: "ok@example.test" })
      const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) =>
        conn.send({ from: "a@example.test", to: ["ok@example.test", "full@example.test"] }, body, (err, i) => (err ? reject(err) : resolve(i))),
      )
      expect(info.accepted).toEqual(["ok@example.test"])
      expect(info.rejected).toEqual(["full@example.test"])
      expect(info.rejectedErrors?.map((e) => e.response)).toEqual(["452 4.2.2 mailbox full"])
    } finally {
      conn.close()
    }
    await r.waitForMessages(1)
    expect(r.messages).toHaveLength(1)
    expect(r.messages[0]?.to).toEqual(["ok@example.test"])
    expect(r.messages[0]?.rcptParams).toEqual({ "ok@example.test": {} })
  })

  it("close() with a client still connected returns promptly", async () => {
    const r = await startReceiver()
    const s = connect(r.port, "127.0.0.1")
    s.on("error", () => undefined)
    const closed = new Promise<void>((resolve) => s.once("close", () => resolve()))
    await readUntil(s, /^220 /)
    const started = Date.now()
    await r.close()
    expect(Date.now() - started).toBeLessThan(1000)
    await closed
    await r.close() // idempotent
  })

  it("waitForMessages times out and rejects on close", async () => {
    const r = await receiver()
    await expect(r.waitForMessages(1, 50)).rejects.toThrow(/timed out/)
    const pending = r.waitForMessages(1, 5000)
    await r.close()
    await expect(pending).rejects.toThrow(/closed/)
  })
})
