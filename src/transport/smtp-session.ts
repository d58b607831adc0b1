// One outbound SMTP or LMTP session over nodemailer's SMTPConnection (the well-kept client we build on):
// connect (TCP, or a UNIX socket for LMTP) + greeting + EHLO/LHLO + STARTTLS as the TLS level asks, then
// any number of mail transactions with RSET between them. Every failure comes back as an AttemptResult
// for smtp-outcome.ts, never as a thrown error.
import { connect as netConnect, type Socket } from "node:net"
import type { Readable } from "node:stream"
import type { TLSSocket } from "node:tls"
import SMTPConnection from "nodemailer/lib/smtp-connection"
import { describeTarget, type Target } from "./mx.js"
import type { AttemptResult, RcptRejection } from "./smtp-outcome.js"
import { startTls, type SessionTls } from "./starttls.js"
import type { TlsInfo } from "./tls-check.js"

export type { SessionTls }

export interface SessionOptions {
  readonly target: Target
  readonly heloName: string
  readonly lmtp: boolean
  readonly connectTimeout: number
  readonly heloTimeout: number
  readonly dataTimeout: number
  readonly tls: SessionTls
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
  if (original === "ENOENT" || e.code === "ENOENT") return "No such file or directory"
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
  /** The TLS of this session, or null in plaintext (modelled sessions leave it out). */
  readonly tls?: TlsInfo | null
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

/** nodemailer keeps no text for the LMTP recipients it accepted after DATA; this is where it hears each one. */
type LmtpStreamAction = (recipient: string, final: boolean, str: string, callback: unknown) => void

/**
 * Records every per-recipient reply an LMTP server sends after the final dot, by wrapping the instance's
 * handler of those replies (nodemailer's `_actionLMTPStream`, called once per recipient). Null when this
 * nodemailer has no such handler: LMTP delivery then refuses to run rather than invent replies.
 */
const recordLmtpReplies = (conn: SMTPConnection, replies: Map<string, string>): boolean => {
  const internals = conn as unknown as { _actionLMTPStream?: LmtpStreamAction }
  const original = internals._actionLMTPStream
  if (typeof original !== "function") return false
  internals._actionLMTPStream = function (this: unknown, recipient, final, str, callback) {
    replies.set(recipient, str)
    original.call(this, recipient, final, str, callback)
  }
  return true
}

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
    readonly tls: TlsInfo | null,
    /** LMTP: the replies after DATA of the transaction in progress, by recipient; null for SMTP. */
    private readonly lmtpReplies: Map<string, string> | null,
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

  /** The server's name for logs: host[address]:port (host[/path] for a UNIX socket). */
  get relay(): string {
    return describeTarget(this.target)
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
      const { target } = options
      // The connect alone is bounded by smtpConnectTimeout (Postfix's smtp_connect_timeout).
      const socket: Socket =
        target.socketPath !== undefined ? netConnect({ path: target.socketPath }) : netConnect({ host: target.address, port: target.port })
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
        const starttls = startTls(options.tls, target)
        // Greeting and EHLO: smtpHeloTimeout (smtp_helo_timeout), as the idle timeout of the handshake.
        const conn = new SMTPConnection({
          connection: socket,
          ...starttls.connectionOptions,
          name: options.heloName,
          lmtp: options.lmtp,
          connectionTimeout: options.heloTimeout,
          greetingTimeout: options.heloTimeout,
          socketTimeout: options.heloTimeout,
          logger: false,
          debug: false,
        })
        const lmtpReplies = options.lmtp ? new Map<string, string>() : null
        if (lmtpReplies !== null && !recordLmtpReplies(conn, lmtpReplies)) {
          conn.close()
          finish({ stage: "local", permanent: false, dsn: "4.3.5", reason: "this nodemailer cannot report LMTP replies per recipient (no _actionLMTPStream)" })
          return
        }
        const phase = (): string =>
          conn.lastServerResponse ? "while performing the EHLO handshake" : "while receiving the initial server greeting"
        conn.once("error", (e: NodemailerError) => {
          const failure = starttls.failure(e, conn.upgrading === true, describe(e))
          conn.close()
          if (failure !== null) finish(failure)
          else if (e.response !== undefined) finish({ stage: "greeting", reply: e.response })
          else finish({ stage: "io", reason: `${describe(e)} ${phase()}`, sessionCompleted: false })
        })
        conn.connect((err?: NodemailerError) => {
          if (settled) return
          if (err) {
            const failure = starttls.failure(err, conn.upgrading === true, describe(err))
            conn.close()
            finish(failure ?? { stage: "io", reason: `${describe(err)} ${phase()}`, sessionCompleted: false })
            return
          }
          // A server that names itself with our own hostname is us: the mail would loop (Postfix's
          // "host X greeted me with my own hostname"), so nothing is sent. Not for LMTP: a local delivery
          // agent may well share our name, and Postfix's lmtp(8) does no loop detection either.
          const greeted = /^\d{3}[ -](\S+)/.exec(String(conn.lastServerResponse || ""))?.[1]?.toLowerCase()
          if (!options.lmtp && greeted !== undefined && greeted === options.heloName.toLowerCase()) {
            conn.close()
            finish({ stage: "local", permanent: true, dsn: "5.4.6", reason: `mail loops back to myself: ${target.address}:${target.port} greeted me with my own hostname ${options.heloName}` })
            return
          }
          const tls = starttls.judge(conn.secure && conn._socket ? (conn._socket as TLSSocket) : null)
          if (!tls.ok) {
            conn.close()
            finish(tls.result)
            return
          }
          // the session is up: from now on the idle timeout is smtpDataDoneTimeout
          if (conn._socket) conn._socket.setTimeout(options.dataTimeout)
          finish(new SmtpSession(conn, target, now, tls.info, lmtpReplies))
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
    this.lmtpReplies?.clear()
    return new Promise((resolve) => {
      this.lastClean = false
      this.conn.send(env, body, (err: NodemailerError | null, info) => {
        const state = env as unknown as { accepted?: Array<string>; rejectedErrors?: Array<NodemailerError> }
        const errors = state.rejectedErrors ?? info?.rejectedErrors ?? []
        const rejectionOf = (r: NodemailerError): RcptRejection => ({
          address: r.recipient ?? "",
          reply: r.response ?? `${r.responseCode ?? 450} ${r.message}`,
        })
        const rejected: Array<RcptRejection> = errors.map(rejectionOf)
        const accepted = [...(info?.accepted ?? state.accepted ?? [])]
        if (err === null) {
          this.transactions++
          this.lastClean = true
          if (this.lmtpReplies !== null) {
            // LMTP answers once per recipient after DATA, each with its own code and text: those are the
            // outcomes. `rejected` keeps only the refusals at RCPT (nodemailer lists both kinds there).
            const perRecipient = [...this.lmtpReplies].map(([address, reply]) => ({ address, reply }))
            resolve({
              stage: "done",
              reply: info.response,
              accepted: perRecipient.map((p) => p.address),
              rejected: errors.filter((r) => r.command !== "DATA").map(rejectionOf),
              perRecipient,
            })
            return
          }
          resolve({ stage: "done", reply: info.response, accepted, rejected })
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
