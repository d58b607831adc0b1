// Pins the local smtp-server patch (patches/smtp-server+3.21.6.patch: the greetingDelay
// option, enhanced status codes supplied by the application not being doubled, session ids
// from a pool of random bytes, the socket closed once the 221 to QUIT is sent) and the
// smtp-server behaviours Postern's SMTP listener relies on: DATA termination (SMTP smuggling),
// dot-unstuffing, size overrun, EHLO capabilities, MAIL/RCPT parameters and reply codes. Everything runs over real sockets on 127.0.0.1.
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import net from "node:net"
import { dirname, join } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { SMTPServer } from "smtp-server"
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerOptions, SMTPServerSession } from "smtp-server"
import { afterEach, describe, expect, it } from "vitest"

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..")
const require = createRequire(import.meta.url)

// ---------------------------------------------------------------- helpers

const servers = new Set<SMTPServer>()
const clients = new Set<net.Socket>()

afterEach(async () => {
  for (const socket of clients) socket.destroy()
  clients.clear()
  await Promise.all([...servers].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
  servers.clear()
})

const BASE: SMTPServerOptions = {
  name: "mx.postern.test",
  disabledCommands: ["AUTH", "STARTTLS"],
  authOptional: true,
  disableReverseLookup: true,
  logger: false,
  closeTimeout: 1000,
}

async function startServer(options: SMTPServerOptions = {}): Promise<number> {
  const server = new SMTPServer({ ...BASE, ...options })
  servers.add(server)
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const address = server.server.address()
  if (!address || typeof address === "string") throw new Error("no port")
  return address.port
}

/** A minimal line-level SMTP client: collects complete (possibly multi-line) replies in order */
class Client {
  readonly replies: string[][] = []
  closed = false
  private buffer = ""
  private pending: string[] = []
  private waiters: Array<() => void> = []

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true)
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => {
      this.buffer += chunk
      let at: number
      while ((at = this.buffer.indexOf("\r\n")) >= 0) {
        const line = this.buffer.slice(0, at)
        this.buffer = this.buffer.slice(at + 2)
        this.pending.push(line)
        if (/^\d{3}(?: |$)/.test(line)) {
          this.replies.push(this.pending)
          this.pending = []
        }
      }
      this.wake()
    })
    socket.on("error", () => undefined)
    socket.on("close", () => {
      this.closed = true
      this.wake()
    })
  }

  private wake(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter()
  }

  /** Connects and resolves once the TCP connection is up (not waiting for the greeting) */
  static open(port: number): Promise<{ client: Client; connectedAt: number }> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: "127.0.0.1" })
      clients.add(socket)
      const client = new Client(socket)
      socket.once("error", reject)
      socket.once("connect", () => resolve({ client, connectedAt: performance.now() }))
    })
  }

  static async connect(port: number): Promise<Client> {
    const { client } = await Client.open(port)
    const greeting = await client.reply()
    expect(greeting[0]).toMatch(/^220 /)
    return client
  }

  private consumed = 0

  /** Resolves with the next reply not returned yet; rejects if the connection closes first */
  async reply(timeoutMs = 5000): Promise<string[]> {
    const deadline = performance.now() + timeoutMs
    while (this.replies.length <= this.consumed) {
      if (this.closed) throw new Error(`connection closed, replies so far: ${JSON.stringify(this.replies)}`)
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms, replies so far: ${JSON.stringify(this.replies)}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    return this.replies[this.consumed++]!
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === "string" ? Buffer.from(data, "latin1") : data)
  }

  async cmd(line: string): Promise<string[]> {
    this.write(line + "\r\n")
    return this.reply()
  }

  /** Replies received but not yet returned by reply() */
  get unread(): string[][] {
    return this.replies.slice(this.consumed)
  }

  waitClosed(timeoutMs = 5000): Promise<void> {
    if (this.closed) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("socket not closed")), timeoutMs)
      this.socket.once("close", () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  quit(): void {
    this.socket.destroy()
  }
}

/** Milliseconds from TCP connect to a complete 220 line */
async function timeToGreeting(port: number): Promise<number> {
  const { client, connectedAt } = await Client.open(port)
  const greeting = await client.reply()
  const elapsed = performance.now() - connectedAt
  expect(greeting[0]).toMatch(/^220 mx\.postern\.test ESMTP/)
  client.quit()
  return elapsed
}

async function greetingTimes(port: number, count: number): Promise<number[]> {
  const times: number[] = []
  for (let i = 0; i < count; i++) times.push(await timeToGreeting(port))
  return times
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

interface Received {
  body: Buffer
  byteLength: number
  sizeExceeded: boolean
}

/** onData that reads the whole stream and records it, then answers with `reply` */
function recordingOnData(
  received: Received[],
  reply: (stream: SMTPServerDataStream) => [Error | null, string?] = () => [null],
): NonNullable<SMTPServerOptions["onData"]> {
  return (stream, _session, callback) => {
    const chunks: Buffer[] = []
    stream.on("data", (chunk: Buffer) => chunks.push(chunk))
    stream.on("end", () => {
      received.push({ body: Buffer.concat(chunks), byteLength: stream.byteLength, sizeExceeded: stream.sizeExceeded })
      const [err, message] = reply(stream)
      if (err) callback(err)
      else if (message !== undefined) callback(null, message)
      else callback()
    })
  }
}

function smtpError(message: string, responseCode: number): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode })
}

/** EHLO, MAIL, RCPT, DATA up to the 354 */
async function openTransaction(client: Client): Promise<void> {
  expect((await client.cmd("EHLO client.test")).at(-1)).toMatch(/^250 /)
  expect((await client.cmd("MAIL FROM:<sender@client.test>"))[0]).toMatch(/^250 /)
  expect((await client.cmd("RCPT TO:<rcpt@postern.test>"))[0]).toMatch(/^250 /)
  expect((await client.cmd("DATA"))[0]).toMatch(/^354 /)
}

// ---------------------------------------------------------------- 1. the patch

describe("smtp-server greetingDelay patch", () => {
  it("is recorded in patches/ and applied to the installed package", () => {
    const patchFile = join(root, "patches", "smtp-server+3.21.6.patch")
    expect(existsSync(patchFile)).toBe(true)
    const patch = readFileSync(patchFile, "utf8")
    for (const flavour of ["esm", "cjs"]) {
      expect(patch).toContain(`node_modules/smtp-server/dist/${flavour}/smtp-connection.js`)
      expect(patch).toContain(`node_modules/smtp-server/dist/${flavour}/types.d.ts`)
    }

    const pkgDir = dirname(require.resolve("smtp-server/package.json"))
    const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { version: string }
    // patch-package names the patch after the version it was made against
    expect(pkg.version).toBe("3.21.6")
    for (const flavour of ["esm", "cjs"]) {
      const code = readFileSync(join(pkgDir, "dist", flavour, "smtp-connection.js"), "utf8")
      expect(code).toContain("_getGreetingDelay()")
      expect(code).toContain("this._server.options.greetingDelay")
      expect(code).not.toContain("setTimeout(() => this.connectionReady(), 100)")
      const types = readFileSync(join(pkgDir, "dist", flavour, "types.d.ts"), "utf8")
      expect(types).toMatch(/greetingDelay\?: ms \| \(\(remoteAddress: string\) => ms\) \| undefined;/)
      // the enhanced status code part of the patch
      expect(code).toContain("_hasOwnEnhancedStatusCode(code, text)")
      expect(code).toContain("LEADING_ENHANCED_STATUS_CODE")
    }
  })

  it("greetingDelay: 0 greets without waiting (median of 20 connections < 30 ms)", async () => {
    const port = await startServer({ greetingDelay: 0 })
    const times = await greetingTimes(port, 20)
    expect(median(times)).toBeLessThan(30)
  })

  it("without the option the greeting still waits the stock 100 ms", async () => {
    const port = await startServer()
    const times = await greetingTimes(port, 3)
    for (const t of times) expect(t).toBeGreaterThanOrEqual(90)
  })

  it("a function decides per client address (0 for a trusted address)", async () => {
    const seen: string[] = []
    const port = await startServer({
      greetingDelay: (remoteAddress) => {
        seen.push(remoteAddress)
        return remoteAddress === "127.0.0.1" ? 0 : 5000
      },
    })
    const times = await greetingTimes(port, 20)
    expect(median(times)).toBeLessThan(30)
    expect(new Set(seen)).toEqual(new Set(["127.0.0.1"]))
    expect(seen).toHaveLength(20)
  })

  it("the value the function returns is used as the delay", async () => {
    const port = await startServer({ greetingDelay: () => 150 })
    const [t] = await greetingTimes(port, 1)
    expect(t).toBeGreaterThanOrEqual(140)
  })

  it("invalid values and a throwing function fall back to the 100 ms default", async () => {
    for (const greetingDelay of [-1, Number.NaN, () => Number.POSITIVE_INFINITY, () => { throw new Error("policy bug") }]) {
      const port = await startServer({ greetingDelay })
      const [t] = await greetingTimes(port, 1)
      expect(t).toBeGreaterThanOrEqual(90)
      expect(t).toBeLessThan(1000)
    }
  })

  it("an early talker is still refused with a non-zero delay (421 You talk too soon, no 220)", async () => {
    const port = await startServer({ greetingDelay: 200 })
    const { client } = await Client.open(port)
    client.write("EHLO early.test\r\n")
    const reply = await client.reply()
    expect(reply).toEqual(["421 mx.postern.test You talk too soon"])
    await client.waitClosed()
    // the greeting timer found the connection closing and sent nothing more
    await sleep(250)
    expect(client.replies).toEqual([["421 mx.postern.test You talk too soon"]])
  })

  it("a client that waits for the 200 ms greeting is served normally", async () => {
    const port = await startServer({ greetingDelay: 200 })
    const { client, connectedAt } = await Client.open(port)
    expect((await client.reply())[0]).toMatch(/^220 /)
    expect(performance.now() - connectedAt).toBeGreaterThanOrEqual(190)
    expect((await client.cmd("EHLO patient.test"))[0]).toMatch(/^250-mx\.postern\.test /)
  })

  it("greetingDelay: 0 with a synchronous onConnect leaves no early-talker window", async () => {
    // the session is ready before the socket data reaches the parser, so a client that
    // does not wait for the greeting is answered rather than refused
    const port = await startServer({ greetingDelay: 0, onConnect: (_session, callback) => callback() })
    const { client } = await Client.open(port)
    client.write("EHLO hasty.test\r\n")
    expect((await client.reply())[0]).toMatch(/^220 /)
    expect((await client.reply())[0]).toMatch(/^250-/)
  })
})

// ---------------------------------------------------------------- 3. behaviours Postern relies on

describe("smtp-server DATA handling", () => {
  // CVE-2023-51764 (and the CVE-2023-51765/51766 siblings): a receiver that ends DATA on
  // <LF>.<LF>, <CR>.<CR> or a mix can be made to see a second, smuggled transaction
  const SMUGGLING_BODY =
    "Subject: smuggling probe\r\n\r\n" +
    "lf\n.\nMAIL FROM:<lf@evil.test>\r\n" +
    "cr\r.\rMAIL FROM:<cr@evil.test>\r\n" +
    "crlf-lf\r\n.\nMAIL FROM:<crlflf@evil.test>\r\n" +
    "lf-crlf\n.\r\nMAIL FROM:<lfcrlf@evil.test>\r\n" +
    "RCPT TO:<victim@postern.test>\r\nDATA\r\nsmuggled body\r\n"

  async function probe(writes: string[]): Promise<void> {
    const received: Received[] = []
    const mailFrom: string[] = []
    const port = await startServer({
      greetingDelay: 0,
      onMailFrom: (address, _session, callback) => {
        mailFrom.push(address.address)
        callback()
      },
      onData: recordingOnData(received, () => [null, "Ok: queued as PROBE"]),
    })
    const client = await Client.connect(port)
    await openTransaction(client)
    for (const chunk of writes) {
      client.write(chunk)
      await sleep(20) // separate TCP segments, so each candidate terminator starts a chunk
    }
    expect(await client.reply()).toEqual(["250 Ok: queued as PROBE"])
    // nothing was answered for the would-be smuggled commands, the session is in step
    await sleep(100)
    expect(client.unread).toEqual([])
    expect((await client.cmd("NOOP"))[0]).toBe("250 OK")
    expect(mailFrom).toEqual(["sender@client.test"])
    expect(received).toHaveLength(1)
    // the bare-LF / bare-CR "terminators" are delivered as message content, untouched
    expect(received[0]!.body.toString("latin1")).toBe(SMUGGLING_BODY)
  }

  it("ends DATA only on <CR><LF>.<CR><LF> (bare LF/CR dot lines are content)", async () => {
    await probe([SMUGGLING_BODY + ".\r\n"])
  })

  it("does not end DATA on bare terminators split across TCP segments either", async () => {
    const pieces = SMUGGLING_BODY.split(/(?=\.[\r\n])/)
    expect(pieces.length).toBeGreaterThan(4)
    await probe([...pieces, ".\r\n"])
  })

  it("dot-unstuffs the stream and keeps the CRLF that ends the last line", async () => {
    const received: Received[] = []
    const port = await startServer({ greetingDelay: 0, onData: recordingOnData(received) })
    const client = await Client.connect(port)
    await openTransaction(client)
    client.write("..first line starts with a dot\r\nplain\r\n...two dots\r\n..\r\nbare-lf\n..x\r\nlast\r\n.\r\n")
    expect((await client.reply())[0]).toMatch(/^250 /)
    expect(received[0]!.body.toString("latin1")).toBe(
      // a dot after a bare LF is unstuffed as well (lenient about line ends, strict about the terminator)
      ".first line starts with a dot\r\nplain\r\n..two dots\r\n.\r\nbare-lf\n.x\r\nlast\r\n",
    )
    // an empty message gives an empty stream
    await openTransactionAgain(client)
    client.write(".\r\n")
    expect((await client.reply())[0]).toMatch(/^250 /)
    expect(received[1]!.body.length).toBe(0)
  })

  async function openTransactionAgain(client: Client): Promise<void> {
    expect((await client.cmd("MAIL FROM:<sender@client.test>"))[0]).toMatch(/^250 /)
    expect((await client.cmd("RCPT TO:<rcpt@postern.test>"))[0]).toMatch(/^250 /)
    expect((await client.cmd("DATA"))[0]).toMatch(/^354 /)
  }

  it("size overrun: stream.sizeExceeded, the whole message is read, onData's 552 reaches the client", async () => {
    const received: Received[] = []
    const port = await startServer({
      greetingDelay: 0,
      size: 1000,
      onData: recordingOnData(received, (stream) =>
        stream.sizeExceeded ? [smtpError("Message size exceeds fixed limit", 552)] : [null],
      ),
    })
    const client = await Client.connect(port)
    const ehlo = await client.cmd("EHLO client.test")
    expect(ehlo).toContain("250 SIZE 1000")
    // declared too big: refused at MAIL already
    expect(await client.cmd("MAIL FROM:<sender@client.test> SIZE=5000")).toEqual([
      "552 Error: message exceeds fixed maximum message size 1000",
    ])
    await openTransactionAgain(client)
    const body = ("x".repeat(98) + "\r\n").repeat(50) // 5000 bytes
    client.write(body + ".\r\n")
    expect(await client.reply()).toEqual(["552 Message size exceeds fixed limit"])
    expect(received[0]!.sizeExceeded).toBe(true)
    // onData got the whole message, the parser never stops reading early
    expect(received[0]!.byteLength).toBe(5000)
    expect(received[0]!.body.length).toBe(5000)
    // and the session is usable afterwards: the rest of the message was not taken as commands
    expect((await client.cmd("NOOP"))[0]).toBe("250 OK")
  })

  it("size overrun with rejectOversized: 552 5.3.4 whatever onData says, even if onData never reads", async () => {
    const port = await startServer({
      greetingDelay: 0,
      size: 1000,
      rejectOversized: true,
      hideENHANCEDSTATUSCODES: false,
      // answers at once without reading the stream: smtp-server drains it and replies at the end
      onData: (_stream, _session, callback) => callback(null, "Ok"),
    })
    const client = await Client.connect(port)
    await openTransaction(client)
    client.write(("y".repeat(98) + "\r\n").repeat(50) + ".\r\n")
    expect(await client.reply()).toEqual(["552 5.3.4 Error: message exceeds fixed maximum message size 1000"])
    expect((await client.cmd("NOOP"))[0]).toBe("250 2.0.0 OK")
  })
})

describe("smtp-server EHLO capabilities and MAIL/RCPT parameters", () => {
  it("advertises PIPELINING, 8BITMIME, SMTPUTF8 by default; DSN and ENHANCEDSTATUSCODES are opt-in", async () => {
    const port = await startServer({ greetingDelay: 0 })
    const client = await Client.connect(port)
    const ehlo = (await client.cmd("EHLO client.test")).map((line) => line.slice(4))
    expect(ehlo).toEqual(["mx.postern.test Nice to meet you, [127.0.0.1]", "PIPELINING", "8BITMIME", "SMTPUTF8"])
  })

  it("hideX options switch each capability", async () => {
    const port = await startServer({
      greetingDelay: 0,
      hidePIPELINING: true,
      hide8BITMIME: true,
      hideSMTPUTF8: true,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
    })
    const client = await Client.connect(port)
    const ehlo = (await client.cmd("EHLO client.test")).map((line) => line.slice(4))
    expect(ehlo.slice(1)).toEqual(["ENHANCEDSTATUSCODES", "DSN"])
  })

  it("onMailFrom/onRcptTo get the parameters as address.args (upper-case keys, xtext-decoded values)", async () => {
    let mail: { address: SMTPServerAddress; mailFromDuringHandler: unknown; envelope: unknown } | undefined
    let rcpt: SMTPServerAddress | undefined
    let envelopeAtData: SMTPServerSession["envelope"] | undefined
    const port = await startServer({
      greetingDelay: 0,
      hideDSN: false,
      onMailFrom: (address, session, callback) => {
        mail = {
          address: structuredClone(address),
          mailFromDuringHandler: session.envelope.mailFrom,
          envelope: structuredClone(session.envelope),
        }
        callback()
      },
      onRcptTo: (address, _session, callback) => {
        rcpt = structuredClone(address)
        callback()
      },
      onData: (stream, session, callback) => {
        envelopeAtData = structuredClone(session.envelope)
        stream.resume()
        stream.on("end", () => callback())
      },
    })
    const client = await Client.connect(port)
    await client.cmd("EHLO client.test")
    expect(
      await client.cmd("MAIL FROM:<sender@client.test> BODY=8BITMIME SIZE=1234 RET=HDRS ENVID=q+2Bid smtputf8 X-Vendor=yes"),
    ).toEqual(["250 Accepted"])
    expect(await client.cmd("RCPT TO:<rcpt@postern.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;rcpt+40postern.test")).toEqual([
      "250 Accepted",
    ])
    expect((await client.cmd("DATA"))[0]).toMatch(/^354/)
    client.write("x\r\n.\r\n")
    expect((await client.reply())[0]).toMatch(/^250 /)

    expect(mail!.address).toEqual({
      address: "sender@client.test",
      args: { BODY: "8BITMIME", SIZE: "1234", RET: "HDRS", ENVID: "q+id", SMTPUTF8: true, "X-VENDOR": "yes" },
    })
    // while onMailFrom runs the sender is not in the envelope yet, the parsed parameters are
    expect(mail!.mailFromDuringHandler).toBe(false)
    expect(mail!.envelope).toMatchObject({ bodyType: "8bitmime", smtpUtf8: true, dsn: { ret: "HDRS", envid: "q+id" } })
    expect(rcpt).toEqual({
      address: "rcpt@postern.test",
      args: { NOTIFY: "SUCCESS,FAILURE", ORCPT: "rfc822;rcpt@postern.test" },
      dsn: { notify: ["SUCCESS", "FAILURE"], orcpt: "rfc822;rcpt@postern.test" },
    })
    expect(envelopeAtData!.mailFrom).toEqual(mail!.address)
    expect(envelopeAtData!.rcptTo).toEqual([rcpt])
  })
})

describe("smtp-server reply codes", () => {
  it("enhanced codes off (default): the callback message is sent verbatim after the code", async () => {
    const port = await startServer({
      greetingDelay: 0,
      onRcptTo: (address, _session, callback) =>
        address.address.startsWith("full")
          ? callback(smtpError("4.5.3 Error: too many recipients", 452))
          : callback(),
      onData: (stream, _session, callback) => {
        stream.resume()
        stream.on("end", () => callback(null, "2.0.0 Ok: queued as 4Xy7Zq"))
      },
    })
    const client = await Client.connect(port)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<sender@client.test>")
    expect(await client.cmd("RCPT TO:<full@postern.test>")).toEqual(["452 4.5.3 Error: too many recipients"])
    await client.cmd("RCPT TO:<rcpt@postern.test>")
    await client.cmd("DATA")
    client.write("x\r\n.\r\n")
    expect(await client.reply()).toEqual(["250 2.0.0 Ok: queued as 4Xy7Zq"])
  })

  it("enhanced codes on: the code comes from a fixed table by reply code and context", async () => {
    const port = await startServer({
      greetingDelay: 0,
      hideENHANCEDSTATUSCODES: false,
      onRcptTo: (address, _session, callback) => {
        const local = address.address.split("@")[0]
        if (local === "r452") return callback(smtpError("Insufficient system storage", 452))
        if (local === "r451") return callback(smtpError("Local error in processing", 451))
        if (local === "own") return callback(smtpError("4.5.3 Too many recipients", 452))
        callback()
      },
      onData: (stream, session, callback) => {
        stream.resume()
        stream.on("end", () =>
          session.transaction === 1 ? callback(null, "Ok: queued as 4Xy7Zq") : callback(smtpError("Transaction failed", 554)),
        )
      },
    })
    const client = await Client.connect(port)
    expect((await client.cmd("EHLO client.test")).slice(1).map((l) => l.slice(4))).toContain("ENHANCEDSTATUSCODES")
    expect(await client.cmd("MAIL FROM:<sender@client.test>")).toEqual(["250 2.1.0 Accepted"])
    expect(await client.cmd("RCPT TO:<r452@postern.test>")).toEqual(["452 4.2.2 Insufficient system storage"])
    expect(await client.cmd("RCPT TO:<r451@postern.test>")).toEqual(["451 4.3.0 Local error in processing"])
    // an enhanced code of the same class in the message replaces the automatic one (patched)
    expect(await client.cmd("RCPT TO:<own@postern.test>")).toEqual(["452 4.5.3 Too many recipients"])
    expect(await client.cmd("RCPT TO:<rcpt@postern.test>")).toEqual(["250 2.1.5 Accepted"])
    await client.cmd("DATA")
    client.write("x\r\n.\r\n")
    // end-of-data success without a code of its own gets 2.6.0 (DATA_OK)
    expect(await client.reply()).toEqual(["250 2.6.0 Ok: queued as 4Xy7Zq"])
    await client.cmd("MAIL FROM:<sender@client.test>")
    await client.cmd("RCPT TO:<rcpt@postern.test>")
    await client.cmd("DATA")
    client.write("x\r\n.\r\n")
    expect(await client.reply()).toEqual(["554 5.6.0 Transaction failed"])
  })
})

// ---------------------------------------------------------------- 4. the enhanced status code patch

describe("smtp-server patch: an enhanced status code in the reply text is not doubled", () => {
  // Postern runs with hideENHANCEDSTATUSCODES: false, where smtp-server prepends a code
  // from its fixed table to every reply. Stock 3.21.6 turns "4.5.3 Error: ..." from a 452
  // into "452 4.2.2 4.5.3 Error: ..." and any end-of-data success into "250 2.6.0 ..."
  async function enhancedServer(options: SMTPServerOptions = {}): Promise<Client> {
    const port = await startServer({
      greetingDelay: 0,
      hideENHANCEDSTATUSCODES: false,
      onRcptTo: (address, _session, callback) => {
        const local = address.address.split("@")[0]
        if (local === "full") return callback(smtpError("4.5.3 Error: too many recipients", 452))
        if (local === "relay") return callback(smtpError("5.7.1 <a@b>: Relay access denied", 554))
        if (local === "plain451") return callback(smtpError("Error: local problem, try again later", 451))
        if (local === "mismatch") return callback(smtpError("4.7.1 Error: wrong class", 550))
        if (local === "nospace") return callback(smtpError("4.5.3Error: no space after the code", 452))
        callback()
      },
      onData: (stream, _session, callback) => {
        stream.resume()
        stream.on("end", () => callback(null, "2.0.0 Ok: queued as ABC"))
      },
      ...options,
    })
    return Client.connect(port)
  }

  it("EHLO announces ENHANCEDSTATUSCODES", async () => {
    const client = await enhancedServer()
    const ehlo = await client.cmd("EHLO client.test")
    expect(ehlo.map((line) => line.slice(4))).toContain("ENHANCEDSTATUSCODES")
    // EHLO lines themselves carry no enhanced code
    expect(ehlo[0]).toBe("250-mx.postern.test Nice to meet you, [127.0.0.1]")
  })

  it('onData callback(null, "2.0.0 Ok: queued as ABC") gives exactly "250 2.0.0 Ok: queued as ABC"', async () => {
    const client = await enhancedServer()
    await openTransaction(client)
    client.write("x\r\n.\r\n")
    expect(await client.reply()).toEqual(["250 2.0.0 Ok: queued as ABC"])
  })

  it('an onRcptTo 452 "4.5.3 Error: too many recipients" is sent as is', async () => {
    const client = await enhancedServer()
    await client.cmd("EHLO client.test")
    expect(await client.cmd("MAIL FROM:<sender@client.test>")).toEqual(["250 2.1.0 Accepted"])
    expect(await client.cmd("RCPT TO:<full@postern.test>")).toEqual(["452 4.5.3 Error: too many recipients"])
    // the session goes on, with smtp-server's own codes for its own replies
    expect(await client.cmd("RCPT TO:<rcpt@postern.test>")).toEqual(["250 2.1.5 Accepted"])
  })

  it('an onRcptTo 554 "5.7.1 <a@b>: Relay access denied" is sent as is', async () => {
    const client = await enhancedServer()
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<sender@client.test>")
    expect(await client.cmd("RCPT TO:<relay@postern.test>")).toEqual(["554 5.7.1 <a@b>: Relay access denied"])
  })

  it("a text without a code (or with a code of another class) still gets the automatic one", async () => {
    const client = await enhancedServer()
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<sender@client.test>")
    expect(await client.cmd("RCPT TO:<plain451@postern.test>")).toEqual([
      "451 4.3.0 Error: local problem, try again later",
    ])
    // 4.x.x does not belong to a 5xx reply: not taken as the reply's own code
    expect(await client.cmd("RCPT TO:<mismatch@postern.test>")).toEqual(["550 5.1.1 4.7.1 Error: wrong class"])
    // not a code followed by a space: left alone
    expect(await client.cmd("RCPT TO:<nospace@postern.test>")).toEqual(["452 4.2.2 4.5.3Error: no space after the code"])
  })

  it("smtp-server's own replies keep their automatic codes (503 bad sequence, 250 OK, 221)", async () => {
    const client = await enhancedServer()
    await client.cmd("EHLO client.test")
    const rcptFirst = await client.cmd("RCPT TO:<rcpt@postern.test>")
    expect(rcptFirst).toHaveLength(1)
    expect(rcptFirst[0]).toMatch(/^503 5\.5\.\d{1,3} \S/)
    const dataFirst = await client.cmd("DATA")
    expect(dataFirst[0]).toMatch(/^503 5\.5\.\d{1,3} \S/)
    expect(await client.cmd("NOOP")).toEqual(["250 2.0.0 OK"])
    expect((await client.cmd("QUIT"))[0]).toMatch(/^221 2\.0\.0 /)
  })

  it("with enhanced codes hidden (stock default) nothing changes: the text is sent verbatim", async () => {
    const client = await enhancedServer({ hideENHANCEDSTATUSCODES: true })
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<sender@client.test>")
    expect(await client.cmd("RCPT TO:<plain451@postern.test>")).toEqual(["451 Error: local problem, try again later"])
    expect(await client.cmd("RCPT TO:<full@postern.test>")).toEqual(["452 4.5.3 Error: too many recipients"])
  })
})

describe("smtp-server patch: session ids from a pool of random bytes", () => {
  it("every connection gets its own 16-character base-32 id, across refills of the pool", async () => {
    const ids: string[] = []
    const port = await startServer({
      onConnect: (session, cb) => {
        ids.push(session.id)
        cb()
      },
      greetingDelay: 0,
    } as SMTPServerOptions)
    // 409 ids fit in one 4 KiB pool: 500 connections need a refill
    for (let batch = 0; batch < 10; batch++) {
      const clients = await Promise.all(Array.from({ length: 50 }, () => Client.connect(port)))
      for (const c of clients) c.socket.destroy()
    }
    expect(ids).toHaveLength(500)
    for (const id of ids) expect(id).toMatch(/^[0-9a-v]{16}$/)
    expect(new Set(ids).size).toBe(500)
    // the installed package uses the pool (not one crypto call per connection)
    const pkgDir = dirname(require.resolve("smtp-server/package.json"))
    for (const flavour of ["esm", "cjs"]) {
      const code = readFileSync(join(pkgDir, "dist", flavour, "smtp-server.js"), "utf8")
      expect(code).toContain("id: newSessionId()")
    }
  })
})

describe("smtp-server patch: the connection is closed once the 221 to QUIT is sent", () => {
  it("closes its socket after 221 and FIN, without waiting for the client to close its side", async () => {
    const port = await startServer({ greetingDelay: 0 } as SMTPServerOptions)
    // A client that keeps its own side open after the server's FIN (as a slow or careless one might)
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    clients.add(socket)
    let received = ""
    socket.setEncoding("latin1")
    socket.on("data", (d: string) => (received += d))
    socket.on("error", () => undefined)
    const ended = new Promise<void>((resolve) => socket.once("end", () => resolve()))
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()))
    while (!received.startsWith("220 ")) await new Promise((r) => setTimeout(r, 5))
    socket.write("EHLO client.test\r\nQUIT\r\n")
    await ended
    expect(received).toMatch(/\r\n221 [^\r]*Bye\r\n$/)
    // The server's descriptor is gone: what the client still sends is refused at once (a reset), where
    // a socket still open on the server's side would silently take it for seconds (HALF_CLOSE_TIMEOUT).
    const start = performance.now()
    socket.write("NOOP\r\n")
    setTimeout(() => socket.write("NOOP\r\n"), 50)
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error("still open after 2 s")), 2000))])
    expect(performance.now() - start).toBeLessThan(2000)
  })
})
