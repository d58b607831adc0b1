// The `postern` command's end of the control channel: one request, one reply, a timeout. Resolves null
// when no Postern is listening on the data folder (the caller then works on the store directly).
import { connect } from "node:net"
import { controlSocketPath, type ControlReply, type ControlRequest } from "./protocol.js"

export const askPostern = (dataDir: string, request: ControlRequest, timeoutMs = 10_000): Promise<ControlReply | null> =>
  new Promise((resolve, reject) => {
    const socket = connect(controlSocketPath(dataDir))
    let buffered = ""
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`Postern did not answer on ${controlSocketPath(dataDir)} within ${timeoutMs / 1000}s`))
    }, timeoutMs)
    socket.setEncoding("utf8")
    socket.on("connect", () => socket.write(`${JSON.stringify(request)}\n`))
    socket.on("data", (chunk: string) => {
      buffered += chunk
    })
    socket.on("end", () => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(buffered.trim()) as ControlReply)
      } catch {
        reject(new Error(`Postern sent a reply that is not JSON: ${buffered.slice(0, 200)}`))
      }
    })
    socket.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === "ENOENT" || err.code === "ECONNREFUSED") resolve(null)
      else reject(err)
    })
  })
