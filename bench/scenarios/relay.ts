// Scenarios 1 and 2, relay and relay-50k: smtp-source (20 sessions, a new connection per message) → MTA →
// smtp-sink, timed until the sink counted every message, Postern, Postfix and Haraka alternately, plus the
// protocol ceiling (smtp-source → smtp-sink) in the same rounds.
import { fmtInt } from "../lib/log.js"
import { ceilingParticipant, relayParticipant } from "../lib/participants.js"
import { fmtCounts, fmtCpu, fmtRate, runRounds, type ParticipantSummary } from "../lib/rounds.js"
import { fmtRatio, fmtSpread, ratio } from "../lib/stats.js"
import type { Table } from "../lib/report.js"
import type { Scenario, ScenarioOutcome } from "./types.js"

export const SESSIONS = 20
export const DEFAULT_MESSAGES = 20_000

const kib = (size: number): string => `${size / 1024} KiB`

/** The table of a throughput scenario: one row per participant, ratios against Postern's median. */
export const throughputTable = (
  summaries: ReadonlyArray<ParticipantSummary>,
  rateTitle: string,
  opts: { withAccept: boolean },
): Table => {
  const postern = summaries.find((s) => s.key === "postern")
  const pRate = postern?.rate.median ?? Number.NaN
  const columns = ["", "messages per run", rateTitle]
  if (opts.withAccept) columns.push("accept msg/s (smtp-source done)")
  columns.push("Postern ÷ this", "MTA CPU ms/msg", "peak RSS MiB", "runs")
  const rows = summaries.map((s) => {
    const row = [s.label, fmtCounts(s), fmtRate(s.rate)]
    if (opts.withAccept) row.push(fmtRate(s.acceptRate))
    row.push(
      s.key === "postern" ? "1.00×" : fmtRatio(pRate, s.rate.median),
      s.key === "ceiling" ? "–" : fmtCpu(s.cpuMsPerMsg),
      fmtSpread(s.peakRssMb, 0),
      s.dropped !== null ? `0 (${s.dropped.slice(0, 120)})` : String(s.rate.n),
    )
    return row
  })
  return { columns, rows }
}

export const throughputNotes = (summaries: ReadonlyArray<ParticipantSummary>, budgetS: number): Array<string> => {
  const notes: Array<string> = []
  for (const s of summaries) {
    if (s.reduced !== null) notes.push(`† ${s.label}: too slow for the message count within the time budget: ${s.reduced}.`)
    else if (s.truncatedRuns > 0)
      notes.push(`† ${s.label}: ${s.truncatedRuns} run(s) hit the ${budgetS} s budget; their rate is what reached the end within it.`)
    for (const e of [...new Set(s.errors)]) notes.push(`${s.label}: a run failed: ${e}`)
    if (s.dropped !== null) notes.push(`${s.label} did not run: ${s.dropped}`)
  }
  notes.push(
    "CPU ms/msg: Postern is one process (utime+stime from /proc/PID/stat); Postfix and Haraka are their whole process " +
      "trees (utime+stime of every live member plus the children they reaped), from just before smtp-source starts until " +
      "the MTA is quiet after the last message. Peak RSS is Postern's VmHWM.",
  )
  return notes
}

export const ratiosOf = (summaries: ReadonlyArray<ParticipantSummary>): Record<string, number | null> => {
  const m = (k: string) => summaries.find((s) => s.key === k)?.rate.median ?? Number.NaN
  return {
    "postern/postfix": ratio(m("postern"), m("postfix")),
    "postern/haraka": ratio(m("postern"), m("haraka")),
    "postern/ceiling": ratio(m("postern"), m("ceiling")),
  }
}

export const relayScenario = (name: string, size: number): Scenario => ({
  name,
  title: `relay end to end, ${SESSIONS} sessions, ${kib(size)} messages`,
  measures:
    `What it measures: smtp-source (${SESSIONS} parallel sessions, a new SMTP connection per message, as e2e.sh) sends ` +
    `${kib(size)} messages into the MTA on 127.0.0.1, which relays them to a fresh smtp-sink; a run is timed from ` +
    "smtp-source's start until the sink has counted every message. Postern, Postfix and Haraka " +
    "(`HARAKA_MODE=queue NODES=2`: a fsync'd queue file per message) run alternately, the first one changing each " +
    "round; the protocol ceiling (smtp-source straight into smtp-sink, as blast.sh) runs in the same rounds." +
    " Every MTA is started fresh for each run and first takes a warm-up that is not measured (10% of the run, at most 2,000 messages; `--warmup N` changes it), so all are measured warm.",
  run: async (ctx): Promise<ScenarioOutcome> => {
    const { opts } = ctx
    const messages = opts.messages ?? DEFAULT_MESSAGES
    const shape = { sessions: SESSIONS, size, budgetMs: opts.budgetMs, cpuProfDir: opts.cpuProfDir, warmup: opts.warmup }
    const participants = [...opts.mtas.map((m) => relayParticipant(m, shape)), ceilingParticipant(shape)]
    const { results, summaries } = await runRounds(name, participants, opts.rounds, messages, opts.budgetMs)
    const ratios = ratiosOf(summaries)
    const notes = [
      `Ratios of the medians (end to end): Postern/Postfix ${fmtRatioOrDash(ratios["postern/postfix"])}, ` +
        `Postern/Haraka ${fmtRatioOrDash(ratios["postern/haraka"])}; Postern reached ${fmtPercent(ratios["postern/ceiling"])} of the protocol ceiling.`,
      ...throughputNotes(summaries, opts.budgetMs / 1000),
    ]
    return {
      params: { sessions: SESSIONS, size, messages, rounds: opts.rounds, budgetS: opts.budgetMs / 1000, mtas: opts.mtas },
      tables: [throughputTable(summaries, "end to end msg/s", { withAccept: true })],
      notes,
      ratios,
      runs: results,
    }
  },
})

export const fmtRatioOrDash = (r: number | null | undefined): string => (r === null || r === undefined ? "–" : `${r.toFixed(2)}×`)
const fmtPercent = (r: number | null | undefined): string => (r === null || r === undefined ? "–" : `${fmtInt(r * 100)}%`)
