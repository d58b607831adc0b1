// Child processes of the harness: every command runs with a timeout and is registered for cleanup while it
// runs, so an interrupted bench never leaves one behind. Children are signalled by their own PID only.
import { spawn, type ChildProcess } from "node:child_process"
import { onCleanup } from "./cleanup.js"

/** PATH for children: the Postfix tools live in /usr/sbin. */
export const childEnv = (extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv => ({
  ...process.env,
  PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env["PATH"] ?? ""}`,
  ...extra,
})

export interface CommandResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  readonly timedOut: boolean
  readonly ms: number
}

export interface CommandOptions {
  readonly timeoutMs: number
  readonly env?: Readonly<Record<string, string>>
  readonly cwd?: string
  /** Called with the running child (e.g. to kill it early). */
  readonly onSpawn?: (child: ChildProcess) => void
}

const MAX_CAPTURE = 1 << 20

/** Stops a child we started: SIGTERM, then SIGKILL after `graceMs`. Resolves once it has exited. */
export const stopChild = (child: ChildProcess, graceMs = 5_000): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resolve()
    const done = () => {
      clearTimeout(timer)
      resolve()
    }
    child.once("exit", done)
    const timer = setTimeout(() => {
      try {
        process.kill(child.pid!, "SIGKILL")
      } catch {
        /* already gone */
      }
      setTimeout(resolve, 1_000)
    }, graceMs)
    try {
      process.kill(child.pid, "SIGTERM")
    } catch {
      done()
    }
  })

/** Runs a command to completion (or until `timeoutMs`, when it is killed and `timedOut` is set). */
export const runCommand = (cmd: string, args: ReadonlyArray<string>, opts: CommandOptions): Promise<CommandResult> =>
  new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, [...args], {
      env: childEnv(opts.env),
      cwd: opts.cwd,
      stdio: ["ignore", "pipe", "pipe"],
    })
    let stdout = ""
    let stderr = ""
    let timedOut = false
    let settled = false
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      if (stdout.length < MAX_CAPTURE) stdout += d
    })
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < MAX_CAPTURE) stderr += d
    })
    const unregister = onCleanup(`${cmd} (pid ${child.pid ?? "?"})`, () => stopChild(child, 2_000))
    const timer = setTimeout(() => {
      timedOut = true
      void stopChild(child, 2_000)
    }, opts.timeoutMs)
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      unregister()
      resolve({ code, signal, stdout, stderr, timedOut, ms: performance.now() - t0 })
    }
    child.once("error", (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      unregister()
      reject(err)
    })
    // 'exit' rather than 'close': a daemon started by a script may keep an inherited pipe open. Give the
    // pipes a moment to drain, then settle either way.
    child.once("exit", (code, signal) => {
      const fallback = setTimeout(() => finish(code, signal), 300)
      child.once("close", () => {
        clearTimeout(fallback)
        finish(code, signal)
      })
    })
    opts.onSpawn?.(child)
  })

/** Runs a command and throws, with its output, unless it exits 0 in time. */
export const mustRun = async (cmd: string, args: ReadonlyArray<string>, opts: CommandOptions): Promise<CommandResult> => {
  const r = await runCommand(cmd, args, opts)
  if (r.timedOut || r.code !== 0) {
    const why = r.timedOut ? `timed out after ${opts.timeoutMs / 1000}s` : `exited ${r.code ?? r.signal}`
    throw new Error(`${cmd} ${args.join(" ")} ${why}: ${(r.stderr + r.stdout).trim().slice(-1500)}`)
  }
  return r
}
