// Durability without blocking the event loop. The queue runs SQLite in WAL mode with synchronous=NORMAL: a
// commit appends its frames to the WAL with write() (in the OS page cache: safe from a process crash or
// kill -9, not yet from a power loss) and returns at once. This then fsyncs the WAL file on libuv's thread
// pool, and the group committer answers its callers (the 250 to a client) only when an fsync that began
// after their commit has finished: the same guarantee as synchronous=FULL, but the main thread serves SMTP
// while the disk flushes. fsyncs coalesce: while one runs, every commit behind it shares the next one.
import { fsync, fsyncSync, openSync, closeSync } from "node:fs"
import { dirname } from "node:path"

export type DurableSync = () => Promise<void>

export class WalSync {
  private fd: number | null = null
  private running: Promise<void> | null = null
  private queued: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | null = null
  private closed = false
  /** fsyncs done (for tests and stats). */
  syncs = 0

  /** `walPath`: the database's `-wal` file (it exists once the first transaction committed). */
  constructor(private readonly walPath: string) {}

  /** Resolves once everything written to the WAL before this call is on disk. */
  readonly sync: DurableSync = () => {
    if (this.closed) return Promise.reject(new Error("the queue is closed"))
    if (this.running === null) {
      this.running = this.flush()
      return this.running
    }
    // An fsync is under way and may have started before this caller's writes: it takes the next one.
    if (this.queued === null) {
      let resolve!: () => void
      let reject!: (e: unknown) => void
      const promise = new Promise<void>((res, rej) => {
        resolve = res
        reject = rej
      })
      this.queued = { promise, resolve, reject }
    }
    return this.queued.promise
  }

  close(): void {
    this.closed = true
    if (this.fd !== null) closeSync(this.fd)
    this.fd = null
  }

  private flush(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let fd: number
      try {
        fd = this.open()
      } catch (e) {
        reject(e)
        return
      }
      fsync(fd, (err) => {
        this.syncs++
        if (err === null) resolve()
        else reject(err)
      })
    }).finally(() => {
      this.running = null
      const next = this.queued
      this.queued = null
      if (next !== null) {
        this.running = this.flush()
        this.running.then(next.resolve, next.reject)
      }
    })
  }

  /** The WAL's descriptor, opened on first use; the folder is synced once so the WAL's own entry is durable. */
  private open(): number {
    if (this.fd !== null) return this.fd
    this.fd = openSync(this.walPath, "r")
    const dir = openSync(dirname(this.walPath), "r")
    try {
      fsyncSync(dir)
    } finally {
      closeSync(dir)
    }
    return this.fd
  }
}
