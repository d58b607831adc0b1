// A TCP proxy on 127.0.0.1 in front of a bad-server, for the soak's hanging destination.
//
// bad-server reads its mode when it accepts a connection, so a connection opened while it was `ok` stays
// healthy forever, and Postern's connection cache reuses such sessions for up to 300 s: switching the
// bad-server to `hangAfterConnect` alone only hangs *new* connections, and under steady load the
// destination would in effect never hang again after the first cycle. freezeExisting() makes the
// connections already open hang too: from then on the proxy stops passing the client's bytes to the
// server (the server stops reading), while replies to what the server had already received still go
// back. So a message whose end-of-data reached the server still gets its 250 back (no reply is lost,
// hence no legitimate second copy), and a message cut short never reached the end of its DATA.
import { connect, createServer, type Server, type Socket } from "node:net"

const HOST = "127.0.0.1"

interface Pair {
  readonly client: Socket
  readonly upstream: Socket
  frozen: boolean
}

export interface Freezer {
  readonly port: number
  /** connections currently open */
  readonly open: number
  /** connections frozen so far */
  readonly frozenTotal: number
  /** Freezes every connection open now; returns how many. New connections pass through. */
  freezeExisting(): number
  close(): Promise<void>
}

export async function startFreezer(upstreamPort: number): Promise<Freezer> {
  const pairs = new Set<Pair>()
  let frozenTotal = 0
  const server: Server = createServer((client) => {
    const upstream = connect({ host: HOST, port: upstreamPort })
    const pair: Pair = { client, upstream, frozen: false }
    pairs.add(pair)
    client.on("error", () => undefined)
    upstream.on("error", () => undefined)
    client.on("data", (d: Buffer) => {
      if (!pair.frozen) upstream.write(d)
    })
    upstream.on("data", (d: Buffer) => {
      if (!client.destroyed) client.write(d)
    })
    client.on("end", () => upstream.end())
    upstream.on("end", () => client.end())
    const gone = (): void => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.once("close", gone)
    upstream.once("close", gone)
  })
  server.on("error", () => undefined)
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen({ port: 0, host: HOST, exclusive: true }, () => resolve())
  })
  const addr = server.address()
  if (addr === null || typeof addr === "string") throw new Error("freezer: no TCP address")
  return {
    port: addr.port,
    get open() {
      return pairs.size
    },
    get frozenTotal() {
      return frozenTotal
    },
    freezeExisting() {
      let n = 0
      for (const p of pairs) {
        if (!p.frozen) {
          p.frozen = true
          n++
        }
      }
      frozenTotal += n
      return n
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const p of pairs) {
          p.client.destroy()
          p.upstream.destroy()
        }
        pairs.clear()
        server.close(() => resolve())
      }),
  }
}
