// WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the commit that crosses
// `wal_autocheckpoint` pages, on the thread that commits: under load, a stall of 10–30 ms on the main
// thread every second or so, and every client waiting for its 250 waits through it. With this, the
// writer's own automatic checkpoint is only a backstop (BACKSTOP_PAGES), and a thread of its own, with
// its own connection, runs PASSIVE checkpoints every `intervalMs`: they copy committed pages into the
// database file (and fsync it) while the writer goes on appending to the WAL; once one has copied every
// frame, the writer's next commit starts the WAL over from its beginning.
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"

/** The writer still checkpoints by itself past this many WAL pages (if the thread is gone or falls behind). */
export const BACKSTOP_PAGES = 20_000

export const DEFAULT_CHECKPOINT_INTERVAL_MS = 250

// The thread's whole program (CommonJS, run with eval: nothing to resolve or compile at run time).
const THREAD_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads")
const Database = require(workerData.driver)
const db = new Database(workerData.path)
db.pragma("synchronous = NORMAL")
// A failure that repeats (a full disk) is reported once a minute, not every round.
let lastProblem = ""
let lastReported = 0
const tick = () => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)")
    lastProblem = ""
  } catch (e) {
    const message = String(e && e.message)
    if (message === lastProblem && Date.now() - lastReported < 60000) return
    lastProblem = message
    lastReported = Date.now()
    parentPort.postMessage({ t: "error", message })
  }
}
const timer = setInterval(tick, workerData.intervalMs)
parentPort.on("message", (m) => {
  if (m !== "stop") return
  clearInterval(timer)
  db.close()
  parentPort.postMessage({ t: "stopped" })
  parentPort.close()
})
`

export interface CheckpointerOptions {
  readonly intervalMs?: number
  /** Told of a checkpoint that failed, or of the thread's end; the writer's backstop still holds. */
  readonly onProblem?: (message: string) => void
}

export class BackgroundCheckpointer {
  private worker: Worker | null
  private stopping = false

  constructor(dbPath: string, options: CheckpointerOptions = {}) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3")
    const worker = new Worker(THREAD_SOURCE, {
      eval: true,
      workerData: { driver, path: dbPath, intervalMs: options.intervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS },
    })
    worker.on("message", (m: { t: string; message?: string }) => {
      if (m.t === "error") options.onProblem?.(`WAL checkpoint failed: ${m.message}`)
    })
    worker.on("error", (e) => options.onProblem?.(`WAL checkpoint thread failed: ${e.message}`))
    worker.on("exit", () => {
      if (!this.stopping) options.onProblem?.("WAL checkpoint thread ended; the writer checkpoints by itself")
      this.worker = null
    })
    worker.unref()
    this.worker = worker
  }

  /** Ends the thread after the checkpoint it may be running (its connection is closed there). */
  stop(): void {
    if (this.worker === null || this.stopping) return
    this.stopping = true
    this.worker.postMessage("stop")
  }
}
