// Outbound TLS end to end over loopback: a CA and a server certificate made with openssl in a temporary
// folder, an smtp-server receiver offering STARTTLS with it, and Postern at each smtpTlsSecurityLevel and
// with smtpTlsPolicyMaps. DNS is a table: mx.tls.test and wrong.tls.test are both 127.0.0.1; the
// certificate is for mx.tls.test only.
import { rmSync } from "node:fs"
import { Writable } from "node:stream"
import { pino } from "pino"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startBadServer } from "../support/bad-server.js"
import { makeTestCertificates, type TestCertificates } from "../support/certs.js"
import { inject, makeMessage } from "../support/inject.js"
import { tempDir, waitFor, type TestPostern } from "../support/postern.js"
import { withCleanup } from "../support/cleanup.js"

const DNS = { addresses: { "mx.tls.test": ["127.0.0.1"], "wrong.tls.test": ["127.0.0.1"] } }

let certs: TestCertificates
let certDir: string
beforeAll(() => {
  certDir = tempDir("postern-tls-")
  certs = makeTestCertificates(certDir, ["mx.tls.test"])
}, 600_000)
afterAll(() => rmSync(certDir, { recursive: true, force: true }))

const { onCleanup, receiverWith, posternWith } = withCleanup()
const tlsReceiver = () => receiverWith({ tls: { key: certs.key, cert: certs.cert } })

interface AttemptRow {
  recipient: string
  outcome: string
  dsn: string
  reply: string
  relay: string | null
}
const attempts = (p: TestPostern) => p.queue.db.prepare("SELECT recipient, outcome, dsn, reply, relay FROM attempts ORDER BY id").all() as Array<AttemptRow>
const queued = (p: TestPostern) => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n

const send = async (p: TestPostern, to: string): Promise<void> => {
  const r = await inject(p.port, { from: "alice@source.test", to: [to], body: makeMessage({ from: "alice@source.test", to, subject: "tls" }) })
  expect(r.ok).toBe(true)
}

/** A logger that keeps every line it is given (delivery must run in the main thread to log here). */
const capturingLogger = () => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { log: pino({ level: "info" }, stream), lines }
}

/** Postern routing everything to `[host]:port`, at this TLS level, with a long backoff (one attempt in a test). */
const routedTo = (host: string, port: number, extra: Record<string, unknown> = {}) => ({
  transports: { "*": `smtp:[${host}]:${port}` },
  minimalBackoffTime: "10m",
  maximalBackoffTime: "10m",
  ...extra,
})

describe("outbound TLS", () => {
  test("may (the default): STARTTLS is used when offered; the log says so once per connection and on each delivery line", async () => {
    const receiver = await tlsReceiver()
    const { log, lines } = capturingLogger()
    const postern = await posternWith(routedTo("mx.tls.test", receiver.port, { deliveryThread: "main" }), { dns: DNS, log })
    expect(postern.config.smtpTlsSecurityLevel).toBe("may")
    await send(postern, "bob@dest.test")
    await receiver.waitForMessages(1, 10_000)
    expect(receiver.messages[0]!.secure).toBe(true)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    expect(attempts(postern)).toMatchObject([{ outcome: "sent", relay: `mx.tls.test[127.0.0.1]:${receiver.port}` }])
    const established = lines.find((l) => String(l["msg"]).includes("TLS connection established"))
    // at may the certificate is not checked against any CA we were given: Untrusted, as Postfix says it
    expect(established?.["msg"]).toMatch(new RegExp(`^Untrusted TLS connection established to mx\\.tls\\.test\\[127\\.0\\.0\\.1\\]:${receiver.port}: TLSv1\\.3 with cipher \\S+$`))
    const delivered = lines.find((l) => l["status"] === "sent")
    expect(delivered).toMatchObject({ tls: "TLSv1.3", to: "bob@dest.test" })
    expect(String(delivered?.["msg"])).toContain("tls=TLSv1.3, status=sent")
  })

  test("may, a server without STARTTLS: plaintext, as before (smtp-sink and the other tests' receivers)", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith(routedTo("127.0.0.1", receiver.port), { dns: DNS })
    await send(postern, "bob@dest.test")
    await receiver.waitForMessages(1, 10_000)
    expect(receiver.messages[0]!.secure).toBe(false)
  })

  test("may, a broken TLS handshake: the same server is tried again in plaintext and the mail is delivered", async () => {
    const server = await startBadServer("ok", { brokenStartTls: true })
    onCleanup(() => server.close())
    const postern = await posternWith(routedTo("127.0.0.1", server.port), { dns: DNS })
    await send(postern, "bob@dest.test")
    await server.waitForMessages(1, 10_000)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    expect(server.records.map((r) => r.commands.filter((c) => /^(STARTTLS|MAIL)/.test(c)).map((c) => c.split(" ")[0]))).toEqual([["STARTTLS"], ["MAIL"]])
    expect(attempts(postern)).toMatchObject([{ outcome: "sent", dsn: "2.0.0" }])
  })

  test("may, STARTTLS refused (454): the same session goes on in plaintext; encrypt defers with the server's reply", async () => {
    const server = await startBadServer("ok", { refuseStartTls: true })
    onCleanup(() => server.close())
    const may = await posternWith(routedTo("127.0.0.1", server.port), { dns: DNS })
    await send(may, "bob@dest.test")
    await server.waitForMessages(1, 10_000)
    expect(server.records.map((r) => r.commands.map((c) => c.split(" ")[0]))).toEqual([["EHLO", "STARTTLS", "MAIL", "RCPT", "DATA"]])

    const encrypt = await posternWith(routedTo("127.0.0.1", server.port, { smtpTlsSecurityLevel: "encrypt" }), { dns: DNS })
    await send(encrypt, "carol@dest.test")
    await waitFor("an attempt", () => attempts(encrypt).length === 1)
    expect(attempts(encrypt)[0]).toMatchObject({
      outcome: "deferred",
      dsn: "4.7.5",
      reply: `TLS is required, but host 127.0.0.1[127.0.0.1]:${server.port} refused to start TLS: 454 4.7.0 TLS not available due to local problem`,
    })
    expect(server.messages).toHaveLength(1)
  })

  test("encrypt, a server that does not offer STARTTLS: deferred 4.7.4 with Postfix's words, and nothing is sent", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith(routedTo("mx.tls.test", receiver.port, { smtpTlsSecurityLevel: "encrypt" }), { dns: DNS })
    await send(postern, "bob@dest.test")
    await waitFor("an attempt", () => attempts(postern).length === 1)
    expect(attempts(postern)[0]).toEqual({
      recipient: "bob@dest.test",
      outcome: "deferred",
      dsn: "4.7.4",
      reply: `TLS is required, but was not offered by host mx.tls.test[127.0.0.1]:${receiver.port}`,
      relay: `mx.tls.test[127.0.0.1]:${receiver.port}`,
    })
    expect(receiver.messages).toHaveLength(0)
    const row = postern.queue.db.prepare("SELECT last_reply FROM recipients").get() as { last_reply: string }
    expect(row.last_reply).toContain("TLS is required, but was not offered")
  })

  test("encrypt failures are site failures: with a window of 1 the destination goes dead and the next message waits without a connection", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith(routedTo("mx.tls.test", receiver.port, { smtpTlsSecurityLevel: "encrypt", initialDestinationConcurrency: 1 }), { dns: DNS })
    await send(postern, "first@dest.test")
    await waitFor("the first attempt", () => attempts(postern).length === 1)
    const connections = receiver.connections
    await send(postern, "second@dest.test")
    await waitFor("the second attempt", () => attempts(postern).length === 2)
    expect(attempts(postern)[1]).toMatchObject({
      recipient: "second@dest.test",
      outcome: "deferred",
      reply: `delivery temporarily suspended: TLS is required, but was not offered by host mx.tls.test[127.0.0.1]:${receiver.port}`,
    })
    expect(receiver.connections).toBe(connections)
  })

  test("verify with the CA file and the right name: delivered over TLS", async () => {
    const receiver = await tlsReceiver()
    const { log, lines } = capturingLogger()
    const postern = await posternWith(
      routedTo("mx.tls.test", receiver.port, { smtpTlsSecurityLevel: "verify", smtpTlsCaFile: certs.caFile, deliveryThread: "main" }),
      { dns: DNS, log },
    )
    await send(postern, "bob@dest.test")
    await receiver.waitForMessages(1, 10_000)
    expect(receiver.messages[0]!.secure).toBe(true)
    await waitFor("the queue to empty", () => queued(postern) === 0)
    expect(lines.some((l) => String(l["msg"]).startsWith(`Verified TLS connection established to mx.tls.test[127.0.0.1]:${receiver.port}`))).toBe(true)
  })

  test("verify, a certificate for another name: deferred 4.7.5 with the reason", async () => {
    const receiver = await tlsReceiver()
    const postern = await posternWith(routedTo("wrong.tls.test", receiver.port, { smtpTlsSecurityLevel: "verify", smtpTlsCaFile: certs.caFile }), { dns: DNS })
    await send(postern, "bob@dest.test")
    await waitFor("an attempt", () => attempts(postern).length === 1)
    expect(attempts(postern)[0]).toMatchObject({
      outcome: "deferred",
      dsn: "4.7.5",
      reply: `Server certificate not verified: wrong.tls.test[127.0.0.1]:${receiver.port}: certificate names (mx.tls.test) do not match wrong.tls.test`,
    })
    expect(receiver.messages).toHaveLength(0)
  })

  test("verify, a certificate from a CA we do not trust: deferred 4.7.5 with the reason", async () => {
    const receiver = await tlsReceiver()
    const postern = await posternWith(routedTo("mx.tls.test", receiver.port, { smtpTlsSecurityLevel: "verify", smtpTlsCaFile: certs.otherCaFile }), { dns: DNS })
    await send(postern, "bob@dest.test")
    await waitFor("an attempt", () => attempts(postern).length === 1)
    const row = attempts(postern)[0]!
    expect(row).toMatchObject({ outcome: "deferred", dsn: "4.7.5" })
    expect(row.reply).toMatch(new RegExp(`^Server certificate not verified: mx\\.tls\\.test\\[127\\.0\\.0\\.1\\]:${receiver.port}: untrusted issuer \\(UNABLE_TO_(GET_ISSUER_CERT_LOCALLY|VERIFY_LEAF_SIGNATURE)\\)$`))
    expect(receiver.messages).toHaveLength(0)
  })

  test("smtpTlsPolicyMaps overrides the global level per nexthop, in both directions", async () => {
    const plain = await receiverWith()
    const secure = await tlsReceiver()
    const postern = await posternWith(
      {
        smtpTlsSecurityLevel: "encrypt",
        smtpTlsCaFile: certs.caFile,
        transports: { "plain.test": `smtp:[127.0.0.1]:${plain.port}`, "secure.test": `smtp:[mx.tls.test]:${secure.port}` },
        smtpTlsPolicyMaps: { [`[127.0.0.1]:${plain.port}`]: "none", [`[MX.tls.test]:${secure.port}`]: "verify match=nexthop" },
        minimalBackoffTime: "10m",
        maximalBackoffTime: "10m",
      },
      { dns: DNS },
    )
    await send(postern, "a@plain.test")
    await send(postern, "b@secure.test")
    await plain.waitForMessages(1, 10_000)
    await secure.waitForMessages(1, 10_000)
    expect(plain.messages[0]!.secure).toBe(false)
    expect(secure.messages[0]!.secure).toBe(true)
    await waitFor("the queue to empty", () => queued(postern) === 0)
  })
})
