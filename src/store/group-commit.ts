// Group commit: the one writer of the queue database. Work from many sessions and delivery agents that
// arrives within a short window runs in ONE transaction with synchronous=FULL, so durability costs one
// fsync per batch rather than one per message. A caller's promise settles only after its batch committed.
// If a batch fails, each operation is retried alone so one bad operation cannot fail its neighbours.
// Two kinds of work: urgent (a client waits for its 250) flushes after `windowMs`; lazy (delivery
// outcomes, which nobody waits on) rides along with the next urgent batch or flushes after `lazyWindowMs`,
// so under load the queue's bookkeeping costs no fsync of its own.
import type Database from "better-sqlite3"
import { StoreError } from "./errors.js"

export type StoreOp<T> = (db: Database.Database) => T

interface Pending {
  readonly op: StoreOp<unknown>
  readonly resolve: (value: unknown) => void
  readonly reject: (error: StoreError) => void
}

export interface GroupCommitOptions {
  /** How long the first urgent operation of a batch waits for company (ms). 0 = flush on the next turn. */
  readonly windowMs: number
  /** How long a lazy operation may wait for an urgent batch to ride with (ms). */
  readonly lazyWindowMs: number
  /** A batch this large is flushed at once. */
  readonly maxBatch: number
}

export const DEFAULT_GROUP_COMMIT: GroupCommitOptions = { windowMs: 4, lazyWindowMs: 20, maxBatch: 512 }

export interface CommitStats {
  readonly transactions: number
  readonly operations: number
  readonly failures: number
}

export class GroupCommitter {
  private queue: Array<Pending> = []
  private timer: NodeJS.Timeout | NodeJS.Immediate | null = null
  /** When the pending timer fires (performance.now()), to bring a lazy deadline forward for urgent work. */
  private timerDue = Infinity
  private closed = false
  private transactions = 0
  private operations = 0
  private failures = 0
  /** Test-only fault hook: thrown inside the transaction before any operation runs. */
  faultBeforeCommit: (() => void) | null = null

  constructor(
    private readonly db: Database.Database,
    private readonly options: GroupCommitOptions = DEFAULT_GROUP_COMMIT,
  ) {}

  /**
   * Whether more urgent work may be on its way (smtpd: another client is connected). When none is, there
   * is no company worth waiting for: the batch flushes on the next turn and a lone client is not slowed.
   */
  expectCompany: () => boolean = () => true

  /** Runs `op` inside the next group transaction; resolves with its result after the commit is on disk. */
  run<T>(op: StoreOp<T>): Promise<T> {
    return this.enqueue(op, this.expectCompany() ? this.options.windowMs : 0)
  }

  /** Like run(), for work nobody is waiting on: it may wait longer, to share an urgent batch's fsync. */
  runLazily<T>(op: StoreOp<T>): Promise<T> {
    return this.enqueue(op, this.options.lazyWindowMs)
  }

  private enqueue<T>(op: StoreOp<T>, windowMs: number): Promise<T> {
    if (this.closed) return Promise.reject(new StoreError({ reason: "unknown", detail: "store is closed" }))
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject })
      if (this.queue.length >= this.options.maxBatch) this.flushSoon(0)
      else this.flushSoon(windowMs)
    })
  }

  /** Runs every queued operation now (used at shutdown and by tests). */
  flush(): void {
    this.cancelTimer()
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

  /** Makes sure a flush happens within `windowMs` (never later than one already planned). */
  private flushSoon(windowMs: number): void {
    const due = performance.now() + windowMs
    if (this.timer !== null && this.timerDue <= due) return
    this.cancelTimer()
    const fire = () => {
      this.timer = null
      this.timerDue = Infinity
      this.flush()
    }
    this.timerDue = due
    this.timer = windowMs > 0 ? setTimeout(fire, windowMs) : setImmediate(fire)
  }

  private cancelTimer(): void {
    if (this.timer === null) return
    clearTimeout(this.timer as NodeJS.Timeout)
    clearImmediate(this.timer as NodeJS.Immediate)
    this.timer = null
    this.timerDue = Infinity
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
