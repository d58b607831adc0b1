// Recovery at start: return the queue to a state where every acknowledged message is owned by nobody and
// due as before the crash. It reads no clock and no chance, so the same database always recovers to the
// same queue (a canonical dump of two recoveries of one copy is byte-identical).
import type Database from "better-sqlite3"

export interface RecoveryReport {
  /** Recipients that were in flight (active) and are due again. */
  readonly released: number
  /** Messages whose DATA never completed (never acknowledged), removed with their bodies. */
  readonly discardedIncoming: number
  /** Rows that belonged to no message, removed. */
  readonly orphans: number
}

export const recover = (db: Database.Database): RecoveryReport =>
  db.transaction((): RecoveryReport => {
    const released = db
      .prepare(`UPDATE recipients SET state = 'pending', lease_until = NULL WHERE state = 'active'`)
      .run().changes
    const incoming = db.prepare(`SELECT id FROM messages WHERE state = 'incoming'`).all() as Array<{ id: number }>
    const delBody = db.prepare(`DELETE FROM bodies WHERE message_id = ?`)
    const delRcpts = db.prepare(`DELETE FROM recipients WHERE message_id = ?`)
    const delMsg = db.prepare(`DELETE FROM messages WHERE id = ?`)
    for (const { id } of incoming) {
      delBody.run(id)
      delRcpts.run(id)
      delMsg.run(id)
    }
    let orphans = db
      .prepare(`DELETE FROM recipients WHERE message_id NOT IN (SELECT id FROM messages)`)
      .run().changes
    orphans += db.prepare(`DELETE FROM bodies WHERE message_id NOT IN (SELECT id FROM messages)`).run().changes
    // A queued message with no recipient left is finished: its last completion was committed.
    const finished = db
      .prepare(
        `SELECT id FROM messages WHERE state = 'queued' AND NOT EXISTS
           (SELECT 1 FROM recipients r WHERE r.message_id = messages.id)`,
      )
      .all() as Array<{ id: number }>
    for (const { id } of finished) {
      delBody.run(id)
      delMsg.run(id)
    }
    orphans += finished.length
    return { released, discardedIncoming: incoming.length, orphans }
  })()

/** A canonical, order-stable dump of the queue (for recovery determinism tests and debugging). */
export const canonicalDump = (db: Database.Database): string => {
  const lines: Array<string> = []
  for (const m of db.prepare(`SELECT * FROM messages ORDER BY id`).iterate()) lines.push(`M ${JSON.stringify(m)}`)
  for (const r of db.prepare(`SELECT * FROM recipients ORDER BY id`).iterate()) lines.push(`R ${JSON.stringify(r)}`)
  for (const b of db.prepare(`SELECT message_id, seq, hex(data) AS data FROM bodies ORDER BY message_id, seq`).iterate())
    lines.push(`B ${JSON.stringify(b)}`)
  return lines.join("\n")
}
