// A tiny SMTP client on raw `net` sockets for the latency injector and the recovery probe: one message per
// connection, EHLO/MAIL/RCPT/DATA with pipelining off (each command waits for its reply), timestamps on a
// monotonic clock at connect, greeting, the write of the final "." and the reply to it. Loopback only.
import { connect, type Socket } from "node:net"
import { performance } from "node:perf_hooks"

export interface Reply {
  readonly code: number
  readonly text: string
}

export interface Transaction {
  readonly ok: boolean
  /** Where it stopped: connect, greeting, ehlo, mail, rcpt, data, dot, done. */
  readonly stage: string
  readonly code: number | null
  readonly text: string
  readonly startedAt: number
  readonly connectedAt: number | null
  readonly greetedAt: number | null
  /** Just before the write of the final ".\r\n". */
  readonly dotAt: number | null
  /** When the reply to the final "." arrived. */
  readonly repliedAt: number | null
}

export interface SendOptions {
  readonly host: string
  readonly port: number
  /** The message, CRLF lines, dot-stuffed, ending with CRLF (without the final "."). */
  readonly body: Buffer
  readonly from: string
  readonly to: string
  readonly helo: string
  /** Whole-transaction timeout. */
  readonly timeoutMs: number
  /** Stop right after the greeting (a readiness probe). */
  readonly greetingOnly?: boolean
}

export const requireLoopback = (host: string): void => {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) && host !== "::1" && host !== "localhost") {
    throw new Error(`refusing non-loopback address ${host}: the bench only sends to 127.0.0.0/8`)
  }
}

/** A message of exactly `size` bytes (headers + lines of x), never a line that starts with ".". */
export const buildMessage = (size: number, id = "bench"): Buffer => {
  const head =
    `From: <sender@source.test>\r\nTo: <rcpt@dest.test>\r\nSubject: open-loop bench ${id}\r\n` +
    `Message-ID: <${id}@inject.bench.test>\r\nDate: ${new Date().toUTCString().replace("GMT", "+0000")}\r\n\r\n`
  let body = head
  const line = `${"x".repeat(76)}\r\n`
  while (body.length + line.length <= size) body += line
  const rest = size - body.length
  if (rest >= 3) body += `${"y".repeat(rest - 2)}\r\n`
  else if (rest > 0) body = body.slice(0, body.length - 2) + "z".repeat(rest) + "\r\n"
  return Buffer.from(body, "latin1")
}

/** Reads SMTP replies (multi-line aware) from a socket, one awaited reply at a time. */
class ReplyReader {
  private buf = ""
  private lines: Array<string> = []
  private ready: Array<Reply> = []
  private waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null
  private failure: Error | null = null

  constructor(socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.feed(chunk.toString("latin1")))
    socket.on("error", (err) => this.fail(err))
    socket.on("close", () => this.fail(new Error("connection closed")))
  }

  private feed(s: string): void {
    this.buf += s
    for (;;) {
      const i = this.buf.indexOf("\r\n")
      if (i < 0) break
      const line = this.buf.slice(0, i)
      this.buf = this.buf.slice(i + 2)
      this.lines.push(line)
      if (line.length < 4 || line[3] !== "-") {
        const reply = { code: Number(line.slice(0, 3)) || 0, text: this.lines.join(" / ") }
        this.lines = []
        if (this.waiter !== null) {
          const w = this.waiter
          this.waiter = null
          w.resolve(reply)
        } else this.ready.push(reply)
      }
    }
  }

  private fail(err: Error): void {
    if (this.failure === null) this.failure = err
    if (this.waiter !== null) {
      const w = this.waiter
      this.waiter = null
      w.reject(err)
    }
  }

  next(): Promise<Reply> {
    const r = this.ready.shift()
    if (r !== undefined) return Promise.resolve(r)
    if (this.failure !== null) return Promise.reject(this.failure)
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }))
  }
}

/** One SMTP transaction on a new connection. Never throws: failures come back with their stage. */
export const sendOne = (o: SendOptions): Promise<Transaction> => {
  requireLoopback(o.host)
  const startedAt = performance.now()
  let stage = "connect"
  let connectedAt: number | null = null
  let greetedAt: number | null = null
  let dotAt: number | null = null
  let last: Reply | null = null
  const socket = connect({ host: o.host, port: o.port })
  socket.setNoDelay(true)
  const reader = new ReplyReader(socket)
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${o.timeoutMs} ms`)), o.timeoutMs)
  })
  const expect = async (want: number, next: string): Promise<void> => {
    const r = await Promise.race([reader.next(), timeout])
    last = r
    if (r.code !== want) throw new Error(`expected ${want}`)
    stage = next
  }
  const write = (s: string | Buffer) => socket.write(s)
  const run = async (): Promise<Transaction> => {
    await Promise.race([
      new Promise<void>((resolve, reject) => {
        socket.once("connect", () => resolve())
        socket.once("error", reject)
      }),
      timeout,
    ])
    connectedAt = performance.now()
    stage = "greeting"
    await expect(220, "ehlo")
    greetedAt = performance.now()
    if (o.greetingOnly === true) {
      write("QUIT\r\n")
      return done(true, "done")
    }
    write(`EHLO ${o.helo}\r\n`)
    await expect(250, "mail")
    write(`MAIL FROM:<${o.from}>\r\n`)
    await expect(250, "rcpt")
    write(`RCPT TO:<${o.to}>\r\n`)
    await expect(250, "data")
    write("DATA\r\n")
    await expect(354, "dot")
    write(o.body)
    dotAt = performance.now()
    write(".\r\n")
    const r = await Promise.race([reader.next(), timeout])
    last = r
    const repliedAt = performance.now()
    write("QUIT\r\n")
    return done(r.code === 250, r.code === 250 ? "done" : "dot", repliedAt)
  }
  const done = (ok: boolean, at: string, repliedAt: number | null = null): Transaction => ({
    ok,
    stage: at,
    code: last?.code ?? null,
    text: last?.text ?? "",
    startedAt,
    connectedAt,
    greetedAt,
    dotAt,
    repliedAt,
  })
  return run()
    .catch((err: Error): Transaction => {
      const t = done(false, stage)
      return { ...t, text: last !== null && stage !== "connect" ? `${last.text} (${err.message})` : err.message }
    })
    .finally(() => {
      clearTimeout(timer)
      socket.end()
      setTimeout(() => socket.destroy(), 1_000).unref()
    })
}
