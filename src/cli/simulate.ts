// `postern simulate SCENARIO.yaml [--seed N] [--out DIR] [--db FOLDER] [--policy NAME]... [--messages N]`:
// runs a scenario (docs/simulation.md) and writes its run folder. Progress and problems go to stderr;
// exit codes: 0 done, 64 bad usage, 65 bad scenario, 70 the simulation failed.
import { parseArgs } from "node:util"
import { ScenarioError, loadScenario } from "../sim/scenario.js"
import { simulateOnWorker } from "../sim/on-worker.js"

export const SIMULATE_USAGE = `usage: postern simulate SCENARIO.yaml [--seed N] [--out DIR] [--db FOLDER] [--policy NAME]... [--messages N]
  --seed N        the run's seed (default 1): same scenario, seed and version, same bytes in DIR
  --out DIR       the run folder (default ./simulation-<scenario>-<seed>)
  --db FOLDER     run on SQLite files in FOLDER instead of in memory (DIR gets a copy either way)
  --policy NAME   run only this policy (repeatable)
  --messages N    override the scenario's message count
  --quiet         no progress on stderr`

const fail = (code: number, message: string): never => {
  process.stderr.write(`postern simulate: ${message}\n`)
  process.exit(code)
}

export const runSimulate = async (argv: ReadonlyArray<string>): Promise<void> => {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        seed: { type: "string" },
        out: { type: "string" },
        db: { type: "string" },
        policy: { type: "string", multiple: true },
        messages: { type: "string" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    })
  } catch (e) {
    return fail(64, `${(e as Error).message}\n${SIMULATE_USAGE}`)
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    process.stdout.write(`${SIMULATE_USAGE}\n`)
    return
  }
  if (positionals.length !== 1) return fail(64, `give one scenario file\n${SIMULATE_USAGE}`)
  const seed = values.seed === undefined ? 1 : Number(values.seed)
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) return fail(64, `--seed must be a whole number from 0 to 4294967295, got ${values.seed}`)
  const messages = values.messages === undefined ? undefined : Number(values.messages)
  if (messages !== undefined && (!Number.isSafeInteger(messages) || messages < 1)) return fail(64, `--messages must be a whole number ≥ 1, got ${values.messages}`)
  let scenario
  try {
    scenario = loadScenario(positionals[0]!)
  } catch (e) {
    if (e instanceof ScenarioError) return fail(65, e.message)
    return fail(66, `cannot read ${positionals[0]}: ${(e as Error).message}`)
  }
  const unknown = (values.policy ?? []).filter((name) => !scenario.policies.some((p) => p.name === name))
  if (unknown.length > 0) return fail(64, `no policy ${unknown.join(", ")} in the scenario; it has ${scenario.policies.map((p) => p.name).join(", ")}`)
  const outDir = values.out ?? `simulation-${scenario.name}-${seed}`
  const started = performance.now()
  const progress = values.quiet === true ? undefined : (line: string) => void process.stderr.write(`${line}\n`)
  try {
    // Read and checked here for its errors; run on a thread of its own with room for young objects.
    await simulateOnWorker(
      {
        scenario: { file: positionals[0]! },
        seed,
        outDir,
        ...(values.db !== undefined ? { dbDir: values.db } : {}),
        ...(values.policy !== undefined ? { policies: values.policy } : {}),
        ...(messages !== undefined ? { messages } : {}),
      },
      progress,
    )
  } catch (e) {
    return fail(70, e instanceof Error ? (e.stack ?? e.message) : String(e))
  }
  progress?.(`wrote ${outDir}/ (attempts.csv, recipients.csv, summary.json, report.html, queue-*.sqlite) in ${((performance.now() - started) / 1000).toFixed(1)}s`)
}
