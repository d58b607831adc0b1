// What every scenario gets from bench/run.ts, and what it gives back.
import type { MachineInfo, Table } from "../lib/report.js"
import type { MtaName } from "../lib/mta.js"

export interface BenchOptions {
  /** Rounds per scenario (each MTA runs once per round; the first MTA changes from round to round). */
  readonly rounds: number
  /** Messages per run; null = the scenario's default. */
  readonly messages: number | null
  /** Time budget of one run; a peer too slow for the count within it gets fewer messages next round. */
  readonly budgetMs: number
  /** The MTAs to run (default all; a scenario may run fewer). */
  readonly mtas: ReadonlyArray<MtaName>
  /** latency: seconds of injection per run (default 20). */
  readonly durationS: number
  /** latency: offered rate for every MTA instead of 50% of its accept rate. */
  readonly rate: number | null
  /** backlog/recovery: messages seeded into the queue; null = the scenario's default. */
  readonly seed: number | null
  /** backlog/recovery: body size of each seeded message. */
  readonly seedSize: number
  /** Write V8 CPU profiles of every Postern run here (node --cpu-prof). */
  readonly cpuProfDir: string | null
  /** Messages through each MTA before its measured run (relay, accept, scaling, latency); null = 10%, ≤ 2,000. */
  readonly warmup: number | null
}

export interface ScenarioContext {
  readonly opts: BenchOptions
  readonly machine: MachineInfo
  /** Accept rates (median msg/s) measured by the accept scenario in this invocation, for latency. */
  readonly acceptRates: Map<MtaName, number>
}

export interface ScenarioOutcome {
  readonly params: Readonly<Record<string, unknown>>
  readonly tables: ReadonlyArray<Table>
  readonly notes: ReadonlyArray<string>
  readonly ratios: Readonly<Record<string, number | null>>
  readonly runs: unknown
}

export interface Scenario {
  readonly name: string
  readonly title: string
  readonly measures: string
  run(ctx: ScenarioContext): Promise<ScenarioOutcome>
}

/** Round r starts with the r-th participant: each goes first in turn. */
export const rotate = <T>(list: ReadonlyArray<T>, round: number): Array<T> => {
  const n = list.length
  if (n === 0) return []
  const k = round % n
  return [...list.slice(k), ...list.slice(0, k)]
}
