// One outbound SMTP or LMTP session over nodemailer's SMTPConnection (the well-kept client we build on):
// connect + greeting + EHLO, then any number of mail transactions with RSET between them. Every failure
// comes back as an AttemptResult for smtp-outcome.ts, never as a thrown error.
import { connect as netConnect } from "node:net"
import type { Readable } from "node:stream"
import SMTPConnection from "nodemailer/lib/smtp-connection"
import type { AttemptResult, RcptRejection } from "./smtp-outcome.js"
import type { Target } from "./mx.js"

export interface SessionOptions {
  readonly target: Target
  readonly heloName: string
  readonly lmtp: boolean
  readonly connectTimeout: number
  readonly heloTimeout: number
  readonly dataTimeout: number
}

export interface OutboundEnvelope {
  /** '' for the null sender. */
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly size: number
  readonly eightBit: boolean
}

type NodemailerError = Error & {
  code?: string | undefined
  response?: string | undefined
  responseCode?: number | undefined
  command?: string | undefined
  recipient?: string | undefined
}

const describe = (e: NodemailerError): string => {
  const original = (e as { originalCode?: string }).originalCode
  if (original === "ECONNREFUSED") return "Connection refused"
  if (original === "ECONNRESET") return "Connection reset by peer"
  if (e.code === "ECONNRESET") return "Connection reset by peer"
  if (e.code === "ECONNREFUSED") return "Connection refused"
  if (e.code === "ETIMEDOUT") return "Connection timed out"
  return e.message.replace(/\s+/g, " ").slice(0, 300)
}

/**
 * What the delivery agent needs of an open session. SmtpSession speaks real SMTP over a socket; the
 * simulator provides modelled sessions with the same shape, so the same agent and machines run.
 */
export interface OutboundSession {
  readonly target: Target
  readonly openedAt: number
  readonly usable: boolean
  readonly lastClean: boolean
  readonly relay: string
  supports(extension: string): boolean
  send(envelope: OutboundEnvelope, body: Buffer | Readable): Promise<AttemptResult>
  reset(): Promise<boolean>
  close(): void
}

/** Opens a session to a server, or says where the attempt failed (connect, greeting). */
export type Connector = (options: SessionOptions, now: number) => Promise<OutboundSession | AttemptResult>

export const isSession = (x: OutboundSession | AttemptResult): x is OutboundSession => !("stage" in x)

/** Postfix's smtp_rset_timeout default. */
const RSET_TIMEOUT_MS = 20_000

export class SmtpSession implements OutboundSession {
  /** Transactions completed on this connection. */
  transactions = 0
  /** The last transaction ended with the server's 250 to the message: its state is clean. */
  lastClean = false
  private broken = false
  private constructor(
    private readonly conn: SMTPConnection,
    readonly target: Target,
    readonly openedAt: number,
    private readonly lmtp = false,
  ) {
    conn.on("error", () => {
      this.broken = true
    })
    conn.on("end", () => {
      this.broken = true
    })
  }

  get usable(): boolean {
    return !this.broken
  }

  /** The server's name for logs: host[address]:port. */
  get relay(): string {
    return `${this.target.hostname}[${this.target.address}]:${this.target.port}`
  }

  /** Whether the server announced an ESMTP extension (e.g. "SMTPUTF8"). */
  supports(extension: string): boolean {
    const exts = (this.conn as unknown as { _supportedExtensions?: Array<string> })._supportedExtensions ?? []
    return exts.includes(extension.toUpperCase())
  }

  static open(options: SessionOptions, now: number): Promise<OutboundSession | AttemptResult> {
    return new Promise((resolve) => {
      let settled = false
      const finish = (r: OutboundSession | AttemptResult): void => {
        if (settled) return
        settled = true
        resolve(r)
      }
      // The TCP connect alone is bounded by smtpConnectTimeout (Postfix's smtp_connect_timeout).
      const socket = netConnect({ host: options.target.address, port: options.target.port })
      const connectTimer = setTimeout(() => {
        socket.destroy()
        finish({ stage: "connect", reason: "Connection timed out" })
      }, options.connectTimeout)
      socket.once("error", (e: NodemailerError) => {
        clearTimeout(connectTimer)
        socket.destroy()
        finish({ stage: "connect", reason: describe(Object.assign(e, { originalCode: e.code })) })
      })
      socket.once("connect", () => {
        clearTimeout(connectTimer)
        socket.removeAllListeners("error")
        // Greeting and EHLO: smtpHeloTimeout (smtp_helo_timeout), as the idle timeout of the handshake.
        const conn = new SMTPConnection({
          connection: socket,
          name: options.heloName,
          lmtp: options.lmtp,
          ignoreTLS: true,
          connectionTimeout: options.heloTimeout,
          greetingTimeout: options.heloTimeout,
          socketTimeout: options.heloTimeout,
          logger: false,
          debug: false,
        })
        const phase = (): string =>
          conn.lastServerResponse ? "while performing the EHLO handshake" : "while receiving the initial server greeting"
        conn.once("error", (e: NodemailerError) => {
          const where = phase()
          conn.close()
          if (e.response !== undefined) finish({ stage: "greeting", reply: e.response })
          else finish({ stage: "io", reason: `${describe(e)} ${where}`, sessionCompleted: false })
        })
        conn.connect((err?: NodemailerError) => {
          if (settled) return
          if (err) {
            const where = phase()
            conn.close()
            finish({ stage: "io", reason: `${describe(err)} ${where}`, sessionCompleted: false })
            return
          }
          // A server that names itself with our own hostname is us: the mail would loop (Postfix's
          // "host X greeted me with my own hostname"), so nothing is sent.
          const greeted = /^\d{3}[ -](\S+)/.exec(String(conn.lastServerResponse || ""))?.[1]?.toLowerCase()
          if (greeted !== undefined && greeted === options.heloName.toLowerCase()) {
            conn.close()
            finish({ stage: "local", permanent: true, dsn: "5.4.6", reason: `mail loops back to myself: ${options.target.address}:${options.target.port} greeted me with my own hostname ${options.heloName}` })
            return
          }
          // the session is up: from now on the idle timeout is smtpDataDoneTimeout
          if (conn._socket) conn._socket.setTimeout(options.dataTimeout)
          finish(new SmtpSession(conn, options.target, now, options.lmtp))
        })
      })
    })
  }

  /** One mail transaction. Resolves with where it ended; never rejects. */
  send(envelope: OutboundEnvelope, body: Buffer | Readable): Promise<AttemptResult> {
    const env = {
      from: envelope.from === "" ? (false as const) : envelope.from,
      to: [...envelope.to],
      size: envelope.size,
      use8BitMime: envelope.eightBit,
    }
    return new Promise((resolve) => {
      this.lastClean = false
      this.conn.send(env, body, (err: NodemailerError | null, info) => {
        const state = env as unknown as { accepted?: Array<string>; rejectedErrors?: Array<NodemailerError> }
        const rejected: Array<RcptRejection> = (state.rejectedErrors ?? info?.rejectedErrors ?? []).map((r) => ({
          address: r.recipient ?? "",
          reply: r.response ?? `${r.responseCode ?? 450} ${r.message}`,
        }))
        const accepted = [...(info?.accepted ?? state.accepted ?? [])]
        if (err === null) {
          this.transactions++
          this.lastClean = true
          // LMTP answers once per recipient after DATA; nodemailer keeps the failures (in `rejected`) and
          // leaves only the recipients whose reply was 2xx in `accepted`, without their text.
          const perRecipient = this.lmtp ? accepted.map((address) => ({ address, reply: "250 2.0.0 delivered (LMTP)" })) : undefined
          resolve({ stage: "done", reply: info.response, accepted, rejected, ...(perRecipient !== undefined ? { perRecipient } : {}) })
          return
        }
        if (err.code === "EENVELOPE" && err.command === "MAIL FROM") {
          resolve({ stage: "mail", reply: err.response ?? "451 4.4.0 MAIL FROM failed" })
        } else if (err.code === "EENVELOPE" && err.command === "RCPT TO") {
          // every recipient was refused: the transaction ended cleanly
          this.transactions++
          resolve({ stage: "done", reply: err.response ?? "", accepted: [], rejected })
        } else if ((err.code === "EENVELOPE" || err.code === "EMESSAGE") && err.command === "DATA" && err.response) {
          this.transactions++
          resolve({ stage: "data", reply: err.response, accepted, rejected })
        } else {
          this.broken = true
          resolve({ stage: "io", reason: describe(err), sessionCompleted: this.transactions > 0 })
        }
      })
    })
  }

  /** RSET before reusing a cached session; false when the session is no longer usable. */
  reset(): Promise<boolean> {
    if (this.broken) return Promise.resolve(false)
    return new Promise((resolve) => {
      // Postfix's smtp_rset_timeout: a cached session that does not answer RSET soon is dropped, and the
      // delivery opens a fresh one instead of waiting out the long data timeout.
      let done = false
      const settle = (ok: boolean) => {
        if (done) return
        done = true
        clearTimeout(timer)
        this.conn.removeListener("error", onGone)
        this.conn.removeListener("end", onGone)
        if (!ok) this.broken = true
        resolve(ok)
      }
      // nodemailer drops a pending RSET callback when the socket times out or closes: hear that directly.
      const onGone = () => settle(false)
      const timer = setTimeout(() => {
        this.conn.close()
        settle(false)
      }, RSET_TIMEOUT_MS)
      this.conn.once("error", onGone)
      this.conn.once("end", onGone)
      this.conn.reset((err) => settle(!err))
    })
  }

  close(): void {
    this.broken = true
    try {
      this.conn.quit()
    } catch {
      this.conn.close()
    }
    setTimeout(() => this.conn.close(), 1000).unref()
  }
}
