// Free TCP ports on 127.0.0.1 for the MTAs and sinks of a run: the kernel picks one, we check it is
// free, and release it for the program that will listen on it.
import { createServer } from "node:net"

const tryBind = (port: number): Promise<number | null> =>
  new Promise((resolve) => {
    const srv = createServer()
    srv.once("error", () => resolve(null))
    srv.listen({ host: "127.0.0.1", port, exclusive: true }, () => {
      const addr = srv.address()
      const got = typeof addr === "object" && addr !== null ? addr.port : null
      srv.close(() => resolve(got))
    })
  })

const handedOut = new Set<number>()

/** A port nobody listens on now, in 20000–29999 (away from the peers' defaults 2525–2625). */
export const freePort = async (): Promise<number> => {
  for (let i = 0; i < 200; i++) {
    const candidate = 20_000 + Math.floor(Math.random() * 10_000)
    if (handedOut.has(candidate)) continue
    const got = await tryBind(candidate)
    if (got !== null) {
      handedOut.add(got)
      return got
    }
  }
  throw new Error("no free port found on 127.0.0.1 in 20000–29999")
}
