// Results: bench/results.json keeps the latest report of every scenario (each with its own date, command
// and machine), and bench/RESULTS.md is rendered from it. Running one scenario replaces only its entry.
import { execFileSync } from "node:child_process"
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import { cpus, freemem, loadavg, release, totalmem } from "node:os"
import { join } from "node:path"
import { postfixVersion } from "./mta.js"
import { BENCH, harakaVersion } from "./paths.js"

export interface MachineInfo {
  readonly nproc: number
  readonly cpuModel: string
  readonly free: string
  readonly memTotalGiB: number
  readonly memFreeGiB: number
  readonly loadAvgAtStart: ReadonlyArray<number>
  readonly kernel: string
  readonly node: string
  readonly postfix: string
  readonly haraka: string | null
}

export interface Table {
  readonly title?: string
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<string>>
}

export interface ScenarioReport {
  readonly scenario: string
  readonly title: string
  /** What the scenario measures, one paragraph of Markdown. */
  readonly measures: string
  readonly date: string
  readonly command: string
  readonly durationS: number
  readonly machine: MachineInfo
  readonly params: Readonly<Record<string, unknown>>
  readonly tables: ReadonlyArray<Table>
  readonly notes: ReadonlyArray<string>
  /** Headline ratios, e.g. { "postern/postfix": 2.1 }. */
  readonly ratios: Readonly<Record<string, number | null>>
  /** Every run, as measured. */
  readonly runs: unknown
}

interface ResultsFile {
  readonly updated: string
  readonly scenarios: Record<string, ScenarioReport>
}

export const RESULTS_JSON = join(BENCH, "results.json")
export const RESULTS_MD = join(BENCH, "RESULTS.md")

const sh = (cmd: string, args: ReadonlyArray<string>): string => {
  try {
    return execFileSync(cmd, [...args], { encoding: "utf8", timeout: 10_000 }).replace(/^\n+/, "").trimEnd()
  } catch {
    return "unknown"
  }
}

export const machineInfo = async (): Promise<MachineInfo> => ({
  nproc: Number(sh("nproc", [])) || cpus().length,
  cpuModel: cpus()[0]?.model ?? "unknown",
  free: sh("free", ["-h"]),
  memTotalGiB: totalmem() / 2 ** 30,
  memFreeGiB: freemem() / 2 ** 30,
  loadAvgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
  kernel: release(),
  node: process.version,
  postfix: await postfixVersion(),
  haraka: harakaVersion(),
})

const load = (): ResultsFile => {
  if (!existsSync(RESULTS_JSON)) return { updated: "", scenarios: {} }
  try {
    return JSON.parse(readFileSync(RESULTS_JSON, "utf8")) as ResultsFile
  } catch {
    return { updated: "", scenarios: {} }
  }
}

const ORDER = ["relay", "relay-50k", "accept", "latency", "backlog", "recovery", "scaling"]

const mdTable = (t: Table): string => {
  const esc = (s: string) => s.replace(/\|/g, "\\|")
  const lines = [`| ${t.columns.map(esc).join(" | ")} |`, `|${t.columns.map(() => "---").join("|")}|`]
  for (const r of t.rows) lines.push(`| ${r.map(esc).join(" | ")} |`)
  return (t.title === undefined ? "" : `**${t.title}**\n\n`) + lines.join("\n")
}

const machineLine = (m: MachineInfo): string =>
  `${m.nproc} CPUs (\`nproc\`; ${m.cpuModel}), Linux ${m.kernel}, load average at start ${m.loadAvgAtStart.join(" / ")}; ` +
  `node ${m.node}; Postfix ${m.postfix}; Haraka ${m.haraka ?? "not installed"}`

const renderScenario = (r: ScenarioReport): string => {
  const parts = [
    `## ${r.scenario}: ${r.title}`,
    r.measures,
    [
      `- command: \`${r.command}\``,
      `- date: ${r.date} (took ${Math.round(r.durationS)} s)`,
      `- machine: ${machineLine(r.machine)}`,
      "- `free -h`:\n\n  ```\n" + r.machine.free.replace(/^/gm, "  ") + "\n  ```",
    ].join("\n"),
    ...r.tables.map(mdTable),
  ]
  if (r.notes.length > 0) parts.push(r.notes.map((n) => `- ${n}`).join("\n"))
  return parts.join("\n\n")
}

export const render = (file: ResultsFile): string => {
  const names = Object.keys(file.scenarios).sort((a, b) => {
    const ia = ORDER.indexOf(a)
    const ib = ORDER.indexOf(b)
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib)
  })
  const head = [
    "# Postern benchmark results",
    "",
    "Written by `npm run bench` (bench/run.ts) from `bench/results.json`; each section is the latest run of that",
    "scenario, with the command, date and machine it came from. Every figure compares MTAs measured alternately",
    "**in the same run** on the same machine; the machines are shared and busy, so absolute rates drift from",
    "run to run and only the ratios within one section mean much. Rates are messages per second, median of the",
    "rounds with the min–max in parentheses. See bench/README.md for what each scenario does.",
  ].join("\n")
  return [head, ...names.map((n) => renderScenario(file.scenarios[n]!))].join("\n\n") + "\n"
}

/** Saves one scenario's report into results.json and re-renders RESULTS.md. */
export const saveReport = (report: ScenarioReport): void => {
  const file = load()
  const next: ResultsFile = { updated: report.date, scenarios: { ...file.scenarios, [report.scenario]: report } }
  const tmp = `${RESULTS_JSON}.tmp`
  writeFileSync(tmp, `${JSON.stringify(next, null, 2)}\n`)
  renameSync(tmp, RESULTS_JSON)
  writeFileSync(RESULTS_MD, render(next))
}
