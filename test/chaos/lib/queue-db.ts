// Read-only looks at Postern's queue (queue.db in the data folder), the way `postern queue list` reads it:
// a second reader on the WAL database. After a SIGKILL it shows exactly what was durable at the kill
// (SQLite keeps committed transactions only), which is what the chaos driver's duplicate bound needs.
import Database from "better-sqlite3"
import { existsSync, statSync } from "node:fs"
import { join, resolve } from "node:path"

const dbFile = (dataDir: string): string => join(resolve(dataDir), "queue.db")

const withDb = <T>(dataDir: string, fn: (db: Database.Database) => T): T => {
  const db = new Database(dbFile(dataDir), { readonly: true, fileMustExist: true })
  try {
    db.pragma("busy_timeout = 5000")
    return fn(db)
  } finally {
    db.close()
  }
}

export interface QueueCounts {
  readonly messages: number
  readonly recipients: number
  /** recipients whose message is acknowledged (state 'queued'), as opposed to a body still streaming in */
  readonly queuedRecipients: number
}

export const queueCounts = (dataDir: string): QueueCounts => {
  if (!existsSync(dbFile(dataDir))) return { messages: 0, recipients: 0, queuedRecipients: 0 }
  return withDb(dataDir, (db) => {
    const m = db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }
    const r = db.prepare("SELECT count(*) AS n FROM recipients").get() as { n: number }
    const q = db
      .prepare("SELECT count(*) AS n FROM recipients r JOIN messages m ON m.id = r.message_id WHERE m.state = 'queued'")
      .get() as { n: number }
    return { messages: m.n, recipients: r.n, queuedRecipients: q.n }
  })
}

/** Every recipient address still in the queue (a recipient row is deleted once it is sent or bounced). */
export const queuedAddresses = (dataDir: string): Set<string> =>
  withDb(dataDir, (db) => {
    const rows = db.prepare("SELECT lower(address) AS a FROM recipients").all() as Array<{ a: string }>
    return new Set(rows.map((r) => r.a))
  })

export interface QueueRow {
  readonly queue_id: string
  readonly message_state: string
  readonly address: string
  readonly state: string
  readonly attempts: number
  readonly next_attempt_at: number
  readonly destination: string | null
  readonly last_reply: string | null
  readonly lease_until: number | null
}

/** The recipients still queued, with their message (for evidence). */
export const queueRows = (dataDir: string, limit = 200): Array<QueueRow> =>
  withDb(
    dataDir,
    (db) =>
      db
        .prepare(
          `SELECT m.queue_id, m.state AS message_state, r.address, r.state, r.attempts, r.next_attempt_at, r.destination,
                  r.last_reply, r.lease_until
             FROM recipients r LEFT JOIN messages m ON m.id = r.message_id ORDER BY r.id LIMIT ?`,
        )
        .all(limit) as Array<QueueRow>,
  )

/** The attempts log of some queue ids (what Postern itself recorded about them). */
export const attemptsOf = (dataDir: string, queueIds: ReadonlyArray<string>): Array<Record<string, unknown>> => {
  if (queueIds.length === 0) return []
  return withDb(dataDir, (db) => {
    const stmt = db.prepare("SELECT * FROM attempts WHERE queue_id = ? ORDER BY id")
    return queueIds.flatMap((q) => stmt.all(q) as Array<Record<string, unknown>>)
  })
}

/** The data folder's disk footprint: queue.db and its WAL in bytes, and the rows of the attempts log. */
export const dbFootprint = (dataDir: string): { dbBytes: number; walBytes: number; attempts: number } => {
  const size = (f: string): number => {
    try {
      return statSync(f).size
    } catch {
      return 0
    }
  }
  const file = dbFile(dataDir)
  const attempts = existsSync(file) ? withDb(dataDir, (db) => (db.prepare("SELECT count(*) AS n FROM attempts").get() as { n: number }).n) : 0
  return { dbBytes: size(file), walBytes: size(`${file}-wal`), attempts }
}
