// More than one accept per turn of the event loop for a listener. libuv (1.45 and later, so Node 20)
// accepts ONE connection per listening handle per turn; under load a turn takes milliseconds, so a burst
// of new clients waits in the kernel's accept queue before it is even greeted (measured: a 100-300 ms
// connect-to-greeting tail at half load, with the event loop never blocked). Node 20 can neither set
// SO_REUSEPORT nor dup() a descriptor, but it can pass a socket to another process over IPC, and the
// kernel hands back a new descriptor each time: a short-lived child receives the listening socket and
// sends it back `extra` times. Each copy is one more accept handle on the same socket, and every
// connection it accepts goes to the same handler. The child never listens or accepts itself.
import { spawn } from "node:child_process"
import { Server, type Socket } from "node:net"

/**
 * The child: sends the handle it is given back `n` times, one after the other, keeping its own copy open
 * until the parent disconnects (its 'message' listener keeps it alive until then; then it exits).
 */
const ECHO_HANDLE = `
let left = -1
process.on("message", (m, handle) => {
  if (left >= 0 || !handle) return
  left = m && m.n > 0 ? m.n : 0
  const next = () => { if (left-- > 0) process.send("handle", handle, { keepOpen: true }, next) }
  next()
})`

export interface AcceptHandles {
  /** The extra handles made (0 when the platform would not give any: the listener still works alone). */
  readonly count: number
  /**
   * Stops the extra handles from accepting, at once (their descriptors close now; the connections they
   * accepted belong to the listener's owner, which ends them).
   */
  close(): void
}

/**
 * Adds up to `extra` accept handles to `listener` (which must be listening on TCP); their connections go
 * to `onConnection`. Resolves within `timeoutMs` with whatever could be made; never rejects.
 */
export const addAcceptHandles = (
  listener: Server,
  extra: number,
  onConnection: (socket: Socket) => void,
  onError: (err: Error) => void,
  timeoutMs = 5_000,
): Promise<AcceptHandles> => {
  const servers: Array<Server> = []
  const done: AcceptHandles = {
    get count() {
      return servers.length
    },
    close: () => {
      for (const s of servers.splice(0)) s.close()
    },
  }
  const handle = (listener as unknown as { _handle?: unknown })._handle
  if (extra <= 0 || handle === undefined || handle === null) return Promise.resolve(done)
  return new Promise<AcceptHandles>((resolve) => {
    let settled = false
    const finish = () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (child.connected) child.disconnect()
      resolve(done)
    }
    const child = spawn(process.execPath, ["-e", ECHO_HANDLE], { stdio: ["ignore", "ignore", "ignore", "ipc"] })
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      finish()
    }, timeoutMs)
    child.on("message", (_m, copy) => {
      if (copy === undefined) return
      if (settled) {
        // Too late (timed out): the copy is not used, its descriptor is closed.
        ;(copy as { close?: () => void }).close?.()
        return
      }
      const server = new Server(onConnection)
      server.on("error", onError)
      // A TCP handle given to listen() is used as it is: one more descriptor of the listening socket.
      server.listen(copy as never, () => {
        servers.push(server)
        if (servers.length >= extra) finish()
      })
    })
    child.on("error", (err) => {
      onError(err)
      finish()
    })
    child.on("exit", () => setImmediate(finish))
    // keepOpen: the listener goes on with its own descriptor; the child gets (and sends back) copies.
    child.send({ n: extra }, handle as never, { keepOpen: true } as never, (err) => {
      if (err) {
        onError(err)
        child.kill("SIGKILL")
        finish()
      }
    })
  })
}
