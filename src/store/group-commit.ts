// Group commit: the one writer of the queue database. Work from many sessions and delivery agents that
// arrives within a short window runs in ONE transaction, and its callers hear of it only once the commit is
// on disk: after the WAL's fsync (WalSync, off the event loop, shared by every batch committed meanwhile),
// or after the commit itself when SQLite syncs (synchronous=FULL). Durability costs one fsync per batch or
// fewer, never one per message.
// If a batch fails, each operation is retried alone so one bad operation cannot fail its neighbours.
// Two kinds of work: urgent (a client waits for its 250) flushes after `windowMs`; lazy (delivery
// outcomes, which nobody waits on) rides along with the next urgent batch or flushes after `lazyWindowMs`,
// so under load the queue's bookkeeping costs no fsync of its own.
// When another connection holds the database's write lock (SQLITE_BUSY), the event loop is never blocked
// waiting for it: SQLite waits at most `lockWaitMs`, then the work stays queued, in order, and is retried
// with a short backoff; an operation still locked out after `busyTimeoutMs` fails with reason 'busy'
// (smtpd answers 451 4.3.0, the queue manager retries its bookkeeping).
import type Database from "better-sqlite3"
import { StoreError } from "./errors.js"
import type { DurableSync } from "./wal-sync.js"

export type StoreOp<T> = (db: Database.Database) => T

interface Pending {
  readonly op: StoreOp<unknown>
  readonly resolve: (value: unknown) => void
  readonly reject: (error: StoreError) => void
  /** When this operation first found the database locked by another connection (performance.now()). */
  lockedOutSince?: number
}

export interface GroupCommitOptions {
  /** How long the first urgent operation of a batch waits for company (ms). 0 = flush on the next turn. */
  readonly windowMs: number
  /** How long a lazy operation may wait for an urgent batch to ride with (ms). */
  readonly lazyWindowMs: number
  /** A batch this large is flushed at once. */
  readonly maxBatch: number
  /** How long an operation may wait for another connection's write lock before it fails 'busy' (ms). */
  readonly busyTimeoutMs?: number
  /** How long SQLite itself may block the event loop waiting for that lock, per try (ms; busy_timeout). */
  readonly lockWaitMs?: number
  /**
   * Commits only when the owner calls flush(), never on a timer of its own: the simulator, whose loop
   * flushes before virtual time moves (the windows are then unused).
   */
  readonly flushedByOwner?: boolean
}

/**
 * The urgent window is 2 ms: a client's wait for its 250 is the window plus one fsync, and with 20 clients
 * relaying that wait was ~30% of each session (4 ms: 5.1 ms of a 17.6 ms session). 2 ms moved 16-19% more
 * mail for the same CPU per message on 2 CPUs; 1 ms made batches too small (more CPU, less mail).
 */
export const DEFAULT_GROUP_COMMIT: GroupCommitOptions = { windowMs: 2, lazyWindowMs: 20, maxBatch: 512, busyTimeoutMs: 5000, lockWaitMs: 10 }

/** Retries while locked out: from the first to the last, doubling (ms). */
const LOCK_RETRY_FIRST_MS = 5
const LOCK_RETRY_MAX_MS = 100

export interface CommitStats {
  readonly transactions: number
  readonly operations: number
  readonly failures: number
  /** Times a batch found the database locked by another connection and waited. */
  readonly lockOuts: number
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
  private lockOuts = 0
  /** Set while another connection holds the write lock: the retry timer, and its current backoff. */
  private lockRetry: NodeJS.Timeout | null = null
  private lockBackoffMs = 0
  private readonly busyTimeoutMs: number
  /** The batch's transaction, BEGIN IMMEDIATE: a lock held elsewhere is met before any operation runs. */
  private readonly transaction: Database.Transaction<(batch: ReadonlyArray<Pending>, results: Array<unknown>) => void>
  /** Test-only fault hook: thrown inside the transaction before any operation runs. */
  faultBeforeCommit: (() => void) | null = null

  constructor(
    private readonly db: Database.Database,
    private readonly options: GroupCommitOptions = DEFAULT_GROUP_COMMIT,
    /**
     * Makes committed work durable (an fsync of the WAL off the event loop); callers hear of their commit
     * only after it. Absent: the commit itself is what counts (synchronous=FULL, or a database in memory).
     */
    private readonly durable?: DurableSync,
  ) {
    this.busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_GROUP_COMMIT.busyTimeoutMs!
    // From here on this committer is the writer: SQLite must not hold the event loop for long.
    db.pragma(`busy_timeout = ${options.lockWaitMs ?? DEFAULT_GROUP_COMMIT.lockWaitMs!}`)
    this.transaction = db.transaction((batch, results) => {
      this.faultBeforeCommit?.()
      for (const p of batch) results.push(p.op(this.db))
    })
  }

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
      if (this.options.flushedByOwner === true) return
      if (this.queue.length >= this.options.maxBatch) this.flushSoon(0)
      else this.flushSoon(windowMs)
    })
  }

  /** Runs every queued operation now (used at shutdown and by tests), unless the database is locked. */
  flush(): void {
    this.cancelTimer()
    while (this.queue.length > 0 && this.lockRetry === null) {
      const batch = this.queue.splice(0, this.options.maxBatch)
      const lockedOut = this.commitBatch(batch)
      if (lockedOut.length > 0) this.waitForLock(lockedOut)
    }
  }

  stats(): CommitStats {
    return { transactions: this.transactions, operations: this.operations, failures: this.failures, lockOuts: this.lockOuts }
  }

  close(): void {
    this.flush()
    this.closed = true
    // Still locked out: what is left fails now (a client waiting gets its 4xx; the rest is redone later).
    if (this.lockRetry !== null) clearTimeout(this.lockRetry)
    this.lockRetry = null
    for (const p of this.queue.splice(0)) p.reject(new StoreError({ reason: "busy", detail: "store closed while another connection held its write lock" }))
  }

  /** Makes sure a flush happens within `windowMs` (never later than one already planned). */
  private flushSoon(windowMs: number): void {
    if (this.lockRetry !== null) return // the retry flushes everything queued
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

  /** Commits `batch`; returns the operations not run because the database is locked, in order. */
  private commitBatch(batch: Array<Pending>): Array<Pending> {
    const results: Array<unknown> = []
    try {
      this.transaction.immediate(batch, results)
      this.transactions++
      this.operations += batch.length
      this.lockBackoffMs = 0
      if (this.durable === undefined) batch.forEach((p, i) => p.resolve(results[i]))
      else {
        this.durable().then(
          () => batch.forEach((p, i) => p.resolve(results[i])),
          (error: unknown) => {
            // Committed but maybe not on disk: nobody is told it is. A client gets its 4xx and sends again
            // (at least once); delivery bookkeeping is written again by its retry path.
            this.failures += batch.length
            const e = StoreError.from(error)
            for (const p of batch) p.reject(e)
          },
        )
      }
      return []
    } catch (error) {
      const e = StoreError.from(error)
      // Nobody's fault here: another connection holds the lock. The whole batch waits for it.
      if (e.reason === "busy") return batch
      if (batch.length === 1) {
        this.failures++
        batch[0]!.reject(e)
        return []
      }
    }
    // The batch failed as a whole: isolate the operation at fault.
    for (let i = 0; i < batch.length; i++) {
      const lockedOut = this.commitBatch([batch[i]!])
      if (lockedOut.length > 0) return [...lockedOut, ...batch.slice(i + 1)]
    }
    return []
  }

  /**
   * The database is locked by another connection: `lockedOut` goes back to the head of the queue and
   * everything is tried again after a short backoff; what has waited longer than `busyTimeoutMs` fails.
   */
  private waitForLock(lockedOut: Array<Pending>): void {
    this.lockOuts++
    this.queue.unshift(...lockedOut)
    const now = performance.now()
    const waiting: Array<Pending> = []
    for (const p of this.queue) {
      p.lockedOutSince ??= now
      if (now - p.lockedOutSince < this.busyTimeoutMs) waiting.push(p)
      else {
        this.failures++
        p.reject(new StoreError({ reason: "busy", detail: `the queue database stayed locked by another connection for ${this.busyTimeoutMs} ms` }))
      }
    }
    this.queue = waiting
    if (this.queue.length === 0) return
    this.lockBackoffMs = Math.min(Math.max(LOCK_RETRY_FIRST_MS, this.lockBackoffMs * 2), LOCK_RETRY_MAX_MS)
    this.lockRetry = setTimeout(() => {
      this.lockRetry = null
      this.flush()
    }, this.lockBackoffMs)
  }
}
