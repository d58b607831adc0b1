// Group commit: the one writer of the queue database. Work from many sessions and delivery agents that
// arrives within a short window runs in ONE transaction with synchronous=FULL, so durability costs one
// fsync per batch rather than one per message. A caller's promise settles only after its batch committed.
// If a batch fails, each operation is retried alone so one bad operation cannot fail its neighbours.
import type Database from "better-sqlite3"
import { StoreError } from "./errors.js"

export type StoreOp<T> = (db: Database.Database) => T

interface Pending {
  readonly op: StoreOp<unknown>
  readonly resolve: (value: unknown) => void
  readonly reject: (error: StoreError) => void
}

export interface GroupCommitOptions {
  /** How long the first operation of a batch waits for company (ms). 0 = flush on the next turn. */
  readonly windowMs: number
  /** A batch this large is flushed at once. */
  readonly maxBatch: number
}

export interface CommitStats {
  readonly transactions: number
  readonly operations: number
  readonly failures: number
}

export class GroupCommitter {
  private queue: Array<Pending> = []
  private timer: NodeJS.Timeout | NodeJS.Immediate | null = null
  private closed = false
  private transactions = 0
  private operations = 0
  private failures = 0
  /** Test-only fault hook: thrown inside the transaction before any operation runs. */
  faultBeforeCommit: (() => void) | null = null

  constructor(
    private readonly db: Database.Database,
    private readonly options: GroupCommitOptions = { windowMs: 2, maxBatch: 512 },
  ) {}

  /** Runs `op` inside the next group transaction; resolves with its result after the commit is on disk. */
  run<T>(op: StoreOp<T>): Promise<T> {
    if (this.closed) return Promise.reject(new StoreError({ reason: "unknown", detail: "store is closed" }))
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject })
      if (this.queue.length >= this.options.maxBatch) this.flushSoon(true)
      else this.flushSoon(false)
    })
  }

  /** Runs every queued operation now (used at shutdown and by tests). */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer as NodeJS.Timeout)
      clearImmediate(this.timer as NodeJS.Immediate)
      this.timer = null
    }
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch)
      this.commitBatch(batch)
    }
  }

  stats(): CommitStats {
    return { transactions: this.transactions, operations: this.operations, failures: this.failures }
  }

  close(): void {
    this.flush()
    this.closed = true
  }

  private flushSoon(now: boolean): void {
    if (now) {
      if (this.timer !== null) {
        clearTimeout(this.timer as NodeJS.Timeout)
        clearImmediate(this.timer as NodeJS.Immediate)
      }
      this.timer = setImmediate(() => {
        this.timer = null
        this.flush()
      })
      return
    }
    if (this.timer !== null) return
    const fire = () => {
      this.timer = null
      this.flush()
    }
    this.timer = this.options.windowMs > 0 ? setTimeout(fire, this.options.windowMs) : setImmediate(fire)
  }

  private commitBatch(batch: Array<Pending>): void {
    const results: Array<unknown> = []
    try {
      this.db.transaction(() => {
        this.faultBeforeCommit?.()
        for (const p of batch) results.push(p.op(this.db))
      })()
      this.transactions++
      this.operations += batch.length
      batch.forEach((p, i) => p.resolve(results[i]))
      return
    } catch (error) {
      if (batch.length === 1) {
        this.failures++
        batch[0]!.reject(StoreError.from(error))
        return
      }
    }
    // The batch failed as a whole: isolate the operation at fault.
    for (const p of batch) this.commitBatch([p])
  }
}
