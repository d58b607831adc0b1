// Scenario 4, latency: end-of-data → 250 latency (p50/p99/max) of each MTA at 50% of its accept rate
// (scenario 3's median from this invocation, else a quick accept measurement first), offered by the
// open-loop injector (bench/inject-open-loop.ts) in its own process while the MTA relays to a fresh sink.
import { join } from "node:path"
import type { InjectResult } from "../inject-open-loop.js"
import { fmtInt, fmtNum, progress, warn } from "../lib/log.js"
import type { MtaName } from "../lib/mta.js"
import { acceptParticipant, MTA_LABEL } from "../lib/participants.js"
import { BENCH } from "../lib/paths.js"
import { warmUp, warmupCount } from "../lib/measure.js"
import { runCommand } from "../lib/proc.js"
import { runRounds } from "../lib/rounds.js"
import { Sink } from "../lib/sink.js"
import { startMta } from "../lib/start-mta.js"
import { fmtSpread, spread } from "../lib/stats.js"
import { rotate, type Scenario, type ScenarioContext, type ScenarioOutcome } from "./types.js"

const SIZE = 5120
const PROBE_MESSAGES = 3_000
const LOAD = 0.5

interface LatencyRun {
  readonly mta: MtaName
  readonly round: number
  readonly result: InjectResult | null
  readonly cpuMsPerMsg: number | null
  readonly error: string | null
}

/** Each MTA's accept rate: from scenario 3 in this invocation, or a quick single accept run now. */
const acceptRates = async (ctx: ScenarioContext): Promise<{ rates: Map<MtaName, number>; source: string }> => {
  const { opts } = ctx
  const missing = opts.mtas.filter((m) => !ctx.acceptRates.has(m))
  if (missing.length === 0) return { rates: ctx.acceptRates, source: "the accept scenario of this run (median)" }
  progress(`latency: no accept rate yet for ${missing.join(", ")}: measuring a quick one (${fmtInt(PROBE_MESSAGES)} messages, 1 run each)`)
  const shape = { sessions: 20, size: SIZE, budgetMs: opts.budgetMs, cpuProfDir: null, warmup: opts.warmup }
  const { summaries } = await runRounds("latency/accept-probe", missing.map((m) => acceptParticipant(m, shape)), 1, PROBE_MESSAGES, opts.budgetMs)
  const rates = new Map(ctx.acceptRates)
  for (const s of summaries) if (s.rate.n > 0) rates.set(s.key as MtaName, s.rate.median)
  return {
    rates,
    source:
      missing.length === opts.mtas.length
        ? `a quick accept run in this invocation (${fmtInt(PROBE_MESSAGES)} × 5 KiB, 20 sessions, discard mode, 1 run each)`
        : "the accept scenario of this run, and a quick accept run for the rest",
  }
}

const runInjector = async (port: number, rate: number, count: number, durationS: number): Promise<InjectResult> => {
  const timeoutMs = (durationS + 120) * 1000
  const r = await runCommand(
    process.execPath,
    [
      "--import",
      "tsx",
      join(BENCH, "inject-open-loop.ts"),
      "--port",
      String(port),
      "--rate",
      String(rate),
      "--count",
      String(count),
      "--size",
      String(SIZE),
      "--max-inflight",
      "1000",
      "--timeout-s",
      "30",
      "--drain-s",
      "40",
    ],
    {
      timeoutMs,
      cwd: join(BENCH, ".."),
      // Live progress: the injector's own lines, passed on as they come.
      onSpawn: (child) =>
        child.stderr?.on("data", (d: string | Buffer) => {
          for (const line of String(d).split("\n")) if (line.startsWith("[inject]")) progress(`  ${line}`)
        }),
    },
  )
  const last = r.stdout.trim().split("\n").pop() ?? ""
  if (r.code !== 0 || last === "") throw new Error(`injector failed (${r.timedOut ? "timeout" : r.code}): ${r.stderr.slice(-800)}`)
  return JSON.parse(last) as InjectResult
}

export const latencyScenario: Scenario = {
  name: "latency",
  title: "end-of-data → 250 latency at 50% of the accept rate (open loop)",
  measures:
    "What it measures: how long a client waits for the 250 after its final \".\" when the MTA is half loaded. " +
    "bench/inject-open-loop.ts offers 5 KiB messages on a fixed-rate clock that never waits for replies (open loop), " +
    "a new connection per message, EHLO/MAIL/RCPT/DATA without pipelining; each MTA gets 50% of its own accept " +
    "rate (scenario 3) and relays to a fresh smtp-sink meanwhile (Haraka in queue mode), so the 250 includes the " +
    "MTA's fsync and competes with its deliveries. Percentiles are per run; the table gives their median over the " +
    "rounds with the min–max. Before injecting, each freshly started MTA relays a warm-up from smtp-source (10% of " +
    "the run's messages, at most 2,000), delivered before the measured part begins.",
  run: async (ctx): Promise<ScenarioOutcome> => {
    const { opts } = ctx
    const { rates, source } = opts.rate === null ? await acceptRates(ctx) : { rates: new Map<MtaName, number>(), source: "--rate" }
    const offered = new Map<MtaName, number>()
    for (const m of opts.mtas) {
      const r = opts.rate ?? Math.max(1, Math.round((rates.get(m) ?? Number.NaN) * LOAD))
      if (Number.isFinite(r)) offered.set(m, r)
      else warn(`latency: no accept rate for ${m}; it is left out`)
    }
    const mtas = opts.mtas.filter((m) => offered.has(m))
    const runs: Array<LatencyRun> = []
    for (let round = 0; round < opts.rounds; round++) {
      for (const m of rotate(mtas, round)) {
        const rate = offered.get(m)!
        const count = opts.messages ?? Math.max(50, Math.round(rate * opts.durationS))
        progress(`latency: round ${round + 1}/${opts.rounds} ${m}: ${fmtInt(count)} messages at ${fmtInt(rate)}/s`)
        const sink = await Sink.start()
        try {
          const mta = await startMta(m, { sinkPort: sink.port, mode: "relay" })
          try {
            const warm = { port: mta.port, sessions: 20, size: SIZE, messages: warmupCount(opts.warmup, count) }
            await warmUp(`latency: ${m} round ${round + 1}`, warm, sink, opts.budgetMs)
            const cpu0 = mta.cpuMs()
            const result = await runInjector(mta.port, rate, count, count / rate)
            const cpu1 = mta.cpuMs()
            const cpu = cpu0 !== null && cpu1 !== null && result.ok > 0 ? (cpu1 - cpu0) / result.ok : null
            runs.push({ mta: m, round, result, cpuMsPerMsg: cpu, error: null })
            progress(
              `latency: ${m}: ${result.ok}/${result.count} ok, ${result.failed} failed, ${result.skipped} skipped; dot→250 p50 ` +
                `${fmtNum(result.dotTo250Ms.p50, 1)} ms, p99 ${fmtNum(result.dotTo250Ms.p99, 1)} ms, max ${fmtNum(result.dotTo250Ms.max, 1)} ms`,
            )
          } finally {
            await mta.stop()
          }
        } catch (e) {
          warn(`latency: ${m} round ${round + 1}: ${(e as Error).message}`)
          runs.push({ mta: m, round, result: null, cpuMsPerMsg: null, error: (e as Error).message })
        } finally {
          await sink.stop()
        }
      }
    }
    const ms = (x: ReturnType<typeof spread>) => fmtSpread(x, x.median < 10 ? 2 : 1)
    const rows = mtas.map((m) => {
      const mine = runs.filter((r) => r.mta === m && r.result !== null).map((r) => r.result!)
      const failed = mine.reduce((a, r) => a + r.failed + r.unfinished, 0)
      const skipped = mine.reduce((a, r) => a + r.skipped, 0)
      return [
        MTA_LABEL[m],
        fmtInt(offered.get(m)!),
        fmtSpread(spread(mine.map((r) => r.achievedRate)), 0),
        mine.length === 0 ? "–" : fmtInt(mine[0]!.count),
        ms(spread(mine.map((r) => r.dotTo250Ms.p50))),
        ms(spread(mine.map((r) => r.dotTo250Ms.p99))),
        ms(spread(mine.map((r) => r.dotTo250Ms.max))),
        ms(spread(mine.map((r) => r.connectTo250Ms.p99))),
        `${fmtInt(failed)} / ${fmtInt(skipped)}`,
        fmtSpread(spread(runs.filter((r) => r.mta === m).map((r) => r.cpuMsPerMsg ?? Number.NaN)), 2),
        String(mine.length),
      ]
    })
    const notes = [
      `Offered rate: ${opts.rate === null ? `50% of each MTA's accept rate, from ${source}` : `${opts.rate}/s for every MTA (--rate)`}: ` +
        mtas.map((m) => `${m} ${fmtInt(rates.get(m) ?? Number.NaN)} → ${fmtInt(offered.get(m)!)}/s`).join(", ") + ".",
      "Latency is from just before the write of the final \".\\r\\n\" to the reply to it; connect→250 is the whole " +
        "transaction (connect, greeting, EHLO, MAIL, RCPT, DATA, body, dot). Failed counts non-250 replies, errors and " +
        "transactions still open at the end; skipped counts sends due while 1,000 connections were open.",
      "CPU ms/msg: the MTA's CPU during the injection divided by the messages acknowledged (deliveries included).",
    ]
    if (opts.rate === null && mtas.includes("haraka")) {
      notes.push(
        "Haraka's accept rate comes from its discard mode, which writes nothing to disk; here it runs its disk queue, so " +
          "50% of that rate can be more than half of what it sustains with the queue (Postern and Postfix write to disk in both).",
      )
    }
    for (const r of runs.filter((x) => x.error !== null)) notes.push(`${r.mta} round ${r.round + 1} failed: ${r.error}`)
    const late: Array<string> = []
    for (const r of runs) {
      const errs = Object.entries(r.result?.errors ?? {})
      if (errs.length > 0) notes.push(`${r.mta} round ${r.round + 1} errors: ${errs.slice(0, 3).map(([k, n]) => `${n}× ${k}`).join("; ")}`)
      const lag = r.result?.scheduleLagMs
      if (lag !== undefined && lag.p99 > 20) late.push(`${r.mta} round ${r.round + 1} (p99 ${fmtNum(lag.p99, 1)} ms)`)
      if (r.result !== undefined && r.result !== null && r.result.skipped > 0) {
        notes.push(`${r.mta} round ${r.round + 1}: ${fmtInt(r.result.skipped)} sends skipped: 1,000 connections were open at once (the MTA fell behind).`)
      }
    }
    if (late.length > 0) {
      notes.push(
        `The injector itself started sends late (schedule lag p99 over 20 ms) in ${late.join(", ")}: the machine was saturated ` +
          "there, and the connect→250 tails include the injector's own delay.",
      )
    }
    return {
      params: { size: SIZE, load: LOAD, durationS: opts.durationS, rounds: opts.rounds, offered: Object.fromEntries(offered), acceptRates: Object.fromEntries(rates) },
      tables: [
        {
          columns: ["", "offered msg/s", "achieved msg/s", "messages per run", "dot→250 p50 ms", "dot→250 p99 ms", "dot→250 max ms", "connect→250 p99 ms", "failed / skipped", "MTA CPU ms/msg", "runs"],
          rows,
        },
      ],
      notes,
      ratios: {},
      runs,
    }
  },
}
