// `postern simulate`: runs every policy of a scenario on the same traffic and seed, and writes the run
// folder: attempts.csv, recipients.csv, summary.json, report.html and one queue database per policy.
// Guarantees: the folder's bytes depend only on the scenario, the seed and Postern's version (no path,
// wall-clock time or host name is written); progress goes to the `progress` callback, never the folder.
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs"
import { join } from "node:path"
import { expandDestinations } from "./destinations.js"
import { runPolicy } from "./engine.js"
import { plotOf, renderReport, type PolicyPlot } from "./report.js"
import { summarise, type AttemptRow, type PolicyResult, type RecipientRow } from "./results.js"
import type { Scenario } from "./scenario.js"
import { domainMix, generateTraffic, type SimMessage } from "./traffic.js"

export interface SimulateOptions extends RunAllOptions {
  readonly outDir: string
}

export interface SimulationSummary {
  readonly scenario: string
  readonly description: string
  readonly seed: number
  readonly postern: string
  readonly start: string
  readonly messages: number
  readonly policies: Readonly<Record<string, PolicyResult["summary"]>>
}

export const posternVersion = (): string => {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version
  } catch {
    return "unknown"
  }
}

/** The files of a run folder (only these are replaced in an existing folder). */
export const RUN_FILES = ["attempts.csv", "recipients.csv", "summary.json", "report.html"] as const
export const databaseFile = (policy: string): string => `queue-${policy}.sqlite`

const csvField = (v: string | number | null): string => {
  if (v === null) return ""
  if (typeof v === "number") return String(v)
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v
}
const seconds = (ms: number | null): string => (ms === null ? "" : (ms / 1000).toFixed(3))

/** Writes lines in 1 MiB pieces: big runs never hold the whole file as one string. */
class LineWriter {
  private fd: number
  private buf: Array<string> = []
  private size = 0
  constructor(file: string) {
    this.fd = openSync(file, "w")
  }
  line(fields: ReadonlyArray<string>): void {
    const l = `${fields.join(",")}\n`
    this.buf.push(l)
    this.size += l.length
    if (this.size > 1 << 20) this.drain()
  }
  close(): void {
    this.drain()
    closeSync(this.fd)
  }
  private drain(): void {
    writeSync(this.fd, this.buf.join(""))
    this.buf = []
    this.size = 0
  }
}

const ATTEMPT_HEADER = ["policy", "time_s", "message", "queue_id", "recipient", "destination", "relay", "attempt", "outcome", "dsn", "reply", "duration_ms"]
const attemptFields = (policy: string, a: AttemptRow): Array<string> => [
  csvField(policy), seconds(a.at), csvField(a.message), csvField(a.queueId), csvField(a.recipient), csvField(a.destination),
  csvField(a.relay), csvField(a.attempt), csvField(a.outcome), csvField(a.dsn), csvField(a.reply), csvField(a.durationMs),
]
const RECIPIENT_HEADER = ["policy", "message", "queue_id", "recipient", "domain", "arrival_s", "state", "attempts", "first_attempt_s", "final_s", "delay_s", "dsn", "reply"]
const recipientFields = (policy: string, r: RecipientRow): Array<string> => [
  csvField(policy), csvField(r.message), csvField(r.queueId), csvField(r.recipient), csvField(r.domain), seconds(r.arrival), r.state,
  csvField(r.attempts), seconds(r.firstAttempt), seconds(r.finalAt), seconds(r.finalAt === null ? null : r.finalAt - r.arrival),
  csvField(r.dsn), csvField(r.reply),
]

export interface RunAllOptions {
  readonly scenario: Scenario
  readonly seed: number
  /** Run each policy on a database file in this folder instead of in memory. */
  readonly dbDir?: string
  readonly policies?: ReadonlyArray<string>
  readonly messages?: number
  readonly progress?: (line: string) => void
}

/**
 * Runs the policies one after the other on the same traffic; `sink` gets each result (its database still
 * open) before the next policy starts. Returns the traffic.
 */
export const forEachPolicy = async (opts: RunAllOptions, sink: (result: PolicyResult) => void): Promise<ReadonlyArray<SimMessage>> => {
  const { scenario, seed } = opts
  const progress = opts.progress ?? (() => undefined)
  for (const name of opts.policies ?? []) {
    if (!scenario.policies.some((p) => p.name === name)) {
      throw new Error(`no policy named ${name} in scenario ${scenario.name}; it has ${scenario.policies.map((p) => p.name).join(", ")}`)
    }
  }
  const policies = opts.policies === undefined ? scenario.policies : scenario.policies.filter((p) => opts.policies!.includes(p.name))
  const destinations = expandDestinations(scenario, seed)
  const traffic = generateTraffic(scenario, seed, domainMix(scenario), opts.messages)
  progress(`${scenario.name}: ${traffic.length} messages, ${destinations.length} destinations, ${policies.length} policies, seed ${seed}`)
  if (opts.dbDir !== undefined) mkdirSync(opts.dbDir, { recursive: true })
  for (const policy of policies) {
    const dbFile = opts.dbDir === undefined ? undefined : join(opts.dbDir, databaseFile(policy.name))
    if (dbFile !== undefined) for (const suffix of ["", "-wal", "-shm"]) rmSync(dbFile + suffix, { force: true })
    const run = await runPolicy({ scenario, policy, seed, traffic, destinations, ...(dbFile !== undefined ? { dbFile } : {}), progress })
    for (const e of run.errors.slice(0, 5)) progress(`${policy.name}: engine error: ${e}`)
    const result = summarise(run, traffic, scenario.start)
    const s = result.summary
    progress(
      `${policy.name}: delivered ${s.delivered}/${s.recipients}, bounced ${s.bounced}, expired ${s.expired}, still queued ${s.deferred + s.queued}; ` +
        `latency p50 ${s.latency?.p50 ?? "-"}s p99 ${s.latency?.p99 ?? "-"}s; ${s.attempts} attempts`,
    )
    sink(result)
  }
  return traffic
}

/** Runs every policy and keeps every result (databases left open for the caller): for tests and tools. */
export const runAll = async (opts: RunAllOptions): Promise<{ traffic: ReadonlyArray<SimMessage>; results: Array<PolicyResult> }> => {
  const results: Array<PolicyResult> = []
  const traffic = await forEachPolicy(opts, (r) => void results.push(r))
  return { traffic, results }
}

/** Runs the scenario and writes the run folder, one policy at a time (memory holds one policy's rows). */
export const simulate = async (opts: SimulateOptions): Promise<SimulationSummary> => {
  const { scenario, seed } = opts
  mkdirSync(opts.outDir, { recursive: true })
  for (const f of RUN_FILES) rmSync(join(opts.outDir, f), { force: true })
  const attempts = new LineWriter(join(opts.outDir, "attempts.csv"))
  attempts.line(ATTEMPT_HEADER)
  const recipients = new LineWriter(join(opts.outDir, "recipients.csv"))
  recipients.line(RECIPIENT_HEADER)
  const plots: Array<PolicyPlot> = []
  const summaries: Array<[string, PolicyResult["summary"]]> = []
  const traffic = await forEachPolicy(opts, (r) => {
    const name = r.run.policy.name
    for (const a of r.attempts) attempts.line(attemptFields(name, a))
    for (const x of r.recipients) recipients.line(recipientFields(name, x))
    const target = join(opts.outDir, databaseFile(name))
    rmSync(target, { force: true })
    r.run.db.prepare("VACUUM INTO ?").run(target)
    r.run.db.close()
    plots.push(plotOf(r))
    summaries.push([name, r.summary])
  })
  attempts.close()
  recipients.close()

  const version = posternVersion()
  const summary: SimulationSummary = {
    scenario: scenario.name,
    description: scenario.description,
    seed,
    postern: version,
    start: new Date(scenario.start).toISOString(),
    messages: traffic.length,
    policies: Object.fromEntries(summaries),
  }
  writeFileSync(join(opts.outDir, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`)
  writeFileSync(
    join(opts.outDir, "report.html"),
    renderReport({ scenario: scenario.name, description: scenario.description, seed, version, start: scenario.start, policies: plots }),
  )
  return summary
}
