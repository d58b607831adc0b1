// Opening the queue: the data folder, its exclusive lock, and the database in WAL mode. Commits write the
// WAL without waiting for the disk (synchronous=NORMAL); `sync` then fsyncs the WAL off the event loop,
// and nothing is acknowledged before it has (src/store/wal-sync.ts): 250 means the commit is on disk. One process owns a data folder: the lock is an
// OS file lock held by SQLite on `postern.lock`, so it vanishes with the process, even after kill -9.
import { mkdirSync, writeFileSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import Database from "better-sqlite3"
import { BackgroundCheckpointer, BACKSTOP_PAGES } from "./checkpointer.js"
import { migrate } from "./schema.js"
import { WalSync, type DurableSync } from "./wal-sync.js"

export const QUEUE_DB = "queue.db"
const LOCK_DB = "postern.lock"
const PID_FILE = "postern.pid"

export class DataDirLockedError extends Error {
  constructor(readonly dataDir: string, readonly holder: string) {
    super(
      `another Postern is running on data folder ${dataDir} (${holder}); ` +
        "stop it first, or give this instance its own dataDir",
    )
  }
}

export interface OpenedQueue {
  readonly db: Database.Database
  readonly dataDir: string
  /** Resolves when every commit made before the call is on disk (an fsync of the WAL on the thread pool). */
  readonly sync: DurableSync
  readonly close: () => void
}

const tune = (db: Database.Database) => {
  db.pragma("journal_mode = WAL")
  // Commits do not fsync on the main thread; WalSync does it off the event loop before any reply (and
  // SQLite still syncs the WAL before every checkpoint and the database after it).
  db.pragma("synchronous = NORMAL")
  db.pragma("busy_timeout = 5000") // recovery and migrations at start; the group committer then waits asynchronously
  db.pragma("foreign_keys = OFF")
  db.pragma("cache_size = -32768") // 32 MiB page cache
  db.pragma("wal_autocheckpoint = 4000")
}

export interface OpenOptions {
  /**
   * WAL checkpoints on a thread of their own instead of inside a commit on the event loop (checkpointer.ts);
   * `onProblem` hears of a failed one. `postern start` uses it; tools and tests leave it off.
   */
  readonly backgroundCheckpoints?: { readonly onProblem?: (message: string) => void }
}

/** Opens the queue for the one writer: takes the folder's lock, migrates the schema. */
export const openQueueForWriting = (dataDir: string, options: OpenOptions = {}): OpenedQueue => {
  const dir = resolve(dataDir)
  mkdirSync(dir, { recursive: true })
  const lock = new Database(join(dir, LOCK_DB))
  try {
    lock.pragma("locking_mode = EXCLUSIVE")
    lock.pragma("busy_timeout = 0")
    lock.exec("CREATE TABLE IF NOT EXISTS owner (pid INTEGER)")
    lock.exec("BEGIN EXCLUSIVE")
  } catch (error) {
    lock.close()
    let holder = "lock held"
    try {
      holder = `pid ${readFileSync(join(dir, PID_FILE), "utf8").trim()}`
    } catch {
      /* no pid file: keep the generic text */
    }
    if ((error as { code?: string }).code === "SQLITE_BUSY") throw new DataDirLockedError(dir, holder)
    throw error
  }
  writeFileSync(join(dir, PID_FILE), `${process.pid}\n`)
  const db = new Database(join(dir, QUEUE_DB))
  tune(db)
  migrate(db)
  const wal = new WalSync(join(dir, `${QUEUE_DB}-wal`))
  let checkpointer: BackgroundCheckpointer | null = null
  if (options.backgroundCheckpoints !== undefined) {
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`)
    const onProblem = options.backgroundCheckpoints.onProblem
    checkpointer = new BackgroundCheckpointer(join(dir, QUEUE_DB), onProblem !== undefined ? { onProblem } : {})
  }
  return {
    db,
    dataDir: dir,
    sync: wal.sync,
    close: () => {
      checkpointer?.stop()
      wal.close()
      try {
        db.pragma("wal_checkpoint(TRUNCATE)")
      } catch {
        /* best effort */
      }
      db.close()
      try {
        lock.exec("ROLLBACK")
      } catch {
        /* ignore */
      }
      lock.close()
    },
  }
}

/** A second, read-only reader on the WAL database (postern queue list while Postern runs). */
export const openQueueForReading = (dataDir: string): Database.Database => {
  const db = new Database(join(resolve(dataDir), QUEUE_DB), { readonly: true, fileMustExist: true })
  db.pragma("busy_timeout = 5000")
  return db
}

/** An in-memory queue with the production schema (tests, the simulator). */
export const openQueueInMemory = (): Database.Database => {
  const db = new Database(":memory:")
  migrate(db)
  return db
}
