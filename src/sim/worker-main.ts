// The simulation's thread (on-worker.ts starts it): reads the scenario, runs simulate() and reports its
// progress and its summary, or its failure, to the host.
import { parentPort, workerData } from "node:worker_threads"
import type { SimulationJob, WorkerReport } from "./on-worker.js"
import { decodeScenario, loadScenario } from "./scenario.js"
import { simulate } from "./simulate.js"

const { job, progress } = workerData as { job: SimulationJob; progress: boolean }
const report = (r: WorkerReport) => parentPort!.postMessage(r)

try {
  const scenario = "file" in job.scenario ? loadScenario(job.scenario.file) : decodeScenario(job.scenario.document, job.scenario.name)
  const summary = await simulate({
    scenario,
    seed: job.seed,
    outDir: job.outDir,
    ...(job.dbDir !== undefined ? { dbDir: job.dbDir } : {}),
    ...(job.policies !== undefined ? { policies: job.policies } : {}),
    ...(job.messages !== undefined ? { messages: job.messages } : {}),
    ...(progress ? { progress: (line: string) => report({ type: "progress", line }) } : {}),
  })
  report({ type: "done", summary })
} catch (e) {
  report({ type: "failed", message: e instanceof Error ? (e.stack ?? e.message) : String(e) })
}
