import { simpleParser, type HeaderValue, type ParsedMail } from "mailparser"
import { describe, expect, it } from "vitest"
import {
  buildNonDeliveryReport,
  extractHeaderSection,
  type BouncedRecipient,
  type NdrInput,
} from "../../src/dsn/ndr.js"

const ARRIVAL = Date.UTC(2024, 0, 15, 9, 30, 0)
const NOW = Date.UTC(2024, 0, 15, 10, 0, 7)

const ORIGINAL_HEADERS =
  "Return-Path: <alice@example.org>\r\n" +
  "Received: from client.example.org (client.example.org [192.0.2.10])\r\n" +
  "\tby mx.postern.test (Postern) with ESMTP id 4XyZ01\r\n" +
  "From: Alice <alice@example.org>\r\n" +
  "To: Bob <bob@example.net>\r\n" +
  "Subject: quarterly numbers\r\n" +
  "Message-ID:\r\n <orig-123@client.example.org>\r\n" +
  "\r\n"
const ORIGINAL_BODY = "Hello Bob,\r\n\r\nthe numbers are attached.\r\n"
const ORIGINAL = Buffer.from(ORIGINAL_HEADERS + ORIGINAL_BODY)

const BOB: BouncedRecipient = {
  address: "bob@example.net",
  originalRecipient: "rfc822;Bob@Example.NET",
  status: "5.1.1",
  action: "failed",
  diagnosticCode: "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
  remoteMta: "dns; mx1.example.net",
  lastAttemptAt: Date.UTC(2024, 0, 15, 9, 59, 58),
  reason:
    "host mx1.example.net[198.51.100.7] said: 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
}
const CAROL: BouncedRecipient = {
  address: "carol@example.com",
  status: "5.4.4",
  action: "failed",
  reason: "Host or domain name not found",
}

function input(over: Partial<NdrInput> = {}): NdrInput {
  return {
    reportingMta: "mx.postern.test",
    queueId: "4XyZ01",
    originalSender: "alice@example.org",
    arrivalAt: ARRIVAL,
    now: NOW,
    envelopeId: "ENV-42",
    recipients: [BOB, CAROL],
    originalHeaders: extractHeaderSection(ORIGINAL),
    originalMessage: ORIGINAL,
    boundarySeed: "k3y5eed",
    ...over,
  }
}

interface RawPart {
  readonly headers: Map<string, HeaderValue>
  readonly headerText: string
  readonly body: Buffer
}

interface Parsed {
  readonly mail: ParsedMail
  readonly boundary: string
  readonly topHeaderText: string
  readonly parts: RawPart[]
}

/**
 * mailparser merges text-like parts (message/delivery-status, text/rfc822-headers) into `text`, so the parts are
 * cut out at the boundary that mailparser found, and each part's header section is parsed by mailparser again.
 */
async function parse(report: Buffer): Promise<Parsed> {
  const mail = await simpleParser(report)
  const ct = mail.headers.get("content-type") as { value: string; params: Record<string, string> }
  const boundary = ct.params["boundary"]
  if (boundary === undefined) throw new Error("no boundary")
  const raw = report.toString("latin1")
  const headerEnd = raw.indexOf("\r\n\r\n")
  const topHeaderText = raw.slice(0, headerEnd + 2)
  const pieces = `\r\n${raw.slice(headerEnd + 4)}`.split(`\r\n--${boundary}`)
  const last = pieces[pieces.length - 1] ?? ""
  expect(last.startsWith("--")).toBe(true) // close delimiter
  const parts: RawPart[] = []
  for (const piece of pieces.slice(1, -1)) {
    expect(piece.startsWith("\r\n")).toBe(true)
    const p = piece.slice(2)
    const end = p.indexOf("\r\n\r\n")
    const headerText = p.slice(0, end + 2)
    const headers = (await simpleParser(Buffer.from(`${headerText}\r\n`, "latin1"))).headers
    parts.push({ headers, headerText, body: Buffer.from(p.slice(end + 4), "latin1") })
  }
  return { mail, boundary, topHeaderText, parts }
}

function contentType(part: RawPart): { value: string; params: Record<string, string> } {
  return part.headers.get("content-type") as { value: string; params: Record<string, string> }
}

/** message/delivery-status body → field groups (per-message first), names lowercased, values unfolded. */
function dsnGroups(body: Buffer): Array<Map<string, string>> {
  const text = body.toString("latin1").replace(/\r\n[ \t]/g, " ")
  return text
    .split(/\r\n\r\n/)
    .map((g) => g.trim())
    .filter((g) => g !== "")
    .map((g) => {
      const m = new Map<string, string>()
      for (const line of g.split("\r\n")) {
        const i = line.indexOf(":")
        expect(i).toBeGreaterThan(0)
        const name = line.slice(0, i).toLowerCase()
        expect(m.has(name)).toBe(false)
        m.set(name, line.slice(i + 1).trim())
      }
      return m
    })
}

function part(parsed: Parsed, i: number): RawPart {
  const p = parsed.parts[i]
  if (p === undefined) throw new Error(`no part ${i}`)
  return p
}

function group(groups: Array<Map<string, string>>, i: number): Map<string, string> {
  const g = groups[i]
  if (g === undefined) throw new Error(`no group ${i}`)
  return g
}

describe("buildNonDeliveryReport", () => {
  it("writes the top-level headers of a multipart/report", async () => {
    const { mail, topHeaderText } = await parse(buildNonDeliveryReport(input()))
    expect(mail.from?.value[0]?.address).toBe("MAILER-DAEMON@mx.postern.test")
    expect(mail.from?.value[0]?.name).toBe("Mail Delivery System")
    const to = Array.isArray(mail.to) ? mail.to[0] : mail.to
    expect(to?.value[0]?.address).toBe("alice@example.org")
    expect(mail.subject).toBe("Undelivered Mail Returned to Sender")
    expect(mail.date?.getTime()).toBe(Math.floor(NOW / 1000) * 1000)
    expect(topHeaderText).toMatch(/^Date: Mon, 15 Jan 2024 10:00:07 \+0000\r$/m)
    expect(mail.messageId).toMatch(/^<[^<>@\s]+@mx\.postern\.test>$/)
    expect(mail.messageId).toContain("4XyZ01")
    expect(mail.headers.get("auto-submitted")).toBe("auto-replied")
    expect(mail.headers.get("mime-version")).toBe("1.0")
    const ct = mail.headers.get("content-type") as { value: string; params: Record<string, string> }
    expect(ct.value).toBe("multipart/report")
    expect(ct.params["report-type"]).toBe("delivery-status")
    expect(mail.inReplyTo).toBe("<orig-123@client.example.org>")
    expect(mail.references).toBe("<orig-123@client.example.org>")
  })

  it("omits In-Reply-To/References when the original has no Message-ID", async () => {
    const headers = Buffer.from("From: a@example.org\r\nSubject: x\r\n\r\n")
    const { mail } = await parse(buildNonDeliveryReport(input({ originalHeaders: headers, ret: "HDRS" })))
    expect(mail.headers.has("in-reply-to")).toBe(false)
    expect(mail.headers.has("references")).toBe(false)
  })

  it("has three parts: notification, delivery report, returned headers", async () => {
    const parsed = await parse(buildNonDeliveryReport(input()))
    expect(parsed.parts).toHaveLength(3)
    expect(contentType(part(parsed, 0)).value).toBe("text/plain")
    expect(contentType(part(parsed, 0)).params["charset"]).toBe("us-ascii")
    expect(contentType(part(parsed, 1)).value).toBe("message/delivery-status")
    expect(contentType(part(parsed, 2)).value).toBe("text/rfc822-headers")
    expect(part(parsed, 2).headers.get("content-description")).toBe("Undelivered Message Headers")

    const text = part(parsed, 0).body.toString("latin1")
    expect(text).toContain("This is the mail system at host mx.postern.test.")
    expect(text).toContain("I'm sorry to have to inform you that your message could not")
    expect(text).toContain("<carol@example.com>: Host or domain name not found")
    // Long reasons are wrapped with an indent, as Postfix does.
    const unwrapped = text.replace(/\r\n {4}/g, " ")
    expect(unwrapped).toContain(`<bob@example.net>: ${BOB.reason}`)
    for (const line of text.split("\r\n")) expect(line.length).toBeLessThanOrEqual(78)
    // mailparser sees the notification as the message text.
    expect(parsed.mail.text).toContain("This is the mail system at host mx.postern.test.")
  })

  it("writes every per-message and per-recipient field", async () => {
    const parsed = await parse(buildNonDeliveryReport(input()))
    const groups = dsnGroups(part(parsed, 1).body)
    expect(groups).toHaveLength(3)
    const msg = group(groups, 0)
    expect(Object.fromEntries(msg)).toEqual({
      "reporting-mta": "dns; mx.postern.test",
      "x-postern-queue-id": "4XyZ01",
      "x-postern-sender": "rfc822; alice@example.org",
      "arrival-date": "Mon, 15 Jan 2024 09:30:00 +0000",
      "original-envelope-id": "ENV-42",
    })
    expect(Object.fromEntries(group(groups, 1))).toEqual({
      "final-recipient": "rfc822; bob@example.net",
      "original-recipient": "rfc822;Bob@Example.NET",
      action: "failed",
      status: "5.1.1",
      "remote-mta": "dns; mx1.example.net",
      "diagnostic-code": "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
      "last-attempt-date": "Mon, 15 Jan 2024 09:59:58 +0000",
    })
    // Optional fields are left out when not given.
    expect(Object.fromEntries(group(groups, 2))).toEqual({
      "final-recipient": "rfc822; carol@example.com",
      action: "failed",
      status: "5.4.4",
    })
    // Field order within a group follows RFC 3464 / Postfix.
    const bobLines = part(parsed, 1)
      .body.toString("latin1")
      .replace(/\r\n[ \t]/g, " ")
      .split("\r\n")
      .filter((l) => l !== "")
      .map((l) => l.slice(0, l.indexOf(":")))
    expect(bobLines.slice(5, 12)).toEqual([
      "Final-Recipient",
      "Original-Recipient",
      "Action",
      "Status",
      "Remote-MTA",
      "Diagnostic-Code",
      "Last-Attempt-Date",
    ])
  })

  it("leaves out Original-Envelope-Id without an ENVID", async () => {
    const { envelopeId: _omit, ...rest } = input()
    const groups = dsnGroups(part(await parse(buildNonDeliveryReport(rest)), 1).body)
    expect(group(groups, 0).has("original-envelope-id")).toBe(false)
  })

  it("returns only the headers by default (RET=HDRS), byte for byte", async () => {
    const report = buildNonDeliveryReport(input())
    const parsed = await parse(report)
    expect(part(parsed, 2).body.equals(extractHeaderSection(ORIGINAL))).toBe(true)
    expect(report.includes("the numbers are attached")).toBe(false)
    expect(parsed.mail.attachments.map((a) => a.contentType)).toEqual(["text/rfc822-headers"])
  })

  it("returns the whole message with RET=FULL as message/rfc822", async () => {
    const parsed = await parse(buildNonDeliveryReport(input({ ret: "FULL" })))
    expect(parsed.parts).toHaveLength(3)
    expect(contentType(part(parsed, 2)).value).toBe("message/rfc822")
    expect(part(parsed, 2).headers.get("content-description")).toBe("Undelivered Message")
    expect(part(parsed, 2).body.equals(ORIGINAL)).toBe(true)
    const att = parsed.mail.attachments[0]
    expect(att?.contentType).toBe("message/rfc822")
    expect(att?.content.toString()).toContain("the numbers are attached.")
  })

  it("falls back to the headers when RET=FULL but the message is not supplied", async () => {
    const { originalMessage: _omit, ...rest } = input({ ret: "FULL" })
    const parsed = await parse(buildNonDeliveryReport(rest))
    expect(contentType(part(parsed, 2)).value).toBe("text/rfc822-headers")
    expect(part(parsed, 2).body.equals(extractHeaderSection(ORIGINAL))).toBe(true)
  })

  it("truncates a RET=FULL original at bounceSizeLimit, on a line boundary", async () => {
    const lines = Array.from({ length: 200 }, (_, i) => `line ${String(i).padStart(4, "0")} ${"x".repeat(60)}\r\n`)
    const big = Buffer.from(ORIGINAL_HEADERS + lines.join(""))
    const limit = 2000
    const parsed = await parse(buildNonDeliveryReport(input({ ret: "FULL", originalMessage: big, bounceSizeLimit: limit })))
    const body = part(parsed, 2).body
    expect(body.length).toBeLessThanOrEqual(limit)
    expect(body.length).toBeGreaterThan(limit - 80)
    expect(big.subarray(0, body.length).equals(body)).toBe(true)
    expect(body.subarray(-2).toString()).toBe("\r\n")
    expect(contentType(part(parsed, 2)).value).toBe("message/rfc822")
  })

  it("applies the 50000-byte default limit", async () => {
    const big = Buffer.concat([Buffer.from(ORIGINAL_HEADERS), Buffer.alloc(200_000, "abcdefghij\r\n")])
    const parsed = await parse(buildNonDeliveryReport(input({ ret: "FULL", originalMessage: big })))
    const body = part(parsed, 2).body
    expect(body.length).toBeLessThanOrEqual(50_000)
    expect(body.length).toBeGreaterThan(49_900)
    expect(big.subarray(0, body.length).equals(body)).toBe(true)
  })

  it("uses the delayed-mail subject and wording when every recipient is delayed", async () => {
    const delayed: BouncedRecipient = {
      address: "dave@example.net",
      status: "4.4.1",
      action: "delayed",
      diagnosticCode: "X-Postern; connect to mx.example.net[198.51.100.8]:25: Connection timed out",
      willRetryUntil: ARRIVAL + 5 * 86_400_000,
      reason: "connect to mx.example.net[198.51.100.8]:25: Connection timed out",
    }
    const parsed = await parse(buildNonDeliveryReport(input({ recipients: [delayed] })))
    expect(parsed.mail.subject).toBe("Delayed Mail (still being retried)")
    const text = part(parsed, 0).body.toString("latin1")
    expect(text).toContain("THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE.")
    expect(text).toContain("Your message could not be delivered for 0.5 hour(s).")
    expect(text).toContain("It will be retried until it is 5.0 day(s) old.")
    const g = group(dsnGroups(part(parsed, 1).body), 1)
    expect(g.get("action")).toBe("delayed")
    expect(g.get("status")).toBe("4.4.1")
    expect(g.get("diagnostic-code")).toBe(delayed.diagnosticCode)
    expect(g.get("will-retry-until")).toBe("Sat, 20 Jan 2024 09:30:00 +0000")

    // A mix of failed and delayed recipients is a non-delivery report.
    const mixed = await parse(buildNonDeliveryReport(input({ recipients: [delayed, CAROL] })))
    expect(mixed.mail.subject).toBe("Undelivered Mail Returned to Sender")
  })

  it("cannot be made to add a header through CR/LF in any value", async () => {
    const evil = "\r\nBcc: victim@example.com\r\nX-Injected: yes\r\n\r\n--evil"
    const report = buildNonDeliveryReport(
      input({
        reportingMta: `mx.postern.test${evil}`,
        queueId: `4XyZ01${evil}`,
        originalSender: `alice@example.org>${evil}`,
        envelopeId: `ENV${evil}`,
        recipients: [
          {
            address: `bob@example.net${evil}`,
            originalRecipient: `rfc822;bob@example.net${evil}`,
            status: `5.1.1${evil}`,
            action: "failed",
            diagnosticCode: `smtp; 550 no${evil}`,
            remoteMta: `dns; mx1.example.net${evil}`,
            reason: `no such user${evil}\nX-Also: bad\rX-And: this`,
          },
        ],
      }),
    )
    const parsed = await parse(report)
    expect(parsed.mail.headers.has("bcc")).toBe(false)
    expect(parsed.mail.headers.has("x-injected")).toBe(false)
    expect(parsed.mail.bcc).toBeUndefined()
    expect(parsed.parts).toHaveLength(3)
    for (const p of parsed.parts.slice(0, 2)) {
      expect(p.headers.has("bcc")).toBe(false)
      expect(p.headers.has("x-injected")).toBe(false)
    }
    const to = Array.isArray(parsed.mail.to) ? parsed.mail.to : [parsed.mail.to]
    expect(to.flatMap((a) => a?.value ?? []).map((a) => a.address)).toHaveLength(1)
    const groups = dsnGroups(part(parsed, 1).body)
    expect(groups).toHaveLength(2)
    for (const g of groups) {
      expect(g.has("bcc")).toBe(false)
      expect(g.has("x-injected")).toBe(false)
    }
    // An invalid status code is replaced by the generic one for the action.
    expect(group(groups, 1).get("status")).toBe("5.0.0")
    // Outside the returned original, there are no bare CR or LF.
    const generated = report.subarray(0, report.indexOf("Content-Type: text/rfc822-headers"))
    expect(/\r(?!\n)|(?<!\r)\n/.test(generated.toString("latin1"))).toBe(false)
    // The reason text is kept, on one logical line.
    expect(part(parsed, 0).body.toString("latin1").replace(/\r\n {4}/g, " ")).toContain(
      "no such user Bcc: victim@example.com X-Injected: yes --evil X-Also: bad X-And: this",
    )
  })

  it("keeps generated text 7-bit but the returned original byte-exact", async () => {
    const headers8 = Buffer.concat([
      Buffer.from("Subject: "),
      Buffer.from("Grüße aus Köln", "utf8"),
      Buffer.from("\r\nMessage-ID: <m8@example.org>\r\n\r\n"),
    ])
    const report = buildNonDeliveryReport(
      input({
        originalHeaders: headers8,
        recipients: [{ ...CAROL, reason: "Mailbox „voll“ — über Quota", diagnosticCode: "smtp; 552 Postfach voll ✉" }],
      }),
    )
    const parsed = await parse(report)
    for (const p of parsed.parts.slice(0, 2)) {
      expect([...p.body].every((b) => b < 0x80)).toBe(true)
    }
    expect(part(parsed, 0).body.toString("latin1")).toContain("<carol@example.com>: Mailbox ?voll? ? ?ber Quota")
    expect(group(dsnGroups(part(parsed, 1).body), 1).get("diagnostic-code")).toBe("smtp; 552 Postfach voll ?")
    expect(part(parsed, 2).body.equals(headers8)).toBe(true)
    expect(part(parsed, 2).headers.get("content-transfer-encoding")).toBe("8bit")
    expect(parsed.mail.headers.get("content-transfer-encoding")).toBe("8bit")
  })

  it("writes a non-ASCII final recipient as RFC 6533 utf-8 xtext", async () => {
    const parsed = await parse(
      buildNonDeliveryReport(input({ recipients: [{ ...CAROL, address: "jösé+tag@exämple.net" }] })),
    )
    const g = group(dsnGroups(part(parsed, 1).body), 1)
    expect(g.get("final-recipient")).toBe("utf-8; j\\x{F6}s\\x{E9}\\x{2B}tag@ex\\x{E4}mple.net")
  })

  it("folds long diagnostic codes under 78 columns and keeps every line under 998", async () => {
    const words = Array.from({ length: 60 }, (_, i) => `word${i}`).join(" ")
    const unbreakable = "z".repeat(3000)
    const parsed = await parse(
      buildNonDeliveryReport(
        input({ recipients: [{ ...CAROL, diagnosticCode: `smtp; 550 ${words}`, reason: `${words} ${unbreakable}` }] }),
      ),
    )
    const body = part(parsed, 1).body.toString("latin1")
    for (const line of body.split("\r\n")) expect(line.length).toBeLessThanOrEqual(78)
    expect(group(dsnGroups(part(parsed, 1).body), 1).get("diagnostic-code")).toBe(`smtp; 550 ${words}`)
    for (const line of part(parsed, 0).body.toString("latin1").split("\r\n")) {
      expect(line.length).toBeLessThanOrEqual(998)
    }
  })

  it("adds a type to remote MTA, diagnostic and ORCPT values that lack one", async () => {
    const parsed = await parse(
      buildNonDeliveryReport(
        input({
          recipients: [
            { ...CAROL, remoteMta: "mx.example.com", diagnosticCode: "550 no", originalRecipient: "carol@example.com" },
          ],
        }),
      ),
    )
    const g = group(dsnGroups(part(parsed, 1).body), 1)
    expect(g.get("remote-mta")).toBe("dns; mx.example.com")
    expect(g.get("diagnostic-code")).toBe("smtp; 550 no")
    expect(g.get("original-recipient")).toBe("rfc822; carol@example.com")
  })

  it("is deterministic: the same input gives the same bytes", () => {
    const a = buildNonDeliveryReport(input({ ret: "FULL" }))
    const b = buildNonDeliveryReport(input({ ret: "FULL" }))
    expect(a.equals(b)).toBe(true)
    const c = buildNonDeliveryReport(input({ ret: "FULL", boundarySeed: "other" }))
    expect(a.equals(c)).toBe(false)
    const msgId = (buf: Buffer) => /^Message-Id: (.*)\r$/m.exec(buf.toString("latin1"))?.[1]
    expect(msgId(a)).not.toBe(msgId(c))
    const d = buildNonDeliveryReport(input({ ret: "FULL", queueId: "5AbC02" }))
    expect(msgId(a)).not.toBe(msgId(d))
  })

  it("picks another boundary when the returned original contains it", async () => {
    const first = await parse(buildNonDeliveryReport(input({ ret: "FULL" })))
    const hostile = Buffer.from(`${ORIGINAL_HEADERS}text\r\n--${first.boundary}\r\nContent-Type: text/html\r\n\r\nx\r\n--${first.boundary}--\r\n`)
    const parsed = await parse(buildNonDeliveryReport(input({ ret: "FULL", originalMessage: hostile })))
    expect(parsed.boundary).not.toBe(first.boundary)
    expect(parsed.parts).toHaveLength(3)
    expect(part(parsed, 2).body.equals(hostile)).toBe(true)
  })

  it("uses the success wording when nothing failed or was delayed", async () => {
    const parsed = await parse(
      buildNonDeliveryReport(input({ recipients: [{ ...CAROL, action: "relayed", status: "2.0.0", reason: "relayed to non-DSN-aware mailer" }] })),
    )
    expect(parsed.mail.subject).toBe("Successful Mail Delivery Report")
    expect(part(parsed, 2).headers.get("content-description")).toBe("Message Headers")
  })

  it("rejects a report without recipients or sender", () => {
    expect(() => buildNonDeliveryReport(input({ recipients: [] }))).toThrow(RangeError)
    expect(() => buildNonDeliveryReport(input({ originalSender: "" }))).toThrow(RangeError)
    expect(() => buildNonDeliveryReport(input({ now: Number.NaN }))).toThrow(RangeError)
  })
})

describe("extractHeaderSection", () => {
  it("stops after the first CRLFCRLF", () => {
    const m = Buffer.from("A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore")
    expect(extractHeaderSection(m).toString()).toBe("A: 1\r\nB: 2\r\n\r\n")
  })
  it("stops after the first LFLF", () => {
    const m = Buffer.from("A: 1\nB: 2\n\nbody\n")
    expect(extractHeaderSection(m).toString()).toBe("A: 1\nB: 2\n\n")
  })
  it("takes whichever separator comes first", () => {
    expect(extractHeaderSection(Buffer.from("A: 1\n\nb\r\n\r\nc")).toString()).toBe("A: 1\n\n")
    expect(extractHeaderSection(Buffer.from("A: 1\r\n\r\nb\n\nc")).toString()).toBe("A: 1\r\n\r\n")
  })
  it("returns the whole message without a separator", () => {
    const m = Buffer.from("A: 1\r\nB: 2\r\n")
    expect(extractHeaderSection(m).equals(m)).toBe(true)
  })
  it("returns an empty header section for a message that starts with a blank line", () => {
    expect(extractHeaderSection(Buffer.from("\r\nbody")).toString()).toBe("\r\n")
  })
  it("keeps 8-bit bytes", () => {
    const m = Buffer.from([0x53, 0x3a, 0x20, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a, 0x62])
    expect(extractHeaderSection(m).equals(m.subarray(0, 9))).toBe(true)
  })
})
