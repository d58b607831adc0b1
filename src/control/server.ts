// The running Postern's end of the control channel: listens on the data folder's Unix socket (mode
// 0600) and answers flush and status requests through the queue manager. The socket file is removed
// first: whoever holds the data folder's lock owns the socket too.
import { chmodSync, rmSync } from "node:fs"
import { createServer, type Server } from "node:net"
import type { Logger } from "../runtime/log.js"
import { controlSocketPath, type ControlReply, type ControlRequest } from "./protocol.js"

export interface ControlHandlers {
  readonly flush: (destination: string | undefined) => Promise<number>
  readonly status: () => ControlReply
}

const MAX_REQUEST = 4096

export const startControlServer = (dataDir: string, handlers: ControlHandlers, log: Logger): Promise<Server> => {
  const path = controlSocketPath(dataDir)
  rmSync(path, { force: true })
  const server = createServer((socket) => {
    let buffered = ""
    socket.setEncoding("utf8")
    socket.setTimeout(10_000, () => socket.destroy())
    socket.on("error", () => socket.destroy())
    socket.on("data", (chunk: string) => {
      buffered += chunk
      if (buffered.length > MAX_REQUEST) return void socket.end(`${JSON.stringify({ ok: false, error: "request too long" })}\n`)
      const nl = buffered.indexOf("\n")
      if (nl < 0) return
      const line = buffered.slice(0, nl)
      buffered = ""
      void answer(line, handlers).then((reply) => socket.end(`${JSON.stringify(reply)}\n`))
    })
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(path, () => {
      chmodSync(path, 0o600)
      server.removeListener("error", reject)
      server.on("error", (err) => log.error({ actor: "control", err }, "control socket error"))
      resolve(server)
    })
  })
}

const answer = async (line: string, handlers: ControlHandlers): Promise<ControlReply> => {
  let request: ControlRequest
  try {
    request = JSON.parse(line) as ControlRequest
  } catch {
    return { ok: false, error: "not JSON" }
  }
  try {
    switch (request.command) {
      case "flush":
        return { ok: true, flushed: await handlers.flush(request.destination) }
      case "status":
        return handlers.status()
      default:
        return { ok: false, error: `unknown command ${JSON.stringify((request as { command?: unknown }).command)}` }
    }
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) }
  }
}
