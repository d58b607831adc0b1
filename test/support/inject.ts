/**
 * Sends one message to an SMTP server on the loopback interface with nodemailer's SMTP client
 * and reports what the server said. For tests of Postern's receiving side.
 */
import { randomUUID } from "node:crypto"
import { isIPv4, isIPv6 } from "node:net"
import SMTPConnection from "nodemailer/lib/smtp-connection"

export interface InjectResult {
  /** true when the server accepted the message (final DATA reply 2xx), even if some recipients were refused (see `rejected`) */
  readonly ok: boolean
  /** The deciding reply code: the DATA reply when ok, else the failing reply; 0 when there was no SMTP reply (connection error, timeout) */
  readonly code: number
  /** The full reply line of `code`, or the client error message when code is 0 */
  readonly response: string
  /** Parsed from "250 2.0.0 Ok: queued as X" */
  readonly queueId?: string
  /** Recipients refused at RCPT TO, in command order */
  readonly rejected: ReadonlyArray<{ address: string; code: number; response: string }>
}

export interface InjectMessage {
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly body: string | Buffer
  /** default 127.0.0.1; must be a loopback IP literal */
  readonly host?: string
  /** source address to bind, must be a loopback IP literal (e.g. 127.0.0.2) */
  readonly localAddress?: string
  /**
   * true: MAIL FROM always carries SMTPUTF8 (even for ASCII addresses, and even if the server
   * does not advertise it); false: never; unset: nodemailer decides (only for non-ASCII
   * addresses, and only if advertised).
   */
  readonly smtputf8?: boolean
  /** How long to wait for each reply, the final DATA reply included (default 5 s; real clients wait 10 min). */
  readonly replyTimeoutMs?: number
}

/** EHLO name the injector uses */
export const INJECT_CLIENT_NAME = "client.postern.test"

const PHASE_TIMEOUT_MS = 5_000
/** hard cap for the whole exchange, in case a server trickles bytes and defeats the idle timeout */
const OVERALL_TIMEOUT_MS = 20_000
/** how long to wait for the socket to close after QUIT */
const CLOSE_WAIT_MS = 2_000

type SMTPError = SMTPConnection.SMTPError
type SendInfo = SMTPConnection.SentMessageInfo

function isLoopback(address: string): boolean {
  if (isIPv4(address)) return address.startsWith("127.")
  if (isIPv6(address)) return address === "::1" || address === "0:0:0:0:0:0:0:1"
  return false
}

function replyCode(response: string): number {
  const m = /^(\d{3})/.exec(response)
  return m?.[1] !== undefined ? Number(m[1]) : 0
}

function parseQueueId(response: string): string | undefined {
  return /queued as ([^\s]+)/i.exec(response)?.[1]
}

function rejectedOf(errors: ReadonlyArray<SMTPError> | undefined): InjectResult["rejected"] {
  return (errors ?? []).map((e) => ({
    address: e.recipient ?? "",
    code: e.responseCode ?? (e.response !== undefined ? replyCode(e.response) : 0),
    response: e.response ?? e.message,
  }))
}

function resultOfError(err: SMTPError): InjectResult {
  const response = err.response ?? err.message
  return {
    ok: false,
    code: err.responseCode ?? (err.response !== undefined ? replyCode(err.response) : 0),
    response,
    rejected: rejectedOf(err.rejectedErrors),
  }
}

function resultOfInfo(info: SendInfo): InjectResult {
  const queueId = parseQueueId(info.response)
  return {
    ok: true,
    code: replyCode(info.response),
    response: info.response,
    ...(queueId !== undefined ? { queueId } : {}),
    rejected: rejectedOf(info.rejectedErrors),
  }
}

/** Rewrites MAIL FROM to force SMTPUTF8 on or off; hooks nodemailer's internal command writer */
function forceSmtpUtf8(conn: SMTPConnection, on: boolean): void {
  const internals = conn as unknown as { _sendCommand?: (str: string, logStr?: string) => void }
  const original = internals._sendCommand
  if (typeof original !== "function") {
    throw new Error("inject: nodemailer SMTPConnection has no _sendCommand, cannot apply the smtputf8 option")
  }
  internals._sendCommand = function (this: unknown, str: string, logStr?: string): void {
    let cmd = str
    if (/^MAIL FROM:/i.test(cmd)) {
      const hasIt = /\sSMTPUTF8(?=\s|$)/i.test(cmd)
      if (on && !hasIt) cmd += " SMTPUTF8"
      if (!on && hasIt) cmd = cmd.replace(/\sSMTPUTF8(?=\s|$)/gi, "")
    }
    original.call(this, cmd, logStr === str ? cmd : logStr)
  }
}

export async function inject(port: number, msg: InjectMessage): Promise<InjectResult> {
  const host = msg.host ?? "127.0.0.1"
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`inject: bad port ${String(port)}`)
  if (!isLoopback(host)) throw new Error(`inject: host must be a loopback IP literal, got ${JSON.stringify(host)}`)
  if (msg.localAddress !== undefined && !isLoopback(msg.localAddress)) {
    throw new Error(`inject: localAddress must be a loopback IP literal, got ${JSON.stringify(msg.localAddress)}`)
  }
  if (msg.to.length === 0) throw new Error("inject: no recipients")
  for (const addr of [msg.from, ...msg.to]) {
    if (/[\r\n<>]/.test(addr)) throw new Error(`inject: bad address ${JSON.stringify(addr)}`)
  }

  const conn = new SMTPConnection({
    host,
    port,
    name: INJECT_CLIENT_NAME,
    // plaintext on loopback, whatever the server advertises
    ignoreTLS: true,
    connectionTimeout: msg.replyTimeoutMs ?? PHASE_TIMEOUT_MS,
    greetingTimeout: msg.replyTimeoutMs ?? PHASE_TIMEOUT_MS,
    socketTimeout: msg.replyTimeoutMs ?? PHASE_TIMEOUT_MS,
    socketCloseTimeout: 1_000,
    logger: false,
    ...(msg.localAddress !== undefined ? { localAddress: msg.localAddress } : {}),
  })
  if (msg.smtputf8 !== undefined) forceSmtpUtf8(conn, msg.smtputf8)

  const result = await new Promise<InjectResult>((resolve) => {
    let settled = false
    const settle = (r: InjectResult): void => {
      if (settled) return
      settled = true
      clearTimeout(guard)
      resolve(r)
    }
    const guard = setTimeout(() => {
      settle({ ok: false, code: 0, response: `inject: no outcome after ${OVERALL_TIMEOUT_MS} ms`, rejected: [] })
    }, OVERALL_TIMEOUT_MS)

    // nodemailer emits 'error' for connection/protocol failures (and also fails a pending send)
    conn.on("error", (err: SMTPError) => settle(resultOfError(err)))
    conn.once("end", () => settle({ ok: false, code: 0, response: "inject: connection ended", rejected: [] }))

    conn.connect((connectErr?: SMTPError) => {
      if (connectErr) return settle(resultOfError(connectErr))
      conn.send({ from: msg.from, to: [...msg.to] }, msg.body, (err: SMTPError | null, info: SendInfo) => {
        settle(err ? resultOfError(err) : resultOfInfo(info))
      })
    })
  })

  await quitAndWait(conn)
  return result
}

/** QUIT (when the session is still up) and wait, bounded, for the socket to close */
async function quitAndWait(conn: SMTPConnection): Promise<void> {
  const socket = conn._socket
  if (!socket || socket.destroyed) {
    conn.close()
    return
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      conn.close()
      socket.destroy()
      resolve()
    }, CLOSE_WAIT_MS)
    socket.once("close", () => {
      clearTimeout(timer)
      resolve()
    })
    if (conn.destroyed) conn.close()
    else conn.quit()
  })
}

const HEADER_ORDER = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
const LINE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

function rfc5322Date(d: Date): string {
  const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
  const p2 = (n: number): string => String(n).padStart(2, "0")
  return (
    `${days[d.getUTCDay()] ?? "Mon"}, ${p2(d.getUTCDate())} ${months[d.getUTCMonth()] ?? "Jan"} ${d.getUTCFullYear()} ` +
    `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} +0000`
  )
}

/** `count` bytes of body text: CRLF-terminated lines of at most 78 characters, none starting with "." */
function filler(count: number): string {
  const lines = Math.ceil(count / 78)
  const chars = count - 2 * lines
  const base = Math.floor(chars / lines)
  const extra = chars - base * lines
  let out = ""
  let k = 0
  for (let i = 0; i < lines; i++) {
    const len = base + (i < extra ? 1 : 0)
    let line = ""
    for (let j = 0; j < len; j++) line += LINE_CHARS.charAt(k++ % LINE_CHARS.length)
    out += line + "\r\n"
  }
  return out
}

/**
 * A valid RFC 5322 message with CRLF line endings. With `bytes`, the body is padded so that the
 * whole message is exactly `bytes` long (in UTF-8 bytes) when that is more than the headers plus
 * the default one-line body, else the default body is used. `headers` are added after the
 * standard ones and replace a standard one of the same name (case-insensitive).
 */
export function makeMessage(opts: { from: string; to: string; subject?: string; bytes?: number; headers?: Record<string, string> }): string {
  const domain = /@([^@\s>]+)$/.exec(opts.from)?.[1] ?? "localhost"
  const std: Record<string, string> = {
    From: opts.from === "" ? "<>" : `<${opts.from}>`,
    To: `<${opts.to}>`,
    Subject: opts.subject ?? "Postern test message",
    Date: rfc5322Date(new Date()),
    "Message-ID": `<${randomUUID()}@${domain}>`,
    "MIME-Version": "1.0",
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Transfer-Encoding": "8bit",
  }
  const extra = opts.headers ?? {}
  const lines: string[] = []
  const overridden = new Set(Object.keys(extra).map((k) => k.toLowerCase()))
  for (const name of HEADER_ORDER) {
    const value = std[name]
    if (value !== undefined && !overridden.has(name.toLowerCase())) lines.push(`${name}: ${value}`)
  }
  for (const [name, value] of Object.entries(extra)) {
    if (!/^[!-9;-~]+$/.test(name)) throw new Error(`makeMessage: bad header name ${JSON.stringify(name)}`)
    if (/[\r\n]/.test(value)) throw new Error(`makeMessage: header ${name} value contains CR or LF`)
    lines.push(`${name}: ${value}`)
  }
  const head = lines.join("\r\n") + "\r\n\r\n"
  const defaultBody = "This is a Postern test message.\r\n"
  const headBytes = Buffer.byteLength(head, "utf8")
  if (opts.bytes === undefined || opts.bytes <= headBytes + Buffer.byteLength(defaultBody, "utf8")) return head + defaultBody
  return head + filler(opts.bytes - headBytes)
}
