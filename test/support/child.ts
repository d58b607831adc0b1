// Runs the built Postern (dist/cli/main.js) as a child process, the way an operator runs it: a YAML config
// file, `start` in the foreground, SIGTERM to stop, SIGKILL to crash. For tests of what survives a crash
// and what a signal does, which an in-process Postern cannot show. Run `npm run build` first.
//
// Only 127.0.0.1 is ever used. Every child this module starts is tracked by its PID; `cleanupChildren()`
// (call it in afterEach) SIGKILLs the ones still running, by PID, and removes the temporary config files.
import { execFile, spawn, type ChildProcess } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const HOST = "127.0.0.1"
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
/** The built command line entry point. */
export const POSTERN_MAIN = join(ROOT, "dist/cli/main.js")
const READY = /postern: listening on 127\.0\.0\.1:(\d+)/
/** tsx's loader, by path: the child runs in the config file's folder, where `--import tsx` would not resolve. */
const TSX_LOADER = pathToFileURL(join(ROOT, "node_modules/tsx/dist/loader.mjs")).href
/** Keep at most this much of a child's stdout (pino JSON) for diagnostics. */
const STDOUT_CAP = 256 * 1024

export interface ChildOptions {
  /** Config keys as in postern.yaml (see docs/configuration.md); `dataDir`, `listen` and `logLevel` are filled in. */
  readonly config?: Record<string, unknown>
  /** The data folder; required so a restart can reuse it. */
  readonly dataDir: string
  /** The SMTP port on 127.0.0.1; default: a free one (see freePort). Pass the old one to restart "in place". */
  readonly port?: number
  /** How long to wait for the "listening" line (default 15 s). */
  readonly readyTimeoutMs?: number
  /**
   * A TypeScript program to run (with tsx) instead of `dist/cli/main.js start`, given the config file and
   * `args`: test/support/fault-child.ts runs Postern's start with a test-only fault hook.
   */
  readonly script?: { readonly path: string; readonly args?: ReadonlyArray<string> }
}

export interface PosternChild {
  readonly pid: number
  readonly port: number
  readonly dataDir: string
  /** The YAML file the child was started with (for `queue list --config`). */
  readonly configFile: string
  /** SIGTERM, then resolves with the exit code (null if a signal ended it). Past `timeoutMs` (default 15 s) it SIGKILLs and rejects. */
  stop(timeoutMs?: number): Promise<number | null>
  /** SIGKILL; resolves once the process is gone. */
  kill9(): Promise<void>
  /** Everything the child wrote to stderr so far. */
  stderr(): string
  /** What it wrote to stdout so far (pino JSON lines; capped). */
  stdout(): string
  /** Resolves when the process has exited, whatever the reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** The child ended (or was killed) before it said it was listening. */
export class ChildStartError extends Error {
  constructor(
    message: string,
    readonly code: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderr: string,
    readonly elapsedMs: number,
  ) {
    super(`${message}\n--- child stderr ---\n${stderr}`)
  }
}

const running = new Map<number, ChildProcess>()
const scratch = new Set<string>()

/** A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close). */
export const freePort = (): Promise<number> =>
  new Promise((res, rej) => {
    const srv = createServer()
    srv.unref()
    srv.once("error", rej)
    srv.listen(0, HOST, () => {
      const addr = srv.address()
      const port = addr !== null && typeof addr === "object" ? addr.port : 0
      srv.close(() => (port > 0 ? res(port) : rej(new Error("freePort: no port"))))
    })
  })

/** A fresh temporary folder, removed by cleanupChildren(). */
export const tempDir = (prefix = "postern-child-"): string => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  scratch.add(dir)
  return dir
}

/** Writes the config file for a child; JSON is YAML, so the object goes out as JSON. */
export const writeConfig = (opts: { config?: Record<string, unknown>; dataDir: string; port: number }): string => {
  const config = {
    hostname: "postern.test",
    logLevel: "warn",
    ...opts.config,
    dataDir: resolve(opts.dataDir),
    listen: [{ address: `${HOST}:${opts.port}`, greetWait: "0s" }],
  }
  const file = join(tempDir("postern-conf-"), "postern.yaml")
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`)
  return file
}

const ensureBuilt = (): void => {
  if (!existsSync(POSTERN_MAIN)) throw new Error(`${POSTERN_MAIN} is missing: run \`npm run build\` first`)
}

/** Spawns `node dist/cli/main.js start --config FILE` and resolves once it prints its "listening" line. */
export async function startPosternChild(opts: ChildOptions): Promise<PosternChild> {
  if (opts.script === undefined) ensureBuilt()
  const port = opts.port ?? (await freePort())
  const configFile = writeConfig({ ...(opts.config !== undefined ? { config: opts.config } : {}), dataDir: opts.dataDir, port })
  const started = Date.now()
  const argv =
    opts.script === undefined
      ? [POSTERN_MAIN, "start", "--config", configFile]
      : ["--import", TSX_LOADER, resolve(ROOT, opts.script.path), configFile, ...(opts.script.args ?? [])]
  const child = spawn(process.execPath, argv, {
    cwd: dirname(configFile),
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NODE_ENV: "test" },
  })
  const pid = child.pid
  if (pid === undefined) throw new Error("startPosternChild: spawn failed (no pid)")
  running.set(pid, child)

  let err = ""
  let out = ""
  child.stderr!.setEncoding("utf8")
  child.stdout!.setEncoding("utf8")
  child.stdout!.on("data", (s: string) => {
    if (out.length < STDOUT_CAP) out += s
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once("exit", (code, signal) => {
      running.delete(pid)
      res({ code, signal })
    })
  })
  // Stdio may still hold the last bytes when 'exit' fires; 'close' waits for them.
  const closed = new Promise<void>((res) => child.once("close", () => res()))

  const readyPort = await new Promise<number>((res, rej) => {
    const timeoutMs = opts.readyTimeoutMs ?? 15_000
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      rej(new ChildStartError(`postern child ${pid} not listening after ${timeoutMs} ms`, null, null, err, Date.now() - started))
    }, timeoutMs)
    child.stderr!.on("data", (s: string) => {
      err += s
      const m = READY.exec(err)
      if (m !== null) {
        clearTimeout(timer)
        res(Number(m[1]))
      }
    })
    void exited.then(async ({ code, signal }) => {
      clearTimeout(timer)
      await Promise.race([closed, new Promise((r) => setTimeout(r, 200))])
      rej(new ChildStartError(`postern child ${pid} exited (code ${code}, signal ${signal}) before listening`, code, signal, err, Date.now() - started))
    })
  })

  const isRunning = () => running.has(pid)
  return {
    pid,
    port: readyPort,
    dataDir: resolve(opts.dataDir),
    configFile,
    exited,
    stderr: () => err,
    stdout: () => out,
    kill9: async () => {
      if (isRunning()) process.kill(pid, "SIGKILL")
      await exited
    },
    stop: async (timeoutMs = 15_000) => {
      if (isRunning()) process.kill(pid, "SIGTERM")
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<"timeout">((r) => {
        timer = setTimeout(() => r("timeout"), timeoutMs)
      })
      const result = await Promise.race([exited, timeout])
      clearTimeout(timer)
      if (result === "timeout") {
        if (isRunning()) process.kill(pid, "SIGKILL")
        await exited
        throw new Error(`postern child ${pid} did not exit within ${timeoutMs} ms of SIGTERM\n--- child stderr ---\n${err}`)
      }
      return result.code
    },
  }
}

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a one-shot `postern ...` command (e.g. ["queue", "list", "--json", "--config", f]) to completion. */
export const runPosternCli = (args: ReadonlyArray<string>, timeoutMs = 10_000): Promise<CliResult> => {
  ensureBuilt()
  return new Promise((res) => {
    execFile(process.execPath, [POSTERN_MAIN, ...args], { timeout: timeoutMs, encoding: "utf8" }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : null
      res({ code, stdout, stderr })
    })
  })
}

/** One entry of `postern queue list --json` (JSON Lines). */
export interface QueueListEntry {
  readonly queue_name: string
  readonly queue_id: string
  readonly arrival_time: number
  readonly message_size: number
  readonly sender: string
  readonly recipients: ReadonlyArray<{
    readonly address: string
    readonly delay_reason?: string
    readonly next_attempt_time: number
    readonly attempts: number
    readonly destination?: string
  }>
}

/** `postern queue list --json --config FILE`, parsed; throws if the command fails. */
export const queueListJson = async (configFile: string): Promise<Array<QueueListEntry>> => {
  const r = await runPosternCli(["queue", "list", "--json", "--config", configFile])
  if (r.code !== 0) throw new Error(`postern queue list exited ${r.code}: ${r.stderr}`)
  return r.stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as QueueListEntry)
}

/** SIGKILLs (by PID) every child of this module still running, then removes the temporary folders. */
export async function cleanupChildren(): Promise<void> {
  const waits: Array<Promise<unknown>> = []
  for (const [pid, child] of running) {
    waits.push(new Promise((r) => child.once("exit", r)))
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      /* already gone */
    }
  }
  await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 5_000))])
  running.clear()
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true })
  scratch.clear()
}

// A test runner that dies must not leave Postern children behind.
process.once("exit", () => {
  for (const pid of running.keys()) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      /* already gone */
    }
  }
})
