// Postern under test: the built CLI (`node dist/cli/main.js start --config <yaml>`) with a fresh data folder
// per run, ready when stderr says `postern: listening on`, stopped with SIGTERM by PID. Its CPU time
// (utime+stime) and peak RSS (VmHWM) are read from /proc while it runs.
import { spawn, type ChildProcess } from "node:child_process"
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { onCleanup } from "./cleanup.js"
import { now, sleep } from "./log.js"
import { POSTERN_CLI, REPO, SCRATCH } from "./paths.js"
import { freePort } from "./ports.js"
import { peakRssKb, processCpuMs } from "./procfs.js"
import type { MtaMode, RunningMta, StartOptions } from "./mta.js"

export interface PosternStartOptions extends StartOptions {
  /** Use this data folder (e.g. a seeded queue) instead of a fresh one. */
  readonly dataDir?: string
  /** Remove the data folder at stop (default: true for a fresh one, false for a given one). */
  readonly removeDataDir?: boolean
  /** Listen on this port (default: a free one). */
  readonly port?: number
  /** Write a V8 CPU profile into this folder at exit (node --cpu-prof). */
  readonly cpuProfDir?: string
  /** How long to wait for `postern: listening on` (default 60 s; a large queue takes longer to open). */
  readonly readyTimeoutMs?: number
}

export const posternConfig = (port: number, sinkPort: number, mode: MtaMode, dataDir: string) => ({
  listen: [{ address: `127.0.0.1:${port}`, greetWait: "0s" }],
  transports: { "*": mode === "discard" ? "discard:" : `smtp:[127.0.0.1]:${sinkPort}` },
  logLevel: "warn",
  dataDir,
  hostname: "postern.bench.test",
})

export const newRunDir = (label: string): string => {
  mkdirSync(SCRATCH, { recursive: true })
  return mkdtempSync(join(SCRATCH, `${label}-`))
}

export class PosternProcess implements RunningMta {
  readonly name = "postern" as const
  private hwmKb: number | null = null
  private lastCpuMs: number | null = null
  private sampler: NodeJS.Timeout
  private stderrTail = ""
  private exited: Promise<void>
  private unregister: () => void

  private constructor(
    readonly port: number,
    readonly pid: number,
    readonly child: ChildProcess,
    readonly runDir: string,
    readonly dataDir: string,
    private readonly removeRunDir: boolean,
    private readonly removeDataDir: boolean,
    /** ms from spawn to `listening on`. */
    public readyMs: number,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve()
      else child.once("exit", () => resolve())
    })
    this.sampler = setInterval(() => this.sample(), 500)
    this.unregister = onCleanup(`postern pid ${pid}`, () => this.stop())
  }

  private sample(): void {
    const hwm = peakRssKb(this.pid)
    if (hwm !== null) this.hwmKb = Math.max(this.hwmKb ?? 0, hwm)
    const cpu = processCpuMs(this.pid)
    if (cpu !== null) this.lastCpuMs = cpu
  }

  static async start(opts: PosternStartOptions): Promise<PosternProcess> {
    const port = opts.port ?? (await freePort())
    const runDir = newRunDir("postern")
    const dataDir = opts.dataDir ?? join(runDir, "data")
    const configFile = join(runDir, "postern.yaml")
    writeFileSync(configFile, `${JSON.stringify(posternConfig(port, opts.sinkPort, opts.mode, dataDir), null, 2)}\n`)
    // As every launcher runs it (package.json's start, the bin's shebang, deploy/postern.service).
    const nodeArgs: Array<string> = ["--max-semi-space-size=32"]
    if (opts.cpuProfDir !== undefined) {
      mkdirSync(opts.cpuProfDir, { recursive: true })
      nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`)
    }
    const log = createWriteStream(join(runDir, "postern.log"))
    const t0 = now()
    const child = spawn(process.execPath, [...nodeArgs, POSTERN_CLI, "start", "--config", configFile], {
      cwd: REPO,
      stdio: ["ignore", "pipe", "pipe"],
    })
    if (child.pid === undefined) throw new Error("could not spawn Postern")
    child.stdout!.pipe(log)
    const removeDataDir = opts.removeDataDir ?? opts.dataDir === undefined
    const proc = new PosternProcess(port, child.pid, child, runDir, dataDir, true, removeDataDir, 0)
    const ready = new Promise<void>((resolve, reject) => {
      let seen = ""
      const timer = setTimeout(
        () => reject(new Error(`Postern did not say "listening on" within ${(opts.readyTimeoutMs ?? 60_000) / 1000}s: ${seen.slice(-1000)}`)),
        opts.readyTimeoutMs ?? 60_000,
      )
      child.stderr!.setEncoding("utf8").on("data", (d: string) => {
        seen += d
        proc.stderrTail = (proc.stderrTail + d).slice(-4000)
        if (seen.includes("postern: listening on")) {
          clearTimeout(timer)
          resolve()
        }
      })
      child.once("exit", (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`Postern exited (${code ?? signal}) before listening: ${seen.slice(-1500)}`))
      })
    })
    try {
      await ready
    } catch (e) {
      await proc.stop()
      throw e
    }
    proc.readyMs = now() - t0
    proc.sample()
    return proc
  }

  cpuMs(): number | null {
    const cpu = processCpuMs(this.pid)
    if (cpu !== null) this.lastCpuMs = cpu
    return cpu ?? this.lastCpuMs
  }

  peakRssKb(): number | null {
    this.sample()
    return this.hwmKb
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  get stderr(): string {
    return this.stderrTail
  }

  /** SIGKILL, as a crash: the data folder stays (recovery scenario). */
  async kill(): Promise<void> {
    this.sample()
    clearInterval(this.sampler)
    if (this.alive) process.kill(this.pid, "SIGKILL")
    await Promise.race([this.exited, sleep(10_000)])
    this.unregister()
    if (this.removeRunDir) rmSync(this.runDir, { recursive: true, force: true })
  }

  /** SIGTERM by PID, wait for the exit (Postern gives deliveries up to 10 s), SIGKILL after 20 s. */
  async stop(): Promise<void> {
    this.sample()
    clearInterval(this.sampler)
    if (this.alive) {
      try {
        process.kill(this.pid, "SIGTERM")
      } catch {
        /* gone */
      }
      const t = await Promise.race([this.exited.then(() => "exited"), sleep(20_000).then(() => "timeout")])
      if (t === "timeout" && this.alive) {
        process.kill(this.pid, "SIGKILL")
        await Promise.race([this.exited, sleep(5_000)])
      }
    }
    this.unregister()
    if (this.removeDataDir) rmSync(this.dataDir, { recursive: true, force: true })
    if (this.removeRunDir) rmSync(this.runDir, { recursive: true, force: true })
  }
}
