/**
 * A scriptable misbehaving SMTP server on raw `net`, 127.0.0.1 only, for tests of how Postern's SMTP
 * client survives a broken destination.
 *
 * The mode is read when a connection is accepted and holds for that connection's whole life: switching
 * the server to `ok` does not heal a connection that is already hanging, as a real server restarting
 * would not. Modes:
 *
 * - `refuse`             nothing listens on the port: connects get ECONNREFUSED. Leaving `refuse` listens
 *                        again on the same port.
 * - `hangAfterConnect`   accepts, never sends a greeting (reads and discards what the client sends).
 * - `closeAfterConnect`  accepts, then closes cleanly (FIN) before any greeting.
 * - `rst`                accepts, then resets the connection (`socket.resetAndDestroy()`).
 * - `greet421`           sends `421 4.3.2 Service not available` as its greeting and closes.
 * - `greet554`           sends `554 5.3.2 No SMTP service here` as its greeting and closes.
 * - `hangAfterGreeting`  sends the 220 greeting, then never answers anything (EHLO waits forever).
 * - `421MidSession`      a normal dialogue until RCPT TO, which gets `421 4.3.2 ...`; then it closes.
 * - `dropMidData`        a normal dialogue; after `dropAfterBytes` bytes of DATA content it destroys the
 *                        socket (no reply to the message, ever).
 * - `hangAfterDot`       a normal dialogue; the whole message is read but the end-of-data is never answered.
 * - `slow`               a correct server whose every reply goes out one byte per `slowByteMs` (1 s);
 *                        with `slowAfterGreeting` the greeting goes out at once and the rest trickles.
 * - `ok`                 a minimal correct SMTP server that accepts and records messages.
 *
 * With `brokenStartTls` the EHLO reply offers STARTTLS, and STARTTLS is answered `220` followed by bytes
 * that are not TLS, then the connection is dropped: a broken TLS handshake (in any mode that answers EHLO).
 * With `refuseStartTls` STARTTLS is offered and then refused: `454 4.7.0 TLS not available due to local problem`.
 *
 * Every mode but `refuse` may also delay its greeting by `greetDelayMs`. `plan()` scripts the modes of
 * the next few connections (fail once, then work).
 *
 * The dialogue is plain SMTP: EHLO offers 8BITMIME, ENHANCEDSTATUSCODES and SIZE, and PIPELINING only
 * with `pipelining` (commands are answered in order either way). Messages are recorded dot-unstuffed, without the final "." line.
 */
import { createServer, type Server, type Socket } from "node:net"

export type FaultMode =
  | "refuse"
  | "hangAfterConnect"
  | "closeAfterConnect"
  | "rst"
  | "greet421"
  | "greet554"
  | "hangAfterGreeting"
  | "421MidSession"
  | "dropMidData"
  | "hangAfterDot"
  | "slow"
  | "ok"

export interface FaultOptions {
  /** dropMidData: destroy the socket once this many bytes of DATA content arrived (default 512). */
  readonly dropAfterBytes?: number
  /** slow: milliseconds between two bytes of a reply (default 1000). */
  readonly slowByteMs?: number
  /** slow: send the greeting at full speed; only the later replies trickle. */
  readonly slowAfterGreeting?: boolean
  /** Milliseconds to wait before the greeting (default 0). */
  readonly greetDelayMs?: number
  /** Offer PIPELINING in the EHLO reply (default false). */
  readonly pipelining?: boolean
  /** Offer STARTTLS, then break the handshake that follows (see above). */
  readonly brokenStartTls?: boolean
  /** Offer STARTTLS, then refuse it with 454. */
  readonly refuseStartTls?: boolean
}

export interface BadServerMessage {
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly body: Buffer
  readonly at: number
  /** Which connection (1-based, in order of acceptance) carried it. */
  readonly connection: number
}

/** What one accepted connection saw. */
export interface ConnectionRecord {
  /** 1-based, in order of acceptance. */
  readonly id: number
  readonly mode: FaultMode
  readonly openedAt: number
  /** Command lines received, in order (DATA content excluded). */
  readonly commands: ReadonlyArray<string>
  /** Bytes of DATA content received on this connection (all transactions). */
  readonly dataBytes: number
  /** Date.now() when the socket closed, or null while it is open. */
  readonly closedAt: number | null
}

export interface BadServer {
  readonly host: "127.0.0.1"
  readonly port: number
  readonly mode: FaultMode
  /** TCP connections accepted since start (refused connects are not counted: nothing saw them). */
  readonly connections: number
  /** Connections currently open. */
  readonly openConnections: number
  readonly records: ReadonlyArray<ConnectionRecord>
  /** Messages accepted (only an `ok` or `slow` connection accepts any). */
  readonly messages: ReadonlyArray<BadServerMessage>
  /** Switches the behaviour for connections accepted from now on. */
  setMode(mode: FaultMode, options?: FaultOptions): Promise<void>
  /**
   * The next connections take these modes, one each, in order; then the current mode applies again.
   * For a server that fails once and then works (several MX records pointing at it). Not `refuse`.
   */
  plan(modes: ReadonlyArray<Exclude<FaultMode, "refuse">>, options?: FaultOptions): void
  waitForConnections(n: number, timeoutMs?: number): Promise<void>
  waitForMessages(n: number, timeoutMs?: number): Promise<void>
  /** Stops listening and destroys every connection and timer; idempotent. */
  close(): Promise<void>
}

const HOST = "127.0.0.1" as const
export const BAD_SERVER_NAME = "bad.postern.test"
const CRLF = Buffer.from("\r\n")
const END_OF_DATA = Buffer.from("\r\n.\r\n")
/** A command line longer than this is a protocol error; the connection is dropped. */
const MAX_LINE = 4096

interface MutableRecord {
  id: number
  mode: FaultMode
  openedAt: number
  commands: Array<string>
  dataBytes: number
  closedAt: number | null
}

const addressOf = (arg: string): string => /<([^>]*)>/.exec(arg)?.[1] ?? arg.trim()

export async function startBadServer(initial: FaultMode = "ok", initialOptions: FaultOptions = {}): Promise<BadServer> {
  let mode: FaultMode = initial
  let options: FaultOptions = initialOptions
  let port = 0
  let closed = false
  let listener: Server | null = null
  const retired: Array<Server> = []
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()
  const records: Array<MutableRecord> = []
  const planned: Array<{ mode: FaultMode; options: FaultOptions }> = []
  const messages: Array<BadServerMessage> = []
  let waiters: Array<{ ready: () => boolean; resolve: () => void }> = []

  const notify = (): void => {
    const ready = waiters.filter((w) => w.ready())
    waiters = waiters.filter((w) => !ready.includes(w))
    for (const w of ready) w.resolve()
  }

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t)
      fn()
    }, ms)
    timers.add(t)
  }

  const onConnection = (socket: Socket): void => {
    if (closed) {
      socket.destroy()
      return
    }
    const next = planned.shift()
    const m = next?.mode ?? mode
    const o = next?.options ?? options
    const record: MutableRecord = { id: records.length + 1, mode: m, openedAt: Date.now(), commands: [], dataBytes: 0, closedAt: null }
    records.push(record)
    sockets.add(socket)
    socket.on("error", () => undefined)
    socket.once("close", () => {
      sockets.delete(socket)
      record.closedAt = Date.now()
      notify()
    })
    notify()
    serve(socket, m, o, record)
  }

  const serve = (socket: Socket, m: FaultMode, o: FaultOptions, record: MutableRecord): void => {
    if (m === "rst") {
      socket.resetAndDestroy()
      return
    }
    if (m === "closeAfterConnect") {
      socket.end()
      return
    }
    // ---- replies: at once, or one byte at a time
    const outbox: Array<number> = []
    let trickling = false
    const trickle = (): void => {
      if (socket.destroyed) return
      const byte = outbox.shift()
      if (byte === undefined) {
        trickling = false
        if (endAfterOutbox) socket.end()
        return
      }
      socket.write(Buffer.of(byte))
      later(o.slowByteMs ?? 1000, trickle)
    }
    let endAfterOutbox = false
    let greeted = false
    const reply = (text: string, thenClose = false): void => {
      if (socket.destroyed) return
      const bytes = Buffer.from(`${text}\r\n`)
      const isGreeting = !greeted
      greeted = true
      if (m !== "slow" || (isGreeting && o.slowAfterGreeting === true)) {
        socket.write(bytes)
        if (thenClose) socket.end()
        return
      }
      outbox.push(...bytes)
      if (thenClose) endAfterOutbox = true
      if (!trickling) {
        trickling = true
        trickle()
      }
    }

    // ---- the dialogue
    let inData = false
    let data: Buffer = Buffer.alloc(0)
    let lineBuf: Buffer = Buffer.alloc(0)
    let dataBytesBefore = 0
    let from: string | null = null
    let to: Array<string> = []
    let silent = m === "hangAfterConnect" || m === "hangAfterGreeting"

    const command = (line: string): void => {
      record.commands.push(line)
      if (silent) return
      const verb = (/^\S+/.exec(line)?.[0] ?? "").toUpperCase()
      const arg = line.slice(verb.length).trim()
      switch (verb) {
        case "EHLO":
          return reply(
            `250-${BAD_SERVER_NAME}\r\n${o.pipelining === true ? "250-PIPELINING\r\n" : ""}${o.brokenStartTls === true || o.refuseStartTls === true ? "250-STARTTLS\r\n" : ""}250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10240000`,
          )
        case "STARTTLS":
          if (o.refuseStartTls === true) return reply("454 4.7.0 TLS not available due to local problem")
          if (o.brokenStartTls !== true) return reply("502 5.5.2 Error: command not recognized")
          silent = true
          reply("220 2.0.0 Ready to start TLS")
          // what comes back to the client's ClientHello is not a TLS record: the handshake fails
          socket.end("this is not TLS\r\n")
          return
        case "HELO":
        case "LHLO":
          return reply(`250 ${BAD_SERVER_NAME}`)
        case "MAIL":
          from = addressOf(arg.replace(/^FROM:/i, ""))
          to = []
          return reply("250 2.1.0 Ok")
        case "RCPT":
          if (from === null) return reply("503 5.5.1 Error: need MAIL command")
          if (m === "421MidSession") {
            silent = true
            return reply(`421 4.3.2 ${BAD_SERVER_NAME} Service not available, closing transmission channel`, true)
          }
          to.push(addressOf(arg.replace(/^TO:/i, "")))
          return reply("250 2.1.5 Ok")
        case "DATA":
          if (from === null || to.length === 0) return reply("503 5.5.1 Error: need RCPT command")
          inData = true
          // the CRLF that ended the DATA line: "\r\n.\r\n" then also finds an empty message
          data = Buffer.from(CRLF)
          return reply("354 End data with <CR><LF>.<CR><LF>")
        case "RSET":
          from = null
          to = []
          return reply("250 2.0.0 Ok")
        case "NOOP":
          return reply("250 2.0.0 Ok")
        case "QUIT":
          silent = true
          return reply("221 2.0.0 Bye", true)
        default:
          return reply("502 5.5.2 Error: command not recognized")
      }
    }

    const endOfData = (content: Buffer): void => {
      // dot-unstuffing: a line starting with ".." loses its first dot
      const body = Buffer.from(content.toString("latin1").replace(/(^|\r\n)\.\./g, "$1."), "latin1")
      if (m === "hangAfterDot") {
        silent = true
        return
      }
      messages.push({ from: from ?? "", to: [...to], body, at: Date.now(), connection: record.id })
      from = null
      to = []
      reply(`250 2.0.0 Ok: queued as BAD${messages.length}`)
      notify()
    }

    const onBytes = (chunk: Buffer): void => {
      let rest: Buffer = chunk
      while (rest.length > 0 && !socket.destroyed) {
        if (inData) {
          const before = data.length
          data = Buffer.concat([data, rest])
          const end = data.indexOf(END_OF_DATA, Math.max(0, before - END_OF_DATA.length))
          // content of this transaction so far (the CRLF sentinel and the final "." line excluded)
          record.dataBytes = dataBytesBefore + (end >= 0 ? end + 2 : data.length) - CRLF.length
          if (m === "dropMidData" && record.dataBytes >= (o.dropAfterBytes ?? 512)) {
            socket.destroy()
            return
          }
          if (end < 0) return
          inData = false
          dataBytesBefore = record.dataBytes
          const content = data.subarray(CRLF.length, end + 2)
          rest = data.subarray(end + END_OF_DATA.length)
          data = Buffer.alloc(0)
          endOfData(content)
          continue
        }
        lineBuf = Buffer.concat([lineBuf, rest])
        rest = Buffer.alloc(0)
        let eol: number
        while (!inData && (eol = lineBuf.indexOf(CRLF)) >= 0) {
          const line = lineBuf.subarray(0, eol).toString("utf8")
          lineBuf = lineBuf.subarray(eol + CRLF.length)
          command(line)
          if (inData) {
            // whatever followed the DATA line is content
            rest = lineBuf
            lineBuf = Buffer.alloc(0)
          }
        }
        if (lineBuf.length > MAX_LINE) {
          socket.destroy()
          return
        }
      }
    }
    socket.on("data", onBytes)

    const greet = (): void => {
      if (socket.destroyed) return
      if (m === "hangAfterConnect") return
      if (m === "greet421") {
        silent = true
        reply("421 4.3.2 Service not available", true)
        return
      }
      if (m === "greet554") {
        silent = true
        reply("554 5.3.2 No SMTP service here", true)
        return
      }
      reply(`220 ${BAD_SERVER_NAME} ESMTP bad-server`)
    }
    if ((o.greetDelayMs ?? 0) > 0) later(o.greetDelayMs ?? 0, greet)
    else greet()
  }

  const listen = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const server = createServer(onConnection)
      server.once("error", reject)
      server.listen({ port, host: HOST, exclusive: true }, () => {
        server.off("error", reject)
        server.on("error", () => undefined)
        const address = server.address()
        if (address === null || typeof address === "string") {
          reject(new Error("bad-server: listener has no TCP address"))
          return
        }
        port = address.port
        listener = server
        resolve()
      })
    })

  /** Stops accepting (connections already open live on until close()). */
  const unlisten = (): void => {
    if (listener === null) return
    const l = listener
    listener = null
    retired.push(l)
    l.close()
  }

  await listen()
  if (mode === "refuse") unlisten()

  const waitUntil = (what: string, ready: () => boolean, timeoutMs: number): Promise<void> => {
    if (ready()) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        ready,
        resolve: () => {
          clearTimeout(timer)
          resolve()
        },
      }
      const timer = setTimeout(() => {
        waiters = waiters.filter((w) => w !== waiter)
        reject(new Error(`bad-server: timed out after ${timeoutMs} ms waiting for ${what}`))
      }, timeoutMs)
      waiters.push(waiter)
    })
  }

  return {
    host: HOST,
    get port() {
      return port
    },
    get mode() {
      return mode
    },
    get connections() {
      return records.length
    },
    get openConnections() {
      return sockets.size
    },
    get records(): ReadonlyArray<ConnectionRecord> {
      return records
    },
    get messages(): ReadonlyArray<BadServerMessage> {
      return messages
    },
    async setMode(next: FaultMode, nextOptions: FaultOptions = {}) {
      if (closed) throw new Error("bad-server: closed")
      mode = next
      options = nextOptions
      if (next === "refuse") unlisten()
      else if (listener === null) await listen()
    },
    plan(modes, planOptions = {}) {
      for (const m of modes) planned.push({ mode: m, options: planOptions })
    },
    waitForConnections: (n, timeoutMs = 10_000) => waitUntil(`${n} connection(s), have ${records.length}`, () => records.length >= n, timeoutMs),
    waitForMessages: (n, timeoutMs = 10_000) => waitUntil(`${n} message(s), have ${messages.length}`, () => messages.length >= n, timeoutMs),
    close: async () => {
      if (closed) return
      closed = true
      unlisten()
      for (const t of timers) clearTimeout(t)
      timers.clear()
      for (const s of sockets) s.destroy()
      sockets.clear()
      waiters = []
      await Promise.all(retired.map((l) => new Promise<void>((resolve) => (l.listening ? l.close(() => resolve()) : resolve()))))
    },
  }
}
