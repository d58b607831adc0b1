// The three MTAs behind one small interface: start one relaying to a sink (or accepting into a discard),
// read its CPU time, stop it. Postern is our process; Postfix and Haraka are started and stopped only
// through the peers' scripts (postfix-relay.sh, haraka-relay.sh), and only when this harness started them.
import { existsSync, readFileSync, rmSync } from "node:fs"
import { onCleanup } from "./cleanup.js"
import { progress, sleep } from "./log.js"
import { BENCH_PEERS_TMP, HARAKA_DIR, harakaInstalled, peerScript } from "./paths.js"
import { freePort } from "./ports.js"
import { isAlive, treeCpuMs } from "./procfs.js"
import { mustRun, runCommand } from "./proc.js"

export type MtaName = "postern" | "postfix" | "haraka"
export const ALL_MTAS: ReadonlyArray<MtaName> = ["postern", "postfix", "haraka"]
export type MtaMode = "relay" | "discard"

export interface StartOptions {
  readonly sinkPort: number
  readonly mode: MtaMode
}

export interface RunningMta {
  readonly name: MtaName
  readonly port: number
  /** Cumulative CPU ms of the MTA's processes (null if unreadable). */
  cpuMs(): number | null
  /** Peak RSS in KiB (Postern only). */
  peakRssKb(): number | null
  stop(): Promise<void>
}

// ------------------------------------------------------------------------------------------- Postfix

const POSTFIX_PID_FILE = "/var/spool/postfix/pid/master.pid"

const postfixRunning = async (): Promise<boolean> =>
  (await runCommand("postfix", ["status"], { timeoutMs: 15_000 })).code === 0

export class PostfixProcess implements RunningMta {
  readonly name = "postfix" as const
  private constructor(
    readonly port: number,
    readonly masterPid: number,
    private readonly unregister: () => void,
  ) {}

  static async start(opts: StartOptions): Promise<PostfixProcess> {
    // postfix-relay.sh restarts the machine's one Postfix: never take it from someone else. Ours is always
    // stopped at the end of its run, so a running Postfix here is not ours.
    if (await postfixRunning()) {
      throw new Error(
        "Postfix is already running and this harness did not start it (someone else's benchmark, or a leftover). " +
          `Stop it with "${peerScript("postfix-relay.sh")} stop" if it is yours, then run the bench again.`,
      )
    }
    const port = await freePort()
    const unregister = onCleanup("postfix", () => PostfixProcess.stopPostfix())
    const args = ["start", String(port), String(opts.sinkPort)]
    if (opts.mode === "discard") args.push("discard")
    try {
      await mustRun(peerScript("postfix-relay.sh"), args, { timeoutMs: 90_000 })
    } catch (e) {
      await PostfixProcess.stopPostfix()
      unregister()
      throw e
    }
    const pid = existsSync(POSTFIX_PID_FILE) ? Number(readFileSync(POSTFIX_PID_FILE, "utf8").trim()) : Number.NaN
    return new PostfixProcess(port, pid, unregister)
  }

  private static async stopPostfix(): Promise<void> {
    const pid = existsSync(POSTFIX_PID_FILE) ? Number(readFileSync(POSTFIX_PID_FILE, "utf8").trim()) : Number.NaN
    await runCommand(peerScript("postfix-relay.sh"), ["stop"], { timeoutMs: 60_000 })
    for (let i = 0; i < 150 && Number.isFinite(pid) && isAlive(pid); i++) await sleep(100)
  }

  cpuMs(): number | null {
    return Number.isFinite(this.masterPid) ? treeCpuMs(this.masterPid) : null
  }

  peakRssKb(): number | null {
    return null
  }

  async stop(): Promise<void> {
    await PostfixProcess.stopPostfix()
    this.unregister()
  }
}

export const postfixVersion = async (): Promise<string> => {
  const r = await runCommand("postconf", ["-h", "mail_version"], { timeoutMs: 10_000 })
  return r.code === 0 ? r.stdout.trim() : "unknown"
}

// -------------------------------------------------------------------------------------------- Haraka

const harakaEnv = (port: number, sinkPort: number, mode: MtaMode): Record<string, string> => ({
  PEERS_TMP: BENCH_PEERS_TMP,
  HARAKA_DIR,
  HARAKA_PORT: String(port),
  SINK_PORT: String(sinkPort),
  HARAKA_MODE: mode === "discard" ? "discard" : "queue",
  NODES: "2",
  HARAKA_LIFETIME: "3600",
})

let harakaInstallTried = false

export const ensureHaraka = async (): Promise<boolean> => {
  if (harakaInstalled()) return true
  if (harakaInstallTried) return false
  harakaInstallTried = true
  progress(`Haraka is not installed in ${HARAKA_DIR}: running install-haraka.sh`)
  const r = await runCommand(peerScript("install-haraka.sh"), [], { timeoutMs: 600_000, env: { HARAKA_DIR } })
  if (r.code !== 0) progress(`install-haraka.sh failed: ${(r.stderr + r.stdout).trim().slice(-500)}`)
  return harakaInstalled()
}

export class HarakaProcess implements RunningMta {
  readonly name = "haraka" as const
  private constructor(
    readonly port: number,
    readonly rootPid: number,
    private readonly env: Record<string, string>,
    private readonly unregister: () => void,
  ) {}

  static async start(opts: StartOptions): Promise<HarakaProcess> {
    if (!(await ensureHaraka())) throw new Error(`Haraka is not installed in ${HARAKA_DIR} (run install-haraka.sh)`)
    const port = await freePort()
    const env = harakaEnv(port, opts.sinkPort, opts.mode)
    const stop = () => HarakaProcess.stopHaraka(env)
    const unregister = onCleanup("haraka", stop)
    try {
      await mustRun(peerScript("haraka-relay.sh"), ["start"], { timeoutMs: 60_000, env })
    } catch (e) {
      await stop()
      unregister()
      throw e
    }
    const pidFile = `${BENCH_PEERS_TMP}/haraka.pid`
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").trim()) : Number.NaN
    // The cluster forks its workers after the port is bound: give them a moment to be ready.
    await sleep(1_000)
    return new HarakaProcess(port, pid, env, unregister)
  }

  private static async stopHaraka(env: Record<string, string>): Promise<void> {
    await runCommand(peerScript("haraka-relay.sh"), ["stop"], { timeoutMs: 60_000, env })
  }

  cpuMs(): number | null {
    return Number.isFinite(this.rootPid) ? treeCpuMs(this.rootPid) : null
  }

  peakRssKb(): number | null {
    return null
  }

  async stop(): Promise<void> {
    await HarakaProcess.stopHaraka(this.env)
    this.unregister()
  }
}

/** Removes our private $PEERS_TMP at the end. */
export const removeBenchPeersTmp = (): void => rmSync(BENCH_PEERS_TMP, { recursive: true, force: true })
