// One measured run: Postfix's smtp-source injects (a new SMTP session per message, as blast.sh and e2e.sh
// do) and we time it. End to end, the run ends when the sink has counted every message (e2e.sh); accept
// only, when smtp-source is done (blast.sh). CPU of the MTA is read before and after (after the MTA has
// gone quiet, so the deliveries and deletions that follow the last 250 are counted too).
import type { ChildProcess } from "node:child_process"
import { fmtInt, now, progress, sleep } from "./log.js"
import { runCommand, stopChild } from "./proc.js"
import type { Sink } from "./sink.js"

export interface SourceParams {
  readonly port: number
  readonly sessions: number
  readonly messages: number
  readonly size: number
}

/** What one MTA run measured. Rates are messages per second. */
export interface RunResult {
  readonly who: string
  readonly round: number
  readonly messages: number
  /** Messages counted at the sink (end to end) or acknowledged to smtp-source (accept only). */
  readonly done: number
  readonly seconds: number
  readonly rate: number
  readonly acceptSeconds: number
  readonly acceptRate: number
  readonly cpuMs: number | null
  readonly cpuMsPerMsg: number | null
  readonly peakRssMb: number | null
  /** The time budget ran out before the end: rate is what was done in the budget. */
  readonly truncated: boolean
  readonly error: string | null
}

export interface CpuProbe {
  cpuMs(): number | null
  peakRssKb(): number | null
}

const NO_CPU: CpuProbe = { cpuMs: () => null, peakRssKb: () => null }

/**
 * smtp-source as blast.sh/e2e.sh run it (plus -c, a counter on stdout, so a run cut short by the budget
 * still says how many messages were acknowledged); resolves when it exits or is killed at the timeout.
 */
const smtpSource = async (
  p: SourceParams,
  timeoutMs: number,
): Promise<{ ms: number; ok: boolean; timedOut: boolean; count: number; detail: string }> => {
  let child: ChildProcess | null = null
  const r = await runCommand(
    "smtp-source",
    ["-c", "-s", String(p.sessions), "-m", String(p.messages), "-l", String(p.size), "-f", "sender@source.test", "-t", "rcpt@dest.test", `127.0.0.1:${p.port}`],
    { timeoutMs, onSpawn: (c) => (child = c) },
  )
  if (child !== null) await stopChild(child, 1_000)
  const detail = r.stderr.trim().split("\n").slice(-3).join(" | ")
  // -c: a running counter of completed DATA commands, "1\r2\r…", tells how far a killed run got.
  const counts = r.stdout.match(/\d+/g)
  const count = counts === null ? 0 : Number(counts[counts.length - 1])
  return { ms: r.ms, ok: r.code === 0 && !r.timedOut, timedOut: r.timedOut, count, detail }
}

/** Waits until the MTA's CPU time stops growing (two quiet 250 ms samples), at most `maxMs`. */
const settleCpu = async (probe: CpuProbe, maxMs: number): Promise<number | null> => {
  let last = probe.cpuMs()
  if (last === null) return null
  const until = now() + maxMs
  let quiet = 0
  while (now() < until && quiet < 2) {
    await sleep(250)
    const c = probe.cpuMs()
    if (c === null) return last
    quiet = c - last < 3 ? quiet + 1 : 0
    last = c
  }
  return last
}

const ticker = (label: string, every: number, line: () => string): (() => void) => {
  const t = setInterval(() => progress(`${label}: ${line()}`), every)
  return () => clearInterval(t)
}

/** The warm-up before a measured run, when the bench is not told otherwise: 10% of the run, at most 2,000. */
export const warmupCount = (asked: number | null, messages: number): number =>
  asked ?? Math.min(2_000, Math.ceil(messages / 10))

/**
 * Sends `p.messages` through a freshly started MTA before its measured run, and waits until they are done
 * (counted at `sink` when it relays, acknowledged when it discards): every MTA alike then meets the measured
 * load warm, with its code compiled (V8's JIT for Postern and Haraka), its process pools spawned (Postfix's
 * smtpd, cleanup and smtp processes) and its caches filled, as it is in production after its first minute.
 */
export const warmUp = async (who: string, p: SourceParams, sink: Sink | null, budgetMs: number): Promise<void> => {
  if (p.messages <= 0) return
  progress(`${who}: warm-up, ${fmtInt(p.messages)} messages (not measured)`)
  const before = sink?.count() ?? 0
  const s = await smtpSource(p, budgetMs)
  if (!s.ok) throw new Error(`warm-up failed: ${s.timedOut ? `not done within ${budgetMs / 1000}s` : s.detail}`)
  if (sink === null) return
  const deadline = now() + budgetMs
  while (sink.count() - before < p.messages) {
    if (now() >= deadline) throw new Error(`warm-up: the sink counted ${sink.count() - before} of ${p.messages} within ${budgetMs / 1000}s`)
    await sleep(50)
  }
}

/** End to end: smtp-source → MTA → sink, until the sink counted every message or the budget ran out. */
export const e2eRun = async (
  who: string,
  round: number,
  p: SourceParams,
  sink: Sink,
  budgetMs: number,
  probe: CpuProbe = NO_CPU,
): Promise<RunResult> => {
  const before = sink.count()
  const cpu0 = probe.cpuMs()
  const t0 = now()
  const deadline = t0 + budgetMs
  let accepted: number | null = null
  const stopTicker = ticker(`${who} round ${round + 1}`, 10_000, () => {
    const got = sink.count() - before
    const s = (now() - t0) / 1000
    return `${fmtInt(got)}/${fmtInt(p.messages)} at the sink after ${s.toFixed(0)}s (${fmtInt(got / s)} msg/s)${accepted === null ? "" : ", all accepted"}`
  })
  try {
    let failed = false
    const src = smtpSource(p, budgetMs).then((r) => {
      accepted = now()
      failed = !r.ok && !r.timedOut
      return r
    })
    let done = 0
    let timedOut = false
    let failedAt: number | null = null
    for (;;) {
      done = sink.count() - before
      if (done >= p.messages) break
      if (now() >= deadline) {
        timedOut = true
        break
      }
      // smtp-source gave up: what it did hand over still reaches the sink, for a few seconds.
      if (failed) {
        failedAt ??= now()
        if (now() - failedAt > 5_000) break
      }
      await sleep(50)
    }
    const end = now()
    const s = await src
    const cpu1 = await settleCpu(probe, 5_000)
    const seconds = (end - t0) / 1000
    const acceptSeconds = ((accepted ?? end) - t0) / 1000
    const cpuMs = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null
    const rss = probe.peakRssKb()
    const error = !s.ok && !s.timedOut ? `smtp-source: ${s.detail}` : null
    return {
      who,
      round,
      messages: p.messages,
      done,
      seconds,
      rate: done / seconds,
      acceptSeconds,
      acceptRate: s.ok ? p.messages / acceptSeconds : Number.NaN,
      cpuMs,
      cpuMsPerMsg: cpuMs !== null && done > 0 ? cpuMs / done : null,
      peakRssMb: rss === null ? null : rss / 1024,
      truncated: timedOut,
      error,
    }
  } finally {
    stopTicker()
  }
}

/** Accept only (blast.sh): the time smtp-source takes to have every message acknowledged. */
export const acceptRun = async (
  who: string,
  round: number,
  p: SourceParams,
  budgetMs: number,
  probe: CpuProbe = NO_CPU,
): Promise<RunResult> => {
  const cpu0 = probe.cpuMs()
  const t0 = now()
  const stopTicker = ticker(`${who} round ${round + 1}`, 10_000, () => `smtp-source running for ${((now() - t0) / 1000).toFixed(0)}s`)
  try {
    const s = await smtpSource(p, budgetMs)
    const seconds = s.ms / 1000
    const cpu1 = await settleCpu(probe, 10_000)
    const cpuMs = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null
    const rss = probe.peakRssKb()
    const done = s.ok ? p.messages : s.count
    const rate = s.ok || s.timedOut ? done / seconds : Number.NaN
    return {
      who,
      round,
      messages: p.messages,
      done,
      seconds,
      rate,
      acceptSeconds: seconds,
      acceptRate: rate,
      cpuMs,
      cpuMsPerMsg: cpuMs !== null && done > 0 ? cpuMs / done : null,
      peakRssMb: rss === null ? null : rss / 1024,
      truncated: s.timedOut,
      error: s.ok ? null : s.timedOut ? `did not finish within ${budgetMs / 1000}s` : `smtp-source: ${s.detail}`,
    }
  } finally {
    stopTicker()
  }
}

/** For the next rounds: a message count the MTA can do within ~60% of the budget at the rate it showed. */
export const reducedCount = (rate: number, budgetMs: number, asked: number): number => {
  const fit = Math.floor((rate * (budgetMs / 1000) * 0.6) / 100) * 100
  return Math.max(200, Math.min(asked, fit))
}
