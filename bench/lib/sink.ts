// A fresh smtp-sink per run (`sink.sh start PORT`) and its message counter. The count is read the way
// `sink.sh count` reads it (the last `mesg=N` in the tail of the sink's output file), without forking a
// shell pipeline every 50 ms on a 2-core machine.
import { openSync, readSync, closeSync, fstatSync, rmSync } from "node:fs"
import { onCleanup } from "./cleanup.js"
import { mustRun, runCommand } from "./proc.js"
import { peerScript } from "./paths.js"
import { freePort } from "./ports.js"

export class Sink {
  private constructor(
    readonly port: number,
    private readonly unregister: () => void,
  ) {}

  private get outFile(): string {
    return `/tmp/peers-sink-${this.port}.out`
  }

  static async start(port?: number): Promise<Sink> {
    const p = port ?? (await freePort())
    const stop = () => Sink.stopPort(p)
    const unregister = onCleanup(`smtp-sink on ${p}`, stop)
    try {
      await mustRun(peerScript("sink.sh"), ["start", String(p)], { timeoutMs: 20_000 })
    } catch (e) {
      await stop()
      unregister()
      throw e
    }
    return new Sink(p, unregister)
  }

  private static async stopPort(port: number): Promise<void> {
    await runCommand(peerScript("sink.sh"), ["stop", String(port)], { timeoutMs: 10_000 })
    rmSync(`/tmp/peers-sink-${port}.out`, { force: true })
  }

  /** Messages the sink has accepted since it started. */
  count(): number {
    let fd: number
    try {
      fd = openSync(this.outFile, "r")
    } catch {
      return 0
    }
    try {
      const size = fstatSync(fd).size
      const len = Math.min(4096, size)
      const buf = Buffer.alloc(len)
      readSync(fd, buf, 0, len, size - len)
      const matches = buf.toString("latin1").match(/mesg=(\d+)/g)
      if (matches === null) return 0
      return Number(matches[matches.length - 1]!.slice(5))
    } finally {
      closeSync(fd)
    }
  }

  async stop(): Promise<void> {
    await Sink.stopPort(this.port)
    this.unregister()
  }
}
