// Starts the built Postern (dist/cli/main.js) as a child process for the chaos and soak drivers. Unlike
// test/support/child.ts it keeps the child's whole stdout (pino JSON at `info`: one line per delivery
// attempt) in a log file per incarnation, which is the evidence when something goes wrong. Every child is
// tracked by PID and SIGKILLed by PID if the driver exits or is interrupted; nothing else is ever signalled.
import { spawn } from "node:child_process"
import { createWriteStream, existsSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { POSTERN_MAIN } from "../../support/child.js"

const HOST = "127.0.0.1"
const READY = /postern: listening on 127\.0\.0\.1:(\d+)/

export interface Destinations {
  readonly ok: number
  readonly flaky: number
  readonly hang: number
}

/** The fault-injection config: three destinations side by side, small timeouts and backoffs. */
export const chaosConfig = (dataDir: string, port: number, dest: Destinations, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  hostname: "postern.chaos.test",
  logLevel: "info",
  transports: {
    "ok.test": `smtp:[${HOST}]:${dest.ok}`,
    "flaky.test": `smtp:[${HOST}]:${dest.flaky}`,
    "hang.test": `smtp:[${HOST}]:${dest.hang}`,
    // anything else (a bounce to the load's sender, which should never happen) lands at the healthy
    // receiver, where the ledger counts it as "unknown" instead of it sitting deferred on a DNS lookup
    "*": `smtp:[${HOST}]:${dest.ok}`,
  },
  smtpConnectTimeout: "1s",
  smtpHeloTimeout: "2s",
  smtpDataDoneTimeout: "3s",
  minimalBackoffTime: "1s",
  maximalBackoffTime: "2s",
  ...extra,
  dataDir: resolve(dataDir),
  listen: [{ address: `${HOST}:${port}`, greetWait: "0s" }],
})

/** Writes the config (JSON is YAML) to `file`. */
export const writeConfigFile = (file: string, config: Record<string, unknown>): string => {
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`)
  return file
}

export interface Incarnation {
  readonly pid: number
  readonly port: number
  /** 0 for the first start, then 1, 2, ... */
  readonly n: number
  readonly logFile: string
  readonly startedAt: number
  readonly readyAt: number
  /** Resolves when the process has exited, whatever the reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** true once kill9() or stop() was asked for: an exit without it is unexpected. */
  readonly signalled: () => boolean
  readonly stderr: () => string
  kill9(): Promise<void>
  /** SIGTERM; past timeoutMs SIGKILL. Resolves with the exit code (null if a signal ended it) and whether it timed out. */
  stop(timeoutMs?: number): Promise<{ code: number | null; timedOut: boolean }>
}

const running = new Set<number>()

const killAll = (): void => {
  for (const pid of running) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      /* already gone */
    }
  }
  running.clear()
}
process.once("exit", killAll)

/** SIGKILLs (by PID) every Postern this module started that still runs. */
export const killStartedPosterns = killAll

export class StartError extends Error {}

/** `node dist/cli/main.js start --config FILE`; resolves at its "listening" line. Logs go to `logFile` (stdout) and `logFile`.stderr. */
export async function startPostern(opts: { configFile: string; logFile: string; n: number; readyTimeoutMs?: number }): Promise<Incarnation> {
  if (!existsSync(POSTERN_MAIN)) throw new StartError(`${POSTERN_MAIN} is missing: run \`npm run build\` first`)
  const startedAt = Date.now()
  const child = spawn(process.execPath, [POSTERN_MAIN, "start", "--config", opts.configFile], {
    cwd: dirname(opts.configFile),
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NODE_ENV: "test" },
  })
  const pid = child.pid
  if (pid === undefined) throw new StartError("spawn failed (no pid)")
  running.add(pid)
  const out = createWriteStream(opts.logFile)
  const errOut = createWriteStream(`${opts.logFile}.stderr`)
  child.stdout!.pipe(out)
  let err = ""
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (s: string) => {
    errOut.write(s)
    if (err.length < 64 * 1024) err += s
  })
  let asked = false
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once("exit", (code, signal) => {
      running.delete(pid)
      res({ code, signal })
    })
  })
  const closed = new Promise<void>((res) => child.once("close", () => res()))
  void closed.then(() => {
    out.end()
    errOut.end()
  })

  const port = await new Promise<number>((res, rej) => {
    const timeoutMs = opts.readyTimeoutMs ?? 20_000
    const timer = setTimeout(() => {
      asked = true
      child.kill("SIGKILL")
      rej(new StartError(`postern pid ${pid} not listening after ${timeoutMs} ms\n${err}`))
    }, timeoutMs)
    const onErr = (): void => {
      const m = READY.exec(err)
      if (m !== null) {
        clearTimeout(timer)
        child.stderr!.off("data", onErr)
        res(Number(m[1]))
      }
    }
    child.stderr!.on("data", onErr)
    void exited.then(async ({ code, signal }) => {
      clearTimeout(timer)
      await Promise.race([closed, new Promise((r) => setTimeout(r, 200))])
      rej(new StartError(`postern pid ${pid} exited (code ${code}, signal ${signal}) before listening after ${Date.now() - startedAt} ms\n${err}`))
    })
  })

  return {
    pid,
    port,
    n: opts.n,
    logFile: opts.logFile,
    startedAt,
    readyAt: Date.now(),
    exited,
    signalled: () => asked,
    stderr: () => err,
    kill9: async () => {
      asked = true
      if (running.has(pid)) process.kill(pid, "SIGKILL")
      await exited
    },
    stop: async (timeoutMs = 15_000) => {
      asked = true
      if (running.has(pid)) process.kill(pid, "SIGTERM")
      let timer: NodeJS.Timeout | undefined
      const r = await Promise.race([exited, new Promise<"timeout">((res) => (timer = setTimeout(() => res("timeout"), timeoutMs)))])
      clearTimeout(timer)
      if (r === "timeout") {
        if (running.has(pid)) process.kill(pid, "SIGKILL")
        const e = await exited
        return { code: e.code, timedOut: true }
      }
      return { code: r.code, timedOut: false }
    },
  }
}

/** A file path inside `dir`. */
export const inDir = (dir: string, name: string): string => join(dir, name)
