// Extra accept handles on one listening socket (src/smtpd/accept-handles.ts): copies of the socket come
// back from a child over IPC, each accepts for the same handler, the listener keeps its own descriptor,
// and closing them stops them at once.
import { connect, createServer, type Server, type Socket } from "node:net"
import { afterEach, describe, expect, test } from "vitest"
import { addAcceptHandles, type AcceptHandles } from "../../src/smtpd/accept-handles.js"

const opened: Array<{ server: Server; extra: AcceptHandles | null }> = []
afterEach(() => {
  for (const o of opened.splice(0)) {
    o.extra?.close()
    o.server.close()
  }
})

const listen = async (onConnection: (s: Socket) => void): Promise<{ server: Server; port: number }> => {
  const server = createServer(onConnection)
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  opened.push({ server, extra: null })
  return { server, port: (server.address() as { port: number }).port }
}

/** Opens `n` connections at once; resolves with the first line each got. */
const clients = (port: number, n: number): Promise<Array<string>> =>
  Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<string>((resolve, reject) => {
          const c = connect(port, "127.0.0.1")
          let got = ""
          c.setEncoding("latin1")
          c.on("data", (d: string) => (got += d))
          c.on("close", () => resolve(got))
          c.on("error", reject)
        }),
    ),
  )

describe("accept handles", () => {
  test("three copies of the listening socket accept for the same handler; the listener keeps its own", async () => {
    const byHandle = new Map<string, number>()
    const greet = (who: string) => (s: Socket) => {
      byHandle.set(who, (byHandle.get(who) ?? 0) + 1)
      s.end(`220 ${who}\r\n`)
    }
    const { server, port } = await listen(greet("listener"))
    const ownFd = (server as unknown as { _handle: { fd: number } })._handle.fd
    const errors: Array<Error> = []
    const extra = await addAcceptHandles(server, 3, greet("extra"), (e) => errors.push(e))
    opened[0]!.extra = extra
    expect(extra.count).toBe(3)
    expect(errors).toEqual([])
    expect(server.listening).toBe(true)
    expect((server as unknown as { _handle: { fd: number } })._handle.fd).toBe(ownFd)

    const lines = await clients(port, 300)
    expect(lines.every((l) => l.startsWith("220 "))).toBe(true)
    // Every connection was served, by the listener or by a copy; the copies took part.
    expect((byHandle.get("listener") ?? 0) + (byHandle.get("extra") ?? 0)).toBe(300)
    expect(byHandle.get("extra") ?? 0).toBeGreaterThan(0)
  })

  test("closed copies stop accepting at once; the listener alone serves what comes next", async () => {
    let extraServed = 0
    const { server, port } = await listen((s) => s.end("220 listener\r\n"))
    const extra = await addAcceptHandles(server, 2, (s) => {
      extraServed++
      s.end("220 extra\r\n")
    }, () => undefined)
    opened[0]!.extra = extra
    expect(extra.count).toBe(2)
    extra.close()
    expect(extra.count).toBe(0)
    extraServed = 0
    const lines = await clients(port, 100)
    expect(lines.every((l) => l === "220 listener\r\n")).toBe(true)
    expect(extraServed).toBe(0)
  })

  test("nothing to copy (no extra wanted, or a listener that is not listening): no child, no copies", async () => {
    const { server } = await listen((s) => s.end())
    expect((await addAcceptHandles(server, 0, () => undefined, () => undefined)).count).toBe(0)
    const idle = createServer()
    expect((await addAcceptHandles(idle, 3, () => undefined, () => undefined)).count).toBe(0)
  })
})
