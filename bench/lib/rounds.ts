// Rounds of alternating runs: every participant (an MTA, or the protocol ceiling) runs once per round, the
// order rotating so each goes first in turn. A participant that ran out of its time budget gets a message
// count it can do within the budget in the next rounds (and the table says so); one that cannot even
// start is dropped from the following rounds with the reason.
import { fmtInt, fmtNum, progress, warn } from "./log.js"
import { reducedCount, type RunResult } from "./measure.js"
import { fmtSpread, spread, type Spread } from "./stats.js"

export interface Participant {
  readonly key: string
  readonly label: string
  /** Runs once; throws when the participant could not be set up (then it is dropped). */
  run(round: number, messages: number): Promise<RunResult>
}

export interface ParticipantSummary {
  readonly key: string
  readonly label: string
  readonly asked: number
  readonly counts: ReadonlyArray<number>
  readonly rate: Spread
  readonly acceptRate: Spread
  readonly cpuMsPerMsg: Spread
  readonly peakRssMb: Spread
  readonly truncatedRuns: number
  readonly errors: ReadonlyArray<string>
  readonly reduced: string | null
  readonly dropped: string | null
}

export interface RoundsOutcome {
  readonly results: ReadonlyArray<RunResult>
  readonly summaries: ReadonlyArray<ParticipantSummary>
}

const rotate = <T>(list: ReadonlyArray<T>, round: number): Array<T> => {
  const k = list.length === 0 ? 0 : round % list.length
  return [...list.slice(k), ...list.slice(0, k)]
}

export const describeRun = (r: RunResult): string => {
  const cpu = r.cpuMsPerMsg === null ? "" : `, ${fmtNum(r.cpuMsPerMsg, 2)} ms CPU/msg`
  const rss = r.peakRssMb === null ? "" : `, peak RSS ${fmtInt(r.peakRssMb)} MiB`
  const cut = r.truncated ? ` (budget ran out: ${fmtInt(r.done)} of ${fmtInt(r.messages)})` : ""
  const err = r.error === null ? "" : ` ERROR ${r.error}`
  const acc = Number.isFinite(r.acceptRate) ? ` (accept ${fmtInt(r.acceptRate)} msg/s)` : ""
  return `${fmtInt(r.done)} msgs in ${r.seconds.toFixed(1)}s = ${fmtInt(r.rate)} msg/s${acc}${cpu}${rss}${cut}${err}`
}

export const runRounds = async (
  scenario: string,
  participants: ReadonlyArray<Participant>,
  rounds: number,
  messages: number,
  budgetMs: number,
): Promise<RoundsOutcome> => {
  const counts = new Map(participants.map((p) => [p.key, messages]))
  const reduced = new Map<string, string>()
  const dropped = new Map<string, string>()
  const results: Array<RunResult> = []
  for (let round = 0; round < rounds; round++) {
    const order = rotate(participants, round).filter((p) => !dropped.has(p.key))
    progress(`${scenario}: round ${round + 1}/${rounds}, order ${order.map((p) => p.key).join(" → ")}`)
    for (const p of order) {
      const n = counts.get(p.key)!
      progress(`${scenario}: round ${round + 1}/${rounds} ${p.key}: ${fmtInt(n)} messages`)
      let r: RunResult
      try {
        r = await p.run(round, n)
      } catch (e) {
        const why = (e as Error).message
        warn(`${scenario}: ${p.key} could not run: ${why}`)
        dropped.set(p.key, why)
        continue
      }
      results.push(r)
      progress(`${scenario}: round ${round + 1}/${rounds} ${p.key}: ${describeRun(r)}`)
      if (r.truncated && r.rate > 0) {
        const next = reducedCount(r.rate, budgetMs, n)
        if (next < n) {
          counts.set(p.key, next)
          reduced.set(
            p.key,
            `${fmtInt(messages)} did not fit the ${budgetMs / 1000} s budget (${fmtInt(r.rate)} msg/s); later rounds ran ${fmtInt(next)}`,
          )
          progress(`${scenario}: ${p.key} is too slow for ${fmtInt(n)} messages in ${budgetMs / 1000}s; next rounds get ${fmtInt(next)}`)
        }
      }
    }
  }
  const summaries = participants.map((p): ParticipantSummary => {
    const mine = results.filter((r) => r.who === p.key)
    const good = mine.filter((r) => r.error === null)
    return {
      key: p.key,
      label: p.label,
      asked: messages,
      counts: mine.map((r) => r.messages),
      rate: spread(good.map((r) => r.rate)),
      acceptRate: spread(good.filter((r) => !r.truncated).map((r) => r.acceptRate)),
      cpuMsPerMsg: spread(good.map((r) => r.cpuMsPerMsg ?? Number.NaN)),
      peakRssMb: spread(good.map((r) => r.peakRssMb ?? Number.NaN)),
      truncatedRuns: mine.filter((r) => r.truncated).length,
      errors: mine.flatMap((r) => (r.error === null ? [] : [r.error])),
      reduced: reduced.get(p.key) ?? null,
      dropped: dropped.get(p.key) ?? null,
    }
  })
  return { results, summaries }
}

/** "20,000" or "20,000 / 5,400 / 5,400 †" when the count changed between rounds. */
export const fmtCounts = (s: ParticipantSummary): string => {
  const distinct = [...new Set(s.counts)]
  const base = distinct.length <= 1 ? fmtInt(distinct[0] ?? s.asked) : s.counts.map(fmtInt).join(" / ")
  return s.truncatedRuns > 0 || s.reduced !== null ? `${base} †` : base
}

export const fmtRate = (s: Spread): string => fmtSpread(s, 0)
export const fmtCpu = (s: Spread): string => fmtSpread(s, 2)
