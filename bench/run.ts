// `npm run bench [-- <scenario>... [--rounds N] [--messages N] ...]`: runs the benchmark scenarios, Postern
// side by side with Postfix and Haraka on 127.0.0.1 (see bench/README.md), and writes bench/RESULTS.md and
// bench/results.json. Progress goes to stderr. Everything it starts, it stops, also on error or Ctrl-C.
import { existsSync, rmSync } from "node:fs"
import { parseArgs } from "node:util"
import { installSignalHandlers, onCleanup, runCleanups } from "./lib/cleanup.js"
import { progress } from "./lib/log.js"
import { ALL_MTAS, removeBenchPeersTmp, type MtaName } from "./lib/mta.js"
import { PEERS_DIR, POSTERN_CLI, SCRATCH } from "./lib/paths.js"
import { machineInfo, RESULTS_MD, saveReport } from "./lib/report.js"
import { acceptScenario } from "./scenarios/accept.js"
import { backlogScenario } from "./scenarios/backlog.js"
import { latencyScenario } from "./scenarios/latency.js"
import { recoveryScenario } from "./scenarios/recovery.js"
import { relayScenario } from "./scenarios/relay.js"
import { scalingScenario } from "./scenarios/scaling.js"
import { simulateScenario } from "./scenarios/simulate.js"
import type { BenchOptions, Scenario } from "./scenarios/types.js"

const SCENARIOS: ReadonlyArray<Scenario> = [
  relayScenario("relay", 5120),
  relayScenario("relay-50k", 51200),
  acceptScenario,
  latencyScenario,
  backlogScenario,
  recoveryScenario,
  scalingScenario,
  simulateScenario,
]

const USAGE = `usage: npm run bench [-- [scenario...] [options]]
scenarios (default: all, in this order): ${SCENARIOS.map((s) => s.name).join(", ")}
options:
  --rounds N        rounds per scenario, each MTA once per round (default 3)
  --messages N      messages per run (default: relay/accept/backlog 20000, scaling 5000; latency: rate × duration)
  --budget S        time budget of one run in seconds (default 300); a slower peer gets fewer messages
  --mtas LIST       comma-separated subset of postern,postfix,haraka (default all)
  --duration S      latency: seconds of open-loop injection per run (default 20)
  --rate R          latency: offer R msg/s to every MTA instead of 50% of its accept rate
  --seed N          backlog/recovery: messages seeded into the queue (default 100000 / 1000000)
  --seed-size B     backlog/recovery: body size of a seeded message in bytes (default 1024)
  --cpu-prof DIR    write a V8 CPU profile of every Postern run into DIR (node --cpu-prof)
  --warmup N        messages through each freshly started MTA before its measured run (default 10% of the
                    run, at most 2000; 0 for none): every MTA is measured warm`

const positiveInt = (name: string, v: string | undefined, dflt: number | null): number | null => {
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got "${v}"`)
  return n
}

const parse = (argv: ReadonlyArray<string>): { scenarios: Array<Scenario>; opts: BenchOptions } => {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      rounds: { type: "string" },
      messages: { type: "string" },
      budget: { type: "string" },
      mtas: { type: "string" },
      duration: { type: "string" },
      rate: { type: "string" },
      seed: { type: "string" },
      "seed-size": { type: "string" },
      "cpu-prof": { type: "string" },
      warmup: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  })
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(0)
  }
  const scenarios = positionals.length === 0 ? [...SCENARIOS] : positionals.map((name) => {
    const s = SCENARIOS.find((x) => x.name === name)
    if (s === undefined) throw new Error(`unknown scenario "${name}"; known: ${SCENARIOS.map((x) => x.name).join(", ")}`)
    return s
  })
  // Keep the canonical order (accept before latency, so latency can use its rates).
  scenarios.sort((a, b) => SCENARIOS.indexOf(a) - SCENARIOS.indexOf(b))
  const mtas = (values.mtas ?? ALL_MTAS.join(",")).split(",").map((m) => m.trim()).filter((m) => m !== "")
  for (const m of mtas) if (!ALL_MTAS.includes(m as MtaName)) throw new Error(`--mtas: unknown MTA "${m}" (postern, postfix, haraka)`)
  return {
    scenarios: [...new Set(scenarios)],
    opts: {
      rounds: positiveInt("rounds", values.rounds, 3)!,
      messages: positiveInt("messages", values.messages, null),
      budgetMs: positiveInt("budget", values.budget, 300)! * 1000,
      mtas: ALL_MTAS.filter((m) => mtas.includes(m)),
      durationS: positiveInt("duration", values.duration, 20)!,
      rate: positiveInt("rate", values.rate, null),
      seed: positiveInt("seed", values.seed, null),
      seedSize: positiveInt("seed-size", values["seed-size"], 1024)!,
      cpuProfDir: values["cpu-prof"] ?? null,
      warmup: values.warmup === undefined ? null : values.warmup === "0" ? 0 : positiveInt("warmup", values.warmup, null),
    },
  }
}

const main = async (): Promise<number> => {
  const argv = process.argv.slice(2)
  const { scenarios, opts } = parse(argv)
  if (!existsSync(POSTERN_CLI)) throw new Error(`${POSTERN_CLI} is missing: run "npm run build" (npm run bench does)`)
  if (!existsSync(PEERS_DIR)) throw new Error(`the peers' scripts are not in ${PEERS_DIR} (set PEERS_DIR)`)
  installSignalHandlers()
  // Registered first, so it runs last: our scratch folders go once everything is stopped.
  onCleanup("scratch folders", () => {
    removeBenchPeersTmp()
    rmSync(SCRATCH, { recursive: true, force: true })
  })
  const command = `npm run bench${argv.length > 0 ? ` -- ${argv.join(" ")}` : ""}`
  const machine = await machineInfo()
  progress(
    `${command}: ${scenarios.map((s) => s.name).join(", ")}; ${opts.rounds} round(s); MTAs ${opts.mtas.join(", ")}; ` +
      `${machine.nproc} CPUs, load ${machine.loadAvgAtStart.join(" ")}, node ${machine.node}, Postfix ${machine.postfix}, Haraka ${machine.haraka ?? "not installed"}`,
  )
  const acceptRates = new Map<MtaName, number>()
  let failures = 0
  for (const scenario of scenarios) {
    const t0 = Date.now()
    progress(`=== ${scenario.name}: ${scenario.title}`)
    try {
      const outcome = await scenario.run({ opts, machine: await machineInfo(), acceptRates })
      saveReport({
        scenario: scenario.name,
        title: scenario.title,
        measures: scenario.measures,
        date: new Date(t0).toISOString().replace(/\.\d+Z$/, "Z"),
        command,
        durationS: (Date.now() - t0) / 1000,
        machine,
        ...outcome,
      })
      progress(`=== ${scenario.name} done in ${((Date.now() - t0) / 1000).toFixed(0)}s; written to ${RESULTS_MD}`)
    } catch (e) {
      failures++
      progress(`=== ${scenario.name} FAILED: ${(e as Error).stack ?? String(e)}`)
    }
  }
  return failures === 0 ? 0 : 1
}

main()
  .then(async (code) => {
    await runCleanups()
    removeBenchPeersTmp()
    rmSync(SCRATCH, { recursive: true, force: true })
    process.exit(code)
  })
  .catch(async (e: Error) => {
    process.stderr.write(`bench: ${e.message}\n`)
    await runCleanups()
    removeBenchPeersTmp()
    rmSync(SCRATCH, { recursive: true, force: true })
    process.exit(2)
  })
