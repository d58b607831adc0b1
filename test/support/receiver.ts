/**
 * A scripted receiving SMTP/LMTP server on 127.0.0.1 for tests of Postern's delivery side.
 *
 * Built on smtp-server. Notes on its behaviour that the scripts rely on (checked against
 * smtp-server 3.21.6):
 *
 * - An `Error` with `responseCode` handed to a handler callback becomes the single reply line
 *   `<responseCode> <err.message>`. The server would insert its own enhanced status code between
 *   the two (`451 4.3.0 ...`) only with `hideENHANCEDSTATUSCODES: false`; its default is `true`
 *   and this receiver pins it to `true`, so a scripted `{code: 451, message: "4.7.1 try later"}`
 *   goes out as exactly `451 4.7.1 try later`. In return ENHANCEDSTATUSCODES is not advertised
 *   in EHLO and the server's own replies carry no enhanced code (`250 Accepted`).
 * - A success reply to DATA is always code 250 with our text (`250 <message>`); success replies
 *   to MAIL and RCPT are always smtp-server's own `250 Accepted`.
 * - A 421 reply makes smtp-server close the connection after sending it.
 * - Control characters (CR, LF, ...) in a reply text are replaced with spaces: one line only.
 * - smtp-server waits 100 ms before it sends the greeting (early-talker detection).
 */
import type { Socket } from "node:net"
import { SMTPServer } from "smtp-server"
import type { SMTPServerAddress, SMTPServerAddressArgs, SMTPServerDataStream, SMTPServerSession } from "smtp-server"

export interface ReceivedMessage {
  /** MAIL FROM address, "" for the null sender */
  readonly from: string
  /** Recipients the message was accepted for (LMTP: only those whose per-recipient reply was 2xx) */
  readonly to: ReadonlyArray<string>
  /** The message as received: dot-unstuffed, without the terminating "." line */
  readonly body: Buffer
  /** Date.now() when the final reply was decided */
  readonly at: number
  /** smtp-server's session id of the connection that carried the message */
  readonly connectionId: string
  /** MAIL FROM parameters, upper-case keys, xtext-decoded; a keyword without a value (SMTPUTF8) maps to "" */
  readonly mailParams: Record<string, string>
  /** RCPT TO parameters per accepted recipient (keyed by the address as the client sent it) */
  readonly rcptParams: Record<string, Record<string, string>>
  /** The message came over TLS (the client used STARTTLS) */
  readonly secure: boolean
}

/** e.g. {code: 451, message: "4.7.1 try again later"}; the message goes out verbatim after the code */
export interface ReplySpec {
  readonly code: number
  readonly message: string
}

export interface ReceiverScript {
  /** Reply to RCPT TO for this recipient on its n-th RCPT (1-based, counted per address across all connections); undefined = accept */
  rcpt?: (address: string, attempt: number) => ReplySpec | undefined
  /** Reply to MAIL FROM; attempt counted per sender address across all connections (1-based); undefined = accept */
  mail?: (from: string, attempt: number) => ReplySpec | undefined
  /**
   * Reply at end of DATA (SMTP) or, in LMTP mode, per recipient.
   * SMTP: called once per message, `to` = all accepted recipients, attempt = n-th DATA on this receiver.
   * LMTP: called once per accepted recipient with `to` = [that recipient], attempt = n-th DATA reply for that address.
   * undefined = accept (250). A 2xx spec accepts with its text (the code sent is always 250).
   */
  data?: (msg: { from: string; to: ReadonlyArray<string> }, attempt: number) => ReplySpec | undefined
  /** EHLO extensions to hide, e.g. ["SMTPUTF8"]. SIZE is never advertised (no size limit is set), so hiding it is a no-op */
  hideExtensions?: ReadonlyArray<"SMTPUTF8" | "PIPELINING" | "8BITMIME" | "SIZE" | "DSN">
  /** Speak LMTP (LHLO, one DATA reply per recipient) instead of SMTP */
  lmtp?: boolean
  /** Offer STARTTLS with this key and certificate (PEM); without it STARTTLS is not offered */
  tls?: { readonly key: string | Buffer; readonly cert: string | Buffer }
  /** Listen on this UNIX-domain socket path instead of a TCP port on 127.0.0.1 (`port` is then 0) */
  socketPath?: string
  /** Wait this long before the reply to end of DATA (a slow server); default 0 */
  dataDelayMs?: number
}

export interface Receiver {
  readonly port: number
  readonly host: "127.0.0.1"
  /** Accepted messages, in order of acceptance */
  readonly messages: ReadonlyArray<ReceivedMessage>
  /** Number of TCP connections accepted since start (not the number currently open) */
  readonly connections: number
  /** The most TCP connections that were open at the same time since start */
  readonly peakConnections: number
  /** How many RCPT TO commands for this address reached the script so far (case-insensitive) */
  readonly rcptAttempts: (address: string) => number
  /** Resolves once at least n messages were accepted; rejects after timeoutMs (default 5000) or on close() */
  waitForMessages(n: number, timeoutMs?: number): Promise<void>
  /** Stops listening and destroys every open client socket; idempotent */
  close(): Promise<void>
}

const HOST = "127.0.0.1" as const
/** Host name in the greeting and the EHLO reply ("220 receiver.postern.test ESMTP") */
export const RECEIVER_NAME = "receiver.postern.test"

interface Waiter {
  readonly n: number
  readonly resolve: () => void
  readonly reject: (err: Error) => void
}

function argsToRecord(args: SMTPServerAddressArgs | false): Record<string, string> {
  const out: Record<string, string> = {}
  if (!args) return out
  for (const [key, value] of Object.entries(args)) out[key] = value === true ? "" : value
  return out
}

/** An smtp-server handler error carrying the scripted reply */
function replyError(spec: ReplySpec): Error & { responseCode: number } {
  return Object.assign(new Error(spec.message), { responseCode: spec.code })
}

type Decision = { readonly accept: true; readonly message?: string } | { readonly accept: false; readonly error: Error }

/** Turns what a script returned (or threw) into accept / reject */
function decide(run: () => ReplySpec | undefined): Decision {
  let spec: ReplySpec | undefined
  try {
    spec = run()
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err)
    return { accept: false, error: replyError({ code: 451, message: `4.3.0 receiver script threw: ${text}` }) }
  }
  if (spec === undefined) return { accept: true }
  if (!Number.isInteger(spec.code) || spec.code < 200 || spec.code > 599 || (spec.code >= 300 && spec.code < 400)) {
    return { accept: false, error: replyError({ code: 451, message: `4.3.0 receiver script gave unsupported reply code ${String(spec.code)}` }) }
  }
  if (spec.code < 300) return { accept: true, message: spec.message }
  return { accept: false, error: replyError(spec) }
}

function bump(counter: Map<string, number>, address: string): number {
  const key = address.toLowerCase()
  const n = (counter.get(key) ?? 0) + 1
  counter.set(key, n)
  return n
}

export function startReceiver(script: ReceiverScript = {}): Promise<Receiver> {
  const hidden = new Set<string>(script.hideExtensions ?? [])
  const lmtp = script.lmtp === true

  const messages: ReceivedMessage[] = []
  const rcptCounts = new Map<string, number>()
  const mailCounts = new Map<string, number>()
  const lmtpDataCounts = new Map<string, number>()
  let dataCount = 0
  let connectionCount = 0
  let peakConnections = 0
  const sockets = new Set<Socket>()
  let waiters: Waiter[] = []

  const notify = (): void => {
    const ready = waiters.filter((w) => messages.length >= w.n)
    waiters = waiters.filter((w) => messages.length < w.n)
    for (const w of ready) w.resolve()
  }

  const record = (session: SMTPServerSession, body: Buffer, to: ReadonlyArray<string>): void => {
    const mailFrom = session.envelope.mailFrom
    const rcptParams: Record<string, Record<string, string>> = {}
    for (const rcpt of session.envelope.rcptTo) {
      if (to.includes(rcpt.address)) rcptParams[rcpt.address] = argsToRecord(rcpt.args)
    }
    messages.push({
      from: mailFrom ? mailFrom.address : "",
      to: [...to],
      body,
      at: Date.now(),
      connectionId: session.id,
      mailParams: mailFrom ? argsToRecord(mailFrom.args) : {},
      rcptParams,
      secure: session.secure,
    })
    notify()
  }

  const server = new SMTPServer({
    name: RECEIVER_NAME,
    lmtp,
    disabledCommands: script.tls !== undefined ? ["AUTH"] : ["AUTH", "STARTTLS"],
    ...(script.tls !== undefined ? { key: script.tls.key, cert: script.tls.cert } : {}),
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    hideSMTPUTF8: hidden.has("SMTPUTF8"),
    hidePIPELINING: hidden.has("PIPELINING"),
    hide8BITMIME: hidden.has("8BITMIME"),
    // smtp-server hides DSN by default; advertise it unless the script hides it
    hideDSN: hidden.has("DSN"),
    // pinned (it is smtp-server's default): scripted texts already start with an enhanced code
    hideENHANCEDSTATUSCODES: true,

    onMailFrom(address: SMTPServerAddress, _session: SMTPServerSession, callback: (err?: Error | null) => void): void {
      const attempt = bump(mailCounts, address.address)
      const script_ = script.mail
      if (!script_) return callback()
      const d = decide(() => script_(address.address, attempt))
      callback(d.accept ? null : d.error)
    },

    onRcptTo(address: SMTPServerAddress, _session: SMTPServerSession, callback: (err?: Error | null) => void): void {
      const attempt = bump(rcptCounts, address.address)
      const script_ = script.rcpt
      if (!script_) return callback()
      const d = decide(() => script_(address.address, attempt))
      callback(d.accept ? null : d.error)
    },

    onData(
      stream: SMTPServerDataStream,
      session: SMTPServerSession,
      callback: (err?: Error | null, message?: string | Array<string | Error>) => void,
    ): void {
      const chunks: Buffer[] = []
      let done = false
      stream.on("data", (chunk: Buffer) => chunks.push(chunk))
      // the client went away mid-message: smtp-server destroys the stream, nobody to answer
      stream.on("error", () => {
        done = true
      })
      stream.on("end", () => (script.dataDelayMs ? setTimeout(finish, script.dataDelayMs) : finish()))
      const finish = (): void => {
        if (done) return
        done = true
        const body = Buffer.concat(chunks)
        const mailFrom = session.envelope.mailFrom
        const from = mailFrom ? mailFrom.address : ""
        const recipients = session.envelope.rcptTo.map((r) => r.address)

        if (!lmtp) {
          const attempt = ++dataCount
          const d = script.data ? decide(() => script.data?.({ from, to: recipients }, attempt)) : ({ accept: true } as const)
          if (!d.accept) return callback(d.error)
          record(session, body, recipients)
          return callback(null, d.message ?? "Ok: message accepted")
        }

        const replies: Array<string | Error> = []
        const accepted: string[] = []
        for (const rcpt of recipients) {
          const attempt = bump(lmtpDataCounts, rcpt)
          const d = script.data ? decide(() => script.data?.({ from, to: [rcpt] }, attempt)) : ({ accept: true } as const)
          if (d.accept) {
            accepted.push(rcpt)
            replies.push(d.message ?? `Ok: delivered to ${rcpt}`)
          } else {
            replies.push(d.error)
          }
        }
        if (accepted.length > 0) record(session, body, accepted)
        callback(null, replies)
      }
    },
  })

  // connection-level errors (client reset etc.) must not become unhandled 'error' events
  server.on("error", () => undefined)
  server.server.on("connection", (socket: Socket) => {
    connectionCount++
    sockets.add(socket)
    peakConnections = Math.max(peakConnections, sockets.size)
    socket.once("close", () => sockets.delete(socket))
  })

  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      // smtp-server's close() waits (closeTimeout, 30 s by default) for clients to leave;
      // destroying their sockets lets the listener close right away
      server.close(() => resolve())
      for (const socket of sockets) socket.destroy()
      sockets.clear()
      const pending = waiters
      waiters = []
      for (const w of pending) w.reject(new Error(`receiver: closed while waiting for ${w.n} message(s), have ${messages.length}`))
    })
    return closing
  }

  return new Promise<Receiver>((resolve, reject) => {
    const onListenError = (err: Error): void => reject(err)
    server.server.once("error", onListenError)
    const onListening = (): void => {
      server.server.off("error", onListenError)
      const address = server.server.address()
      if (address === null || (typeof address === "string") !== (script.socketPath !== undefined)) {
        reject(new Error("receiver: listener has no address of the kind asked for"))
        return
      }
      const port = typeof address === "string" ? 0 : address.port
      resolve({
        port,
        host: HOST,
        get messages(): ReadonlyArray<ReceivedMessage> {
          return messages
        },
        get connections(): number {
          return connectionCount
        },
        get peakConnections(): number {
          return peakConnections
        },
        rcptAttempts: (addr: string): number => rcptCounts.get(addr.toLowerCase()) ?? 0,
        waitForMessages(n: number, timeoutMs = 5000): Promise<void> {
          if (messages.length >= n) return Promise.resolve()
          return new Promise<void>((res, rej) => {
            const timer = setTimeout(() => {
              waiters = waiters.filter((w) => w !== waiter)
              rej(new Error(`receiver: timed out after ${timeoutMs} ms waiting for ${n} message(s), have ${messages.length}`))
            }, timeoutMs)
            const waiter: Waiter = {
              n,
              resolve: () => {
                clearTimeout(timer)
                res()
              },
              reject: (err: Error) => {
                clearTimeout(timer)
                rej(err)
              },
            }
            waiters.push(waiter)
          })
        },
        close,
      })
    }
    if (script.socketPath !== undefined) server.listen(script.socketPath, onListening)
    else server.listen(0, HOST, onListening)
  })
}
