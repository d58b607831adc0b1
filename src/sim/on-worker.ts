// Runs a simulation (simulate.ts) on a worker thread with a large young generation. A run allocates
// short-lived objects at every step (snapshots, requests, promises) while holding the queue's state for
// virtual days: with Node's default 16 MiB semi-space they outlive a scavenge and are copied, then
// promoted, and GC takes ~12% of the run; 64 MiB semi-spaces let them die young. `postern simulate` and
// the simulator's benchmark run this way; tests call simulate() in their own thread.
import { Worker } from "node:worker_threads"
import type { SimulationSummary } from "./simulate.js"

/** What to run: a scenario file, or a scenario document already read (the benchmark's), and the options. */
export interface SimulationJob {
  readonly scenario: { readonly file: string } | { readonly document: unknown; readonly name: string }
  readonly seed: number
  readonly outDir: string
  readonly dbDir?: string
  readonly policies?: ReadonlyArray<string>
  readonly messages?: number
}

/** The worker's messages to its host. */
export type WorkerReport =
  | { readonly type: "progress"; readonly line: string }
  | { readonly type: "done"; readonly summary: SimulationSummary }
  | { readonly type: "failed"; readonly message: string }

/** The young generation of the simulation's thread: two 64 MiB semi-spaces and the large-object space beside them. */
export const YOUNG_GENERATION_MB = 192

/** Runs `job` on its own thread; progress lines go to `progress`. Rejects with the simulation's error. */
export const simulateOnWorker = (job: SimulationJob, progress?: (line: string) => void): Promise<SimulationSummary> =>
  new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./worker-main.js", import.meta.url), {
      workerData: { job, progress: progress !== undefined },
      resourceLimits: { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB },
    })
    let settled = false
    worker.on("message", (report: WorkerReport) => {
      if (report.type === "progress") progress?.(report.line)
      else if (report.type === "done") {
        settled = true
        resolve(report.summary)
      } else {
        settled = true
        reject(new Error(report.message))
      }
    })
    worker.on("error", (err) => {
      settled = true
      reject(err)
    })
    worker.on("exit", (code) => {
      if (!settled) reject(new Error(`the simulation's thread exited (code ${code}) without a result`))
    })
  })
