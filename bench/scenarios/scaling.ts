// Scenario 7, scaling: relay end to end (smtp-source → MTA → smtp-sink, a new connection per message) for
// sessions 1/10/50 × message sizes 1/5/50 KiB, Postern and Postfix alternately in every cell.
import { fmtInt } from "../lib/log.js"
import type { MtaName } from "../lib/mta.js"
import { relayParticipant } from "../lib/participants.js"
import { fmtCounts, fmtCpu, fmtRate, runRounds, type ParticipantSummary } from "../lib/rounds.js"
import { fmtRatio, ratio } from "../lib/stats.js"
import type { RunResult } from "../lib/measure.js"
import type { Scenario, ScenarioOutcome } from "./types.js"

const SESSIONS = [1, 10, 50] as const
const SIZES = [1024, 5120, 51200] as const
const DEFAULT_MESSAGES = 5_000

export const scalingScenario: Scenario = {
  name: "scaling",
  title: "relay end to end across sessions (1/10/50) and sizes (1/5/50 KiB), Postern vs Postfix",
  measures:
    "What it measures: how end-to-end relay throughput changes with the number of concurrent client sessions and " +
    "the message size. For each of the 9 cells smtp-source (a new connection per message) sends through the MTA to " +
    "a fresh smtp-sink, timed until the sink counted every message; Postern and Postfix alternate in every cell, " +
    "the first one changing from round to round." +
    " Every MTA is started fresh for each run and first takes a warm-up that is not measured (10% of the run, at most 2,000 messages; `--warmup N` changes it), so all are measured warm.",
  run: async (ctx): Promise<ScenarioOutcome> => {
    const { opts } = ctx
    const messages = opts.messages ?? DEFAULT_MESSAGES
    const mtas = opts.mtas.filter((m): m is MtaName => m === "postern" || m === "postfix")
    const cells: Array<{ sessions: number; size: number; summaries: ReadonlyArray<ParticipantSummary>; results: ReadonlyArray<RunResult> }> = []
    for (const sessions of SESSIONS) {
      for (const size of SIZES) {
        const shape = { sessions, size, budgetMs: opts.budgetMs, cpuProfDir: opts.cpuProfDir, warmup: opts.warmup }
        const label = `scaling ${sessions}s×${size / 1024}KiB`
        const { summaries, results } = await runRounds(label, mtas.map((m) => relayParticipant(m, shape)), opts.rounds, messages, opts.budgetMs)
        cells.push({ sessions, size, summaries, results })
      }
    }
    const get = (c: (typeof cells)[number], k: string) => c.summaries.find((s) => s.key === k)
    const rows = cells.map((c) => {
      const p = get(c, "postern")
      const f = get(c, "postfix")
      return [
        String(c.sessions),
        `${c.size / 1024} KiB`,
        p === undefined ? "–" : fmtCounts(p),
        p === undefined ? "–" : fmtRate(p.rate),
        f === undefined ? "–" : fmtRate(f.rate),
        fmtRatio(p?.rate.median ?? Number.NaN, f?.rate.median ?? Number.NaN),
        p === undefined ? "–" : fmtCpu(p.cpuMsPerMsg),
        f === undefined ? "–" : fmtCpu(f.cpuMsPerMsg),
        f === undefined ? "–" : fmtCounts(f),
      ]
    })
    const notes: Array<string> = []
    if (cells.some((c) => c.summaries.some((s) => s.truncatedRuns > 0 || s.reduced !== null))) {
      notes.push("† the time budget ran out in some run of that cell; its rate is what arrived within the budget, and later rounds ran fewer messages (see results.json).")
    }
    for (const c of cells) {
      for (const s of c.summaries) {
        if (s.reduced !== null) notes.push(`${s.label}, ${c.sessions} sessions × ${c.size / 1024} KiB: ${s.reduced}.`)
        for (const e of [...new Set(s.errors)]) notes.push(`${s.label}, ${c.sessions} sessions × ${c.size / 1024} KiB: ${e}`)
        if (s.dropped !== null) notes.push(`${s.label}, ${c.sessions} sessions × ${c.size / 1024} KiB did not run: ${s.dropped}`)
      }
    }
    const ratios: Record<string, number | null> = {}
    for (const c of cells) {
      ratios[`postern/postfix ${c.sessions}s ${c.size / 1024}KiB`] = ratio(
        get(c, "postern")?.rate.median ?? Number.NaN,
        get(c, "postfix")?.rate.median ?? Number.NaN,
      )
    }
    return {
      params: { sessions: SESSIONS, sizes: SIZES, messages, rounds: opts.rounds, budgetS: opts.budgetMs / 1000, mtas },
      tables: [
        {
          columns: ["sessions", "size", "Postern messages", "Postern msg/s", "Postfix msg/s", "Postern/Postfix", "Postern CPU ms/msg", "Postfix CPU ms/msg", "Postfix messages"],
          rows,
        },
      ],
      notes: [`${fmtInt(messages)} messages per run unless marked; medians of ${opts.rounds} rounds (min–max).`, ...notes],
      ratios,
      runs: cells.map((c) => ({ sessions: c.sessions, size: c.size, runs: c.results })),
    }
  },
}
