// Attempts-log retention (attemptLogRetention): the attempts table gets a row per delivery attempt and
// would grow forever. Every 10 minutes of the injected clock, rows older than the retention are deleted in
// batches of a few hundred, each a short lazy transaction through the group committer, so SMTP is never
// held up for long. Retention 0 keeps everything and arms no timer. Time is read only from the Clock.
import type { PosternConfig } from "../config/types.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import type { GroupCommitter } from "../store/group-commit.js"
import { pruneAttempts } from "../store/queue-store.js"

export interface AttemptPrunerDeps {
  readonly config: () => PosternConfig
  readonly committer: GroupCommitter
  readonly clock: ClockShape
  readonly log: Logger
}

/** The first sweep comes a minute after start (recovery that can wait, waits); then one per interval. */
export const PRUNE_FIRST_MS = 60_000
export const PRUNE_EVERY_MS = 10 * 60_000
/** Rows deleted per transaction, and the pause between two batches of one sweep. */
export const PRUNE_BATCH = 500
export const PRUNE_PAUSE_MS = 10

export class AttemptPruner {
  private timer: unknown = null
  private stopped = true
  /** Rows deleted by the sweep under way. */
  private sweptRows = 0

  constructor(private readonly deps: AttemptPrunerDeps) {}

  start(): void {
    if (this.deps.config().attemptLogRetention <= 0) return
    this.stopped = false
    this.next(PRUNE_FIRST_MS)
  }

  stop(): void {
    this.stopped = true
    if (this.timer !== null) this.deps.clock.clearTimeout(this.timer)
    this.timer = null
  }

  private next(delayMs: number): void {
    if (this.stopped) return
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = null
      this.batch()
    }, delayMs)
  }

  /** Deletes one batch; a full batch means more is due, after a short pause; else the sweep is over. */
  private batch(): void {
    const before = this.deps.clock.now() - this.deps.config().attemptLogRetention
    this.deps.committer.runLazily((db) => pruneAttempts(db, before, PRUNE_BATCH)).then(
      (deleted) => {
        this.sweptRows += deleted
        if (deleted === PRUNE_BATCH) return this.next(PRUNE_PAUSE_MS)
        if (this.sweptRows > 0) {
          this.deps.log.info({ actor: "attempt-pruner", deleted: this.sweptRows, before }, "attempts log pruned (attemptLogRetention)")
        }
        this.sweptRows = 0
        this.next(PRUNE_EVERY_MS)
      },
      (err: unknown) => {
        // The store is busy or full: the rows wait for the next sweep.
        this.deps.log.warn({ actor: "attempt-pruner", err }, "could not prune the attempts log; trying again at the next sweep")
        this.sweptRows = 0
        this.next(PRUNE_EVERY_MS)
      },
    )
  }
}
