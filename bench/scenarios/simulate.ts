// The simulator's speed as a bench scenario (`npm run bench -- simulate`): bench/simulate.ts in a child
// process (its own heap and timing), 100,000 messages over 5 simulated days by default, Postern alone:
// no peer has a simulator. Issue 6's goal: under 60 s on this machine.
import { spawn } from "node:child_process"
import { join } from "node:path"
import { progress } from "../lib/log.js"
import type { Scenario, ScenarioOutcome } from "./types.js"

interface SimBenchResult {
  readonly messages: number
  readonly recipients: number
  readonly attempts: number
  readonly simulatedDays: number
  readonly wallSeconds: number
  readonly cpuSeconds: number
  readonly microsecondsPerAttempt: number
  readonly delivered: number
  readonly bounced: number
  readonly expired: number
}

const runOnce = (messages: number, seed: number): Promise<SimBenchResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "..", "simulate.ts"), "--messages", String(messages), "--seed", String(seed)], {
      stdio: ["ignore", "pipe", "inherit"],
    })
    let out = ""
    child.stdout.on("data", (d: Buffer) => (out += d.toString()))
    const timer = setTimeout(() => child.kill("SIGTERM"), 20 * 60_000)
    child.on("exit", (code) => {
      clearTimeout(timer)
      const line = out.trim().split("\n").at(-1) ?? ""
      try {
        if (code !== 0) throw new Error(`exit ${code}`)
        resolve(JSON.parse(line) as SimBenchResult)
      } catch (e) {
        reject(new Error(`bench/simulate.ts failed (${(e as Error).message}): ${line.slice(0, 300)}`))
      }
    })
  })

export const simulateScenario: Scenario = {
  name: "simulate",
  title: "the simulator: 100,000 messages over 5 simulated days",
  measures:
    "Wall and CPU time of `postern simulate`'s engine (the production queue manager, destination and delivery machines on a virtual clock) for 100,000 messages arriving over 5 simulated days to mixed providers and a long tail, until every message is delivered, bounced or expired. Postern only. Goal: under 60 s.",
  async run({ opts }): Promise<ScenarioOutcome> {
    const messages = opts.messages ?? 100_000
    const runs: Array<SimBenchResult> = []
    for (let round = 1; round <= Math.min(opts.rounds, 3); round++) {
      progress(`simulate: round ${round}: ${messages.toLocaleString("en")} messages`)
      const r = await runOnce(messages, round)
      progress(`simulate: round ${round}: ${r.wallSeconds.toFixed(1)} s wall, ${r.cpuSeconds.toFixed(1)} s CPU, ${r.attempts.toLocaleString("en")} attempts`)
      runs.push(r)
    }
    const wall = runs.map((r) => r.wallSeconds).sort((a, b) => a - b)
    const median = wall[Math.floor(wall.length / 2)]!
    return {
      params: { messages, rounds: runs.length },
      tables: [
        {
          columns: ["round (seed)", "messages", "recipients", "attempts", "simulated days", "wall s", "CPU s", "µs per attempt", "delivered / bounced / expired"],
          rows: runs.map((r, i) => [
            String(i + 1),
            r.messages.toLocaleString("en"),
            r.recipients.toLocaleString("en"),
            r.attempts.toLocaleString("en"),
            r.simulatedDays.toFixed(1),
            r.wallSeconds.toFixed(1),
            r.cpuSeconds.toFixed(1),
            String(r.microsecondsPerAttempt),
            `${r.delivered} / ${r.bounced} / ${r.expired}`,
          ]),
        },
      ],
      notes: [`Median wall time ${median.toFixed(1)} s for ${messages.toLocaleString("en")} messages (goal: under 60 s).`],
      ratios: { wallSeconds: median },
      runs,
    }
  },
}
