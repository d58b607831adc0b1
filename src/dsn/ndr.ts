/**
 * Delivery status notifications (RFC 3464 `multipart/report; report-type=delivery-status`), laid out the way
 * Postfix's bounce(8) writes them (src/bounce/bounce_notify_util.c): a human-readable part, a
 * `message/delivery-status` part, and the returned original (headers or full message).
 *
 * Everything here is pure: the current time, the queue id and the boundary / Message-ID material are inputs, so
 * the same input always produces the same bytes.
 */
import { createHash } from "node:crypto"

export interface BouncedRecipient {
  readonly address: string // final recipient (rfc822)
  readonly originalRecipient?: string // ORCPT value if the client gave one, e.g. "rfc822;a@b"
  readonly status: string // enhanced status code, "5.1.1"
  readonly action: "failed" | "delayed" | "delivered" | "relayed" | "expanded"
  readonly diagnosticCode?: string // "smtp; 550 5.1.1 <a@b>: no such user"
  readonly remoteMta?: string // "dns; mx.example.com"
  readonly lastAttemptAt?: number // epoch ms
  /** Epoch ms; written as `Will-Retry-Until:` (meaningful for action "delayed"). */
  readonly willRetryUntil?: number
  readonly reason: string // human text for the first part
}

export interface NdrInput {
  readonly reportingMta: string // our hostname
  readonly queueId: string
  readonly originalSender: string // envelope sender of the bounced mail (non-empty)
  readonly arrivalAt: number // epoch ms
  readonly now: number // epoch ms (Date: header, and Message-ID uniqueness with queueId)
  readonly envelopeId?: string // DSN ENVID (already xtext-decoded)
  readonly ret?: "FULL" | "HDRS" // DSN RET; default HDRS
  readonly recipients: ReadonlyArray<BouncedRecipient>
  readonly originalHeaders: Buffer // header section of the bounced message (up to the blank line)
  readonly originalMessage?: Buffer // whole original message, used when ret=FULL (truncated at bounceSizeLimit)
  readonly bounceSizeLimit?: number // default 50000
  readonly boundarySeed: string // deterministic boundary/Message-ID material supplied by the caller
}

export const DEFAULT_BOUNCE_SIZE_LIMIT = 50_000

const CRLF = "\r\n"
const MAX_LINE = 78 // soft limit for the lines we generate (RFC 5322 2.1.1)
const MAX_UNBREAKABLE = 900 // hard-split longer runs without whitespace, well under the 998 limit

type ReportKind = "failure" | "delay" | "success"

/**
 * The header section of a message: the bytes up to and including the first empty line (CRLFCRLF or LFLF,
 * whichever comes first). The whole message when there is no body separator.
 */
export function extractHeaderSection(message: Buffer): Buffer {
  // A message that starts with an empty line has an empty header section.
  if (message[0] === 0x0a) return message.subarray(0, 1)
  if (message[0] === 0x0d && message[1] === 0x0a) return message.subarray(0, 2)
  // "\n\r\n" covers CRLFCRLF (and LF CRLF); "\n\n" covers LFLF.
  const ends: number[] = []
  const crlf = message.indexOf("\n\r\n", 0, "latin1")
  if (crlf >= 0) ends.push(crlf + 3)
  const lf = message.indexOf("\n\n", 0, "latin1")
  if (lf >= 0) ends.push(lf + 2)
  if (ends.length === 0) return message
  return message.subarray(0, Math.min(...ends))
}

export function buildNonDeliveryReport(input: NdrInput): Buffer {
  const host = sanitizeHost(input.reportingMta)
  if (host === "") throw new RangeError("ndr: reportingMta is empty")
  const sender = sanitizeAddress(input.originalSender)
  if (sender === "") throw new RangeError("ndr: originalSender is empty (never bounce to the null sender)")
  if (input.recipients.length === 0) throw new RangeError("ndr: no recipients to report")
  const now = checkTime(input.now, "now")
  const arrivalAt = checkTime(input.arrivalAt, "arrivalAt")
  const limit = input.bounceSizeLimit ?? DEFAULT_BOUNCE_SIZE_LIMIT
  if (!Number.isFinite(limit) || limit < 0) throw new RangeError(`ndr: bad bounceSizeLimit ${String(limit)}`)

  const kind = reportKind(input.recipients)
  const queueId = sanitizeText(input.queueId)

  // Part 3: the returned original.
  const full = input.ret === "FULL" && input.originalMessage !== undefined
  const returned = truncateAtLine(full ? (input.originalMessage ?? Buffer.alloc(0)) : input.originalHeaders, limit)
  const returnedIs8bit = has8bit(returned)

  const part1 = humanText(kind, host, input, now, arrivalAt)
  const part2 = deliveryStatus(host, queueId, sender, arrivalAt, input)

  const boundary = chooseBoundary(queueId, input.boundarySeed, host, [Buffer.from(part1, "utf8"), Buffer.from(part2, "utf8"), returned])
  const token = seedToken(input.boundarySeed)

  // Top-level header section.
  const headers: string[] = []
  headers.push(`From: MAILER-DAEMON@${host} (Mail Delivery System)`)
  headers.push(`Subject: ${SUBJECT[kind]}`)
  headers.push(`To: <${sender}>`)
  const origId = originalMessageId(input.originalHeaders)
  if (origId !== undefined) {
    headers.push(`In-Reply-To: ${origId}`)
    headers.push(`References: ${origId}`)
  }
  headers.push("Auto-Submitted: auto-replied")
  headers.push("MIME-Version: 1.0")
  headers.push(`Content-Type: multipart/report; report-type=delivery-status;${CRLF}\tboundary="${boundary}"`)
  headers.push(`Content-Transfer-Encoding: ${returnedIs8bit ? "8bit" : "7bit"}`)
  headers.push(`Date: ${rfc5322Date(now)}`)
  headers.push(`Message-Id: <${compactStamp(now)}.${atomize(queueId)}.${token}@${host}>`)

  const undelivered = kind === "success" ? "" : "Undelivered "
  const part3Head: string[] = [
    `Content-Description: ${undelivered}${full ? "Message" : "Message Headers"}`,
    `Content-Type: ${full ? "message/rfc822" : "text/rfc822-headers"}`,
  ]
  if (returnedIs8bit) part3Head.push("Content-Transfer-Encoding: 8bit")

  const head =
    headers.join(CRLF) +
    CRLF +
    CRLF +
    "This is a MIME-encapsulated message." +
    CRLF +
    CRLF +
    `--${boundary}${CRLF}` +
    `Content-Description: Notification${CRLF}` +
    `Content-Type: text/plain; charset=us-ascii${CRLF}` +
    CRLF +
    part1 +
    CRLF +
    `--${boundary}${CRLF}` +
    `Content-Description: Delivery report${CRLF}` +
    `Content-Type: message/delivery-status${CRLF}` +
    CRLF +
    part2 +
    CRLF +
    `--${boundary}${CRLF}` +
    part3Head.join(CRLF) +
    CRLF +
    CRLF

  // The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1): always add one, so the returned bytes,
  // including their last line end, come back unchanged.
  const tail = `${CRLF}--${boundary}--${CRLF}`
  // Parts 1 and 2 are pure ASCII; only the To: header can carry UTF-8 (an SMTPUTF8 sender).
  return Buffer.concat([Buffer.from(head, "utf8"), returned, Buffer.from(tail, "utf8")])
}

// ---------------------------------------------------------------------------------------------------------------
// Parts 1 and 2

const SUBJECT: Record<ReportKind, string> = {
  failure: "Undelivered Mail Returned to Sender",
  delay: "Delayed Mail (still being retried)",
  success: "Successful Mail Delivery Report",
}

/** Any failure makes it a non-delivery report; otherwise any delay makes it a delay warning; else a success report. */
function reportKind(recipients: ReadonlyArray<BouncedRecipient>): ReportKind {
  if (recipients.some((r) => r.action === "failed")) return "failure"
  if (recipients.some((r) => r.action === "delayed")) return "delay"
  return "success"
}

function humanText(kind: ReportKind, host: string, input: NdrInput, now: number, arrivalAt: number): string {
  const lines: string[] = [`This is the mail system at host ${host}.`, ""]
  if (kind === "failure") {
    lines.push(
      "I'm sorry to have to inform you that your message could not",
      "be delivered to one or more recipients. It's attached below.",
      "",
      "For further assistance, please send mail to postmaster.",
      "",
      "If you do so, please include this problem report. You can",
      "delete your own text from the attached returned message.",
    )
  } else if (kind === "delay") {
    const hours = (Math.max(0, now - arrivalAt) / 3_600_000).toFixed(1)
    lines.push(
      "####################################################################",
      "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
      "####################################################################",
      "",
      `Your message could not be delivered for ${hours} hour(s).`,
    )
    const until = input.recipients
      .filter((r) => r.action === "delayed" && r.willRetryUntil !== undefined && Number.isFinite(r.willRetryUntil))
      .map((r) => r.willRetryUntil as number)
    if (until.length > 0) {
      const days = (Math.max(0, Math.max(...until) - arrivalAt) / 86_400_000).toFixed(1)
      lines.push(`It will be retried until it is ${days} day(s) old.`)
    }
    lines.push(
      "",
      "For further assistance, please send mail to postmaster.",
      "",
      "If you do so, please include this problem report. You can",
      "delete your own text from the attached returned message.",
    )
  } else {
    lines.push(
      "Your message was successfully delivered to the destination(s)",
      "listed below. If the message was delivered to mailbox you will",
      "receive no further notifications. Otherwise you may still receive",
      "notifications of mail delivery errors from other systems.",
    )
  }
  lines.push("", "                   The mail system", "")
  for (const r of input.recipients) {
    const addr = sanitizeText(stripBrackets(r.address))
    const reason = sanitizeText(r.reason)
    lines.push(...wrapText(`<${addr}>: ${reason === "" ? r.action : reason}`, 76, "    "))
  }
  return lines.join(CRLF) + CRLF
}

function deliveryStatus(host: string, queueId: string, sender: string, arrivalAt: number, input: NdrInput): string {
  const groups: string[][] = []
  const perMessage: string[] = [
    field("Reporting-MTA", `dns; ${host}`),
    field("X-Postern-Queue-ID", queueId),
    field("X-Postern-Sender", addressField(sender)),
    field("Arrival-Date", rfc5322Date(arrivalAt)),
  ]
  if (input.envelopeId !== undefined) {
    const envid = sanitizeText(input.envelopeId)
    if (envid !== "") perMessage.push(field("Original-Envelope-Id", envid))
  }
  groups.push(perMessage)

  for (const r of input.recipients) {
    const g: string[] = [field("Final-Recipient", addressField(sanitizeAddress(r.address)))]
    const orcpt = typed(r.originalRecipient, "rfc822")
    if (orcpt !== undefined) g.push(field("Original-Recipient", orcpt))
    g.push(field("Action", r.action))
    g.push(field("Status", statusCode(r.status, r.action)))
    const mta = typed(r.remoteMta, "dns")
    if (mta !== undefined) g.push(field("Remote-MTA", mta))
    const diag = typed(r.diagnosticCode, "smtp")
    if (diag !== undefined) g.push(field("Diagnostic-Code", diag))
    if (r.lastAttemptAt !== undefined) g.push(field("Last-Attempt-Date", rfc5322Date(checkTime(r.lastAttemptAt, "lastAttemptAt"))))
    if (r.willRetryUntil !== undefined && r.action === "delayed") {
      g.push(field("Will-Retry-Until", rfc5322Date(checkTime(r.willRetryUntil, "willRetryUntil"))))
    }
    groups.push(g)
  }
  // Groups are separated by one blank line; each field line ends in CRLF.
  return groups.map((g) => g.join(CRLF) + CRLF).join(CRLF)
}

/**
 * "rfc822; addr" for an ASCII address; "utf-8; addr" with RFC 6533 utf-8-addr-xtext otherwise, so that the
 * message/delivery-status part stays 7-bit.
 */
function addressField(addr: string): string {
  if (/^[\x21-\x7e]*$/.test(addr)) return `rfc822; ${addr}`
  let out = ""
  for (const ch of addr) {
    const c = ch.codePointAt(0) ?? 0
    const qchar = c >= 0x21 && c <= 0x7e && c !== 0x2b && c !== 0x3d && c !== 0x5c
    out += qchar ? ch : `\\x{${c.toString(16).toUpperCase()}}`
  }
  return `utf-8; ${out}`
}

/** "type; value": keeps a caller-supplied type ("smtp; ...", "rfc822;a@b"), prepends the default one otherwise. */
function typed(value: string | undefined, defaultType: string): string | undefined {
  if (value === undefined) return undefined
  const v = sanitizeText(value)
  if (v === "") return undefined
  return /^[A-Za-z0-9][A-Za-z0-9-]*\s*;/.test(v) ? v : `${defaultType}; ${v}`
}

function statusCode(status: string, action: BouncedRecipient["action"]): string {
  const s = status.trim()
  if (/^[245]\.\d{1,3}\.\d{1,3}$/.test(s)) return s
  return action === "failed" ? "5.0.0" : action === "delayed" ? "4.0.0" : "2.0.0"
}

// ---------------------------------------------------------------------------------------------------------------
// Sanitizing and formatting

/** One line of text: CR/LF/controls become spaces, non-ASCII becomes "?", whitespace runs collapse. */
function sanitizeText(value: string): string {
  let out = ""
  for (const ch of value) {
    const c = ch.codePointAt(0) ?? 0
    if (c < 0x20 || c === 0x7f) out += " "
    else if (c > 0x7e) out += "?"
    else out += ch
  }
  return out.replace(/ {2,}/g, " ").trim()
}

/**
 * An address for a header or a DSN field: controls, whitespace and angle brackets are removed (so it cannot end
 * an angle-addr or a header line early). Non-ASCII (SMTPUTF8) characters are kept as UTF-8.
 */
function sanitizeAddress(value: string): string {
  return stripBrackets(value.trim()).replace(/[\u0000-\u0020\u007f<>]/g, "")
}

function stripBrackets(value: string): string {
  const v = value.trim()
  return v.startsWith("<") && v.endsWith(">") ? v.slice(1, -1) : v
}

function sanitizeHost(value: string): string {
  return value.replace(/[^A-Za-z0-9.\-:[\]]/g, "")
}

/** Characters allowed in a Message-ID's dot-atom-text, conservatively; no leading, trailing or double dots. */
function atomize(value: string): string {
  const s = value
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .replace(/\.{2,}/g, ".")
    .replace(/^\.+|\.+$/g, "")
  return s === "" ? "_" : s
}

function seedToken(seed: string): string {
  return /^[A-Za-z0-9]{1,32}$/.test(seed) ? seed : createHash("sha256").update(seed, "utf8").digest("hex").slice(0, 24)
}

/** RFC 2046 boundary from queue id, seed and host (Postfix: "queueid.time/host"), changed until no part contains it. */
function chooseBoundary(queueId: string, seed: string, host: string, parts: ReadonlyArray<Buffer>): string {
  const base = `${atomize(queueId)}.${seedToken(seed)}/${host.replace(/[^A-Za-z0-9.:-]/g, "_")}`.slice(0, 64)
  for (let i = 0; ; i++) {
    const candidate = i === 0 ? base : `${base.slice(0, 60)}=${i}`
    if (parts.every((p) => !p.includes(`--${candidate}`, 0, "latin1"))) return candidate
  }
}

/** A header-style field, folded at spaces to about 78 columns; runs without spaces are split at 900 characters. */
function field(name: string, value: string): string {
  const clean = sanitizeText(value)
  const words = clean.split(" ").flatMap((w) => chunk(w, MAX_UNBREAKABLE))
  let line = `${name}:`
  const out: string[] = []
  let first = true
  for (const w of words) {
    if (!first && line.length + 1 + w.length > MAX_LINE) {
      out.push(line)
      line = ` ${w}`
    } else {
      line += ` ${w}`
    }
    first = false
  }
  out.push(line)
  return out.join(CRLF)
}

function chunk(word: string, size: number): string[] {
  if (word.length <= size) return [word]
  const out: string[] = []
  for (let i = 0; i < word.length; i += size) out.push(word.slice(i, i + size))
  return out
}

/** Word-wraps one logical line; continuation lines get `indent` (as Postfix does for per-recipient text). */
function wrapText(text: string, width: number, indent: string): string[] {
  const words = text.split(" ").flatMap((w) => chunk(w, MAX_UNBREAKABLE))
  const out: string[] = []
  let line = ""
  for (const w of words) {
    if (line === "") line = out.length === 0 ? w : indent + w
    else if (line.length + 1 + w.length > width) {
      out.push(line)
      line = indent + w
    } else line += ` ${w}`
  }
  if (line !== "") out.push(line)
  return out
}

/** Cuts at the last line end at or before `limit` bytes (or at `limit` when a single line is longer). */
function truncateAtLine(data: Buffer, limit: number): Buffer {
  if (data.length <= limit) return data
  const lastNl = data.lastIndexOf(0x0a, limit - 1)
  return data.subarray(0, lastNl >= 0 ? lastNl + 1 : limit)
}

function has8bit(data: Buffer): boolean {
  for (const b of data) if (b >= 0x80) return true
  return false
}

/** The original's Message-ID, as `<...>`, if it has a well-formed one. */
function originalMessageId(headers: Buffer): string | undefined {
  const text = headers.toString("latin1")
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ""
    if (line === "") break
    if (!/^message-id[ \t]*:/i.test(line)) continue
    let value = line.slice(line.indexOf(":") + 1)
    for (let j = i + 1; j < lines.length && /^[ \t]/.test(lines[j] ?? ""); j++) value += lines[j]
    const m = /<([^<>\s"]+)>/.exec(value)
    const id = m?.[1]
    if (id === undefined || id.length > 900 || !/^[\x21-\x7e]+$/.test(id)) return undefined
    return `<${id}>`
  }
  return undefined
}

function checkTime(ms: number, what: string): number {
  if (!Number.isFinite(ms)) throw new RangeError(`ndr: ${what} is not a valid time`)
  const d = new Date(ms)
  if (Number.isNaN(d.getTime())) throw new RangeError(`ndr: ${what} is out of range`)
  return ms
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"] as const
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"] as const

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n)
}

/** RFC 5322 date-time in UTC: "Mon, 1 Jan 2024 00:00:00 +0000". */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms)
  const day = DAYS[d.getUTCDay()] ?? "Sun"
  const mon = MONTHS[d.getUTCMonth()] ?? "Jan"
  return (
    `${day}, ${d.getUTCDate()} ${mon} ${d.getUTCFullYear()} ` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`
  )
}

function compactStamp(ms: number): string {
  const d = new Date(ms)
  return (
    `${d.getUTCFullYear()}${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}` +
    `${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}`
  )
}
