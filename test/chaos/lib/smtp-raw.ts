// Two raw SMTP clients on 127.0.0.1 that nodemailer cannot play:
// - probeGreeting: connect → "220 " round trip, the soak's measure of Postern's responsiveness (its event
//   loop has to run the accept and write the greeting; a blocked loop shows up here);
// - abortMidData: a client that opens a transaction, sends part of the message and disconnects mid-DATA
//   (such a message was never acknowledged and must never be delivered).
import { connect, type Socket } from "node:net"
import { performance } from "node:perf_hooks"

const HOST = "127.0.0.1"

/** Milliseconds from connect() to a complete 220 greeting line; null on error or after timeoutMs. */
export const probeGreeting = (port: number, timeoutMs = 5_000): Promise<number | null> =>
  new Promise((resolve) => {
    const t0 = performance.now()
    const s = connect({ host: HOST, port })
    let buf = ""
    let settled = false
    const done = (v: number | null): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (v !== null && !s.destroyed) {
        // a polite goodbye; the close is not waited for
        s.end("QUIT\r\n")
        setTimeout(() => s.destroy(), 1_000).unref()
      } else s.destroy()
      resolve(v)
    }
    const timer = setTimeout(() => done(null), timeoutMs)
    s.setEncoding("latin1")
    s.on("data", (d: string) => {
      buf += d
      if (/^220[ ][^\r\n]*\r\n/m.test(buf)) done(performance.now() - t0)
      else if (/^\d{3} [^\r\n]*\r\n/m.test(buf)) done(null)
    })
    s.on("error", () => done(null))
    s.on("close", () => done(null))
  })

/** Sends lines and waits for complete replies (multi-line aware). */
class LineClient {
  private buf = ""
  private waiting: ((reply: string) => void) | null = null
  private readonly replies: Array<string> = []
  constructor(readonly socket: Socket) {
    socket.setEncoding("latin1")
    socket.on("data", (d: string) => {
      this.buf += d
      for (;;) {
        const m = /^((?:\d{3}-[^\r\n]*\r\n)*\d{3} [^\r\n]*)\r\n/.exec(this.buf)
        if (m === null) break
        this.buf = this.buf.slice(m[0].length)
        this.replies.push(m[1]!)
      }
      this.flush()
    })
  }
  private flush(): void {
    if (this.waiting !== null && this.replies.length > 0) {
      const w = this.waiting
      this.waiting = null
      w(this.replies.shift()!)
    }
  }
  reply(timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null
        reject(new Error("timeout"))
      }, timeoutMs)
      this.waiting = (r) => {
        clearTimeout(timer)
        resolve(r)
      }
      this.flush()
    })
  }
  async command(line: string, expect: number, timeoutMs: number): Promise<void> {
    this.socket.write(`${line}\r\n`)
    const r = await this.reply(timeoutMs)
    if (!r.startsWith(String(expect))) throw new Error(`${line.split(" ")[0]}: ${r}`)
  }
}

/**
 * Opens a transaction for `to`, sends `prefix` (part of a message, without the end-of-data dot) and
 * destroys the socket. "aborted" when it got as far as the body, else what stopped it.
 */
export const abortMidData = async (port: number, from: string, to: string, prefix: string, timeoutMs = 5_000): Promise<string> => {
  const s = connect({ host: HOST, port })
  s.on("error", () => undefined)
  const c = new LineClient(s)
  try {
    const greeting = await c.reply(timeoutMs)
    if (!greeting.startsWith("220")) return `greeting ${greeting}`
    await c.command("EHLO aborter.postern.test", 250, timeoutMs)
    await c.command(`MAIL FROM:<${from}>`, 250, timeoutMs)
    await c.command(`RCPT TO:<${to}>`, 250, timeoutMs)
    await c.command("DATA", 354, timeoutMs)
    await new Promise<void>((r) => s.write(prefix, () => r()))
    await new Promise((r) => setTimeout(r, 20))
    return "aborted"
  } catch (e) {
    return (e as Error).message
  } finally {
    s.destroy()
  }
}
