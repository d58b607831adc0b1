// The queue repository: every read and write of messages, recipients, bodies and the attempts log.
// Writes are synchronous functions meant to run inside the GroupCommitter's transaction; reads may run
// anywhere (the writer's connection, or a second read-only connection on the WAL).
import type Database from "better-sqlite3"
import type {
  ActiveMessage,
  AttemptRecord,
  ClientInfo,
  MailParams,
  NewMessage,
  QueuedRecipient,
  RcptParams,
} from "./types.js"

/** Bodies are stored in chunks of at most this many bytes. */
export const BODY_CHUNK_BYTES = 64 * 1024

type Statements = ReturnType<typeof prepare>
const cache = new WeakMap<Database.Database, Statements>()

// A bare `LIMIT ?` makes SQLite (3.47+) re-prepare the statement every time the limit is bound, which
// costs more than running it; `LIMIT +?` is the same limit, read at run time, with no re-prepare.

const prepare = (db: Database.Database) => ({
  insertMessage: db.prepare(
    `INSERT INTO messages (queue_id, state, arrival_time, sender, size, body_chunks, mail_params, client)
     VALUES (@queueId, @state, @arrivalTime, @sender, @size, @bodyChunks, @mailParams, @client)`,
  ),
  finishMessage: db.prepare(`UPDATE messages SET state = 'queued', size = ?, body_chunks = ? WHERE id = ?`),
  insertRecipient: db.prepare(
    `INSERT INTO recipients (message_id, address, rcpt_params, state, attempts, next_attempt_at, lease_until)
     VALUES (?, ?, ?, ?, 0, ?, ?)`,
  ),
  insertChunk: db.prepare(`INSERT INTO bodies (message_id, seq, data) VALUES (?, ?, ?)`),
  chunk: db.prepare(`SELECT data FROM bodies WHERE message_id = ? AND seq = ?`),
  chunkCount: db.prepare(`SELECT count(*) AS n, coalesce(sum(length(data)), 0) AS bytes FROM bodies WHERE message_id = ?`),
  dueRecipients: db.prepare(
    `SELECT id, message_id AS messageId FROM recipients
      WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT +?`,
  ),
  nextDue: db.prepare(`SELECT min(next_attempt_at) AS at FROM recipients WHERE state = 'pending'`),
  messageById: db.prepare(
    `SELECT id, queue_id AS queueId, state, arrival_time AS arrivalTime, sender, size, body_chunks AS bodyChunks,
            mail_params AS mailParams FROM messages WHERE id = ?`,
  ),
  pendingOfMessage: db.prepare(
    `SELECT id, address, rcpt_params AS params, attempts FROM recipients
      WHERE message_id = ? AND state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT +?`,
  ),
  activeOfMessageAfter: db.prepare(
    `SELECT id, address, rcpt_params AS params, attempts FROM recipients
      WHERE message_id = ? AND state = 'active' AND id > ? ORDER BY id LIMIT +?`,
  ),
  activate: db.prepare(`UPDATE recipients SET state = 'active', lease_until = ? WHERE id = ?`),
  activateDueOfMessage: db.prepare(
    `UPDATE recipients SET state = 'active', lease_until = ? WHERE message_id = ? AND state = 'pending' AND next_attempt_at <= ?`,
  ),
  releaseActiveOfMessage: db.prepare(
    `UPDATE recipients SET state = 'pending', next_attempt_at = ?, lease_until = NULL WHERE message_id = ? AND state = 'active'`,
  ),
  deleteRecipient: db.prepare(`DELETE FROM recipients WHERE id = ?`),
  deferRecipient: db.prepare(
    `UPDATE recipients SET state = 'pending', attempts = attempts + 1, next_attempt_at = ?, destination = ?,
            last_reply = ?, lease_until = NULL WHERE id = ?`,
  ),
  noteAttempt: db.prepare(`UPDATE recipients SET attempts = attempts + 1, destination = ?, last_reply = ? WHERE id = ?`),
  releaseRecipient: db.prepare(
    `UPDATE recipients SET state = 'pending', next_attempt_at = ?, lease_until = NULL WHERE id = ?`,
  ),
  remainingOfMessage: db.prepare(`SELECT count(*) AS n FROM recipients WHERE message_id = ?`),
  deleteMessage: db.prepare(`DELETE FROM messages WHERE id = ?`),
  deleteBody: db.prepare(`DELETE FROM bodies WHERE message_id = ?`),
  insertAttempt: db.prepare(
    `INSERT INTO attempts (at, queue_id, recipient, attempt, destination, relay, outcome, dsn, reply, duration_ms)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ),
})

const stmts = (db: Database.Database): Statements => {
  let s = cache.get(db)
  if (s === undefined) {
    s = prepare(db)
    cache.set(db, s)
  }
  return s
}

const parseParams = (json: string): Readonly<Record<string, string | true>> => {
  try {
    return JSON.parse(json) as Record<string, string | true>
  } catch {
    return {}
  }
}

// ---------------------------------------------------------------------------------------------- writes

/** A write to run inside the group committer's transaction. */
export type StoreWrite = (db: Database.Database) => void

/** Creates the row of a message whose body is still streaming in (state 'incoming'); returns its id. */
export const insertIncomingMessage = (db: Database.Database, queueId: string, arrivalTime: number): number =>
  Number(
    stmts(db).insertMessage.run({
      queueId,
      state: "incoming",
      arrivalTime,
      sender: "",
      size: 0,
      bodyChunks: 0,
      mailParams: "{}",
      client: "{}",
    }).lastInsertRowid,
  )

export const appendBodyChunk = (db: Database.Database, messageId: number, seq: number, data: Buffer): void => {
  stmts(db).insertChunk.run(messageId, seq, data)
}

export interface CommittedMessage {
  readonly messageId: number
  readonly recipients: ReadonlyArray<QueuedRecipient>
}

/**
 * Makes a message durable and owned by the queue: its envelope, its recipients and the rest of its body.
 * `incomingId` is the row made by insertIncomingMessage when the body was too large to hold in memory.
 * Recipients start 'active' (leased to the running queue manager until `leaseUntil`) when `admit` is true,
 * else 'pending' and due at arrival.
 */
export const commitMessage = (
  db: Database.Database,
  msg: NewMessage,
  tail: ReadonlyArray<Buffer>,
  firstSeq: number,
  incomingId: number | null,
  admit: boolean,
  leaseUntil: number,
): CommittedMessage => {
  const s = stmts(db)
  let messageId: number
  const chunks = firstSeq + tail.length
  if (incomingId === null) {
    messageId = Number(
      s.insertMessage.run({
        queueId: msg.queueId,
        state: "queued",
        arrivalTime: msg.arrivalTime,
        sender: msg.sender,
        size: msg.size,
        bodyChunks: chunks,
        mailParams: JSON.stringify(msg.mailParams),
        client: JSON.stringify(msg.client),
      }).lastInsertRowid,
    )
  } else {
    messageId = incomingId
    db.prepare(`UPDATE messages SET sender = ?, mail_params = ?, client = ? WHERE id = ?`).run(
      msg.sender,
      JSON.stringify(msg.mailParams),
      JSON.stringify(msg.client),
      messageId,
    )
    s.finishMessage.run(msg.size, chunks, messageId)
  }
  tail.forEach((chunk, i) => s.insertChunk.run(messageId, firstSeq + i, chunk))
  const recipients = msg.recipients.map((r) => ({
    id: Number(
      s.insertRecipient.run(
        messageId,
        r.address,
        JSON.stringify(r.params),
        admit ? "active" : "pending",
        msg.arrivalTime,
        admit ? leaseUntil : null,
      ).lastInsertRowid,
    ),
    address: r.address,
    params: r.params,
    attempts: 0,
  }))
  return { messageId, recipients }
}

/** Leases due recipients to the queue manager: they become 'active' until `leaseUntil`. */
export const activateRecipients = (db: Database.Database, ids: ReadonlyArray<number>, leaseUntil: number): void => {
  const s = stmts(db)
  for (const id of ids) s.activate.run(leaseUntil, id)
}

/**
 * Leases every recipient of a message due at `now` to the queue manager (its active period), whether it
 * is read into memory now or in a later batch (readActiveBatch).
 */
export const activateDueOfMessage = (db: Database.Database, messageId: number, now: number, leaseUntil: number): void => {
  stmts(db).activateDueOfMessage.run(leaseUntil, messageId, now)
}

/** Returns every recipient of a message still leased ('active') to the queue, due at `due` (its actor failed). */
export const releaseActiveOfMessage = (db: Database.Database, messageId: number, due: number): void => {
  stmts(db).releaseActiveOfMessage.run(due, messageId)
}

/** A recipient is done (sent, bounced or expired): its row goes, the attempt stays in the log. */
export const completeRecipient = (db: Database.Database, recipientId: number): void => {
  stmts(db).deleteRecipient.run(recipientId)
}

/** Notes an attempt that deferred a recipient while its message is still active. */
export const noteDeferredAttempt = (db: Database.Database, recipientId: number, destination: string, reply: string): void => {
  stmts(db).noteAttempt.run(destination, reply, recipientId)
}

/** Defers a recipient that was never leased (its destination is dead): one more attempt, due at `nextAttemptAt`. */
export const deferRecipient = (db: Database.Database, recipientId: number, nextAttemptAt: number, destination: string, reply: string): void => {
  stmts(db).deferRecipient.run(nextAttemptAt, destination, reply, recipientId)
}

/** Ends the active period of a deferred recipient: pending again, due at `nextAttemptAt`. */
export const rescheduleRecipient = (db: Database.Database, recipientId: number, nextAttemptAt: number): void => {
  stmts(db).releaseRecipient.run(nextAttemptAt, recipientId)
}

export const appendAttempt = (db: Database.Database, a: AttemptRecord): void => {
  // Positional parameters: binding by name costs a property lookup per column, once per attempt.
  stmts(db).insertAttempt.run(a.at, a.queueId, a.recipient, a.attempt, a.destination, a.relay, a.outcome, a.dsn, a.reply, a.durationMs)
}

/** Deletes a message and its body once no recipient is left. Returns true when it was deleted. */
export const deleteMessageIfDone = (db: Database.Database, messageId: number): boolean => {
  const s = stmts(db)
  const { n } = s.remainingOfMessage.get(messageId) as { n: number }
  if (n > 0) return false
  s.deleteBody.run(messageId)
  s.deleteMessage.run(messageId)
  return true
}

/**
 * Makes deferred recipients due at `now` (postern queue flush): all, or those whose last destination is
 * `destination` (a nexthop with or without its service, e.g. `[10.0.0.5]:25` or `smtp:example.com`) or
 * whose domain is `destination`. Returns how many were made due.
 */
export const flushDeferred = (db: Database.Database, now: number, destination?: string): number => {
  if (destination === undefined) {
    return db.prepare(`UPDATE recipients SET next_attempt_at = ? WHERE state = 'pending' AND next_attempt_at > ?`).run(now, now).changes
  }
  const d = destination.toLowerCase()
  return db
    .prepare(
      `UPDATE recipients SET next_attempt_at = ?
        WHERE state = 'pending' AND next_attempt_at > ?
          AND (destination = ? OR destination LIKE ? OR lower(address) LIKE ?)`,
    )
    .run(now, now, d, `%:${d.replace(/[%_]/g, "")}`, `%@${d.replace(/[%_]/g, "")}`).changes
}

// ----------------------------------------------------------------------------------------------- reads

/** When the earliest pending recipient comes due (epoch ms), or null when nothing is pending. */
export const nextDueTime = (db: Database.Database): number | null =>
  (stmts(db).nextDue.get() as { at: number | null }).at

/** Ids of messages with recipients due at `now`, oldest due first, at most `limit` recipients scanned. */
export const dueMessageIds = (db: Database.Database, now: number, limit: number): Array<number> => {
  const rows = stmts(db).dueRecipients.all(now, limit) as Array<{ id: number; messageId: number }>
  const seen = new Set<number>()
  const out: Array<number> = []
  for (const r of rows) {
    if (!seen.has(r.messageId)) {
      seen.add(r.messageId)
      out.push(r.messageId)
    }
  }
  return out
}

interface MessageRow {
  id: number
  queueId: string
  state: string
  arrivalTime: number
  sender: string
  size: number
  bodyChunks: number
  mailParams: string
}

type RecipientRow = { id: number; address: string; params: string; attempts: number }
const toRecipient = (r: RecipientRow): QueuedRecipient => ({ id: r.id, address: r.address, params: parseParams(r.params) as RcptParams, attempts: r.attempts })

/**
 * Loads a queued message with its recipients due at `now`, in id order, at most `limit` of them (the
 * first batch; -1 = all). The body is left in the store.
 */
export const loadDueMessage = (db: Database.Database, messageId: number, now: number, limit = -1): ActiveMessage | null => {
  const s = stmts(db)
  const m = s.messageById.get(messageId) as MessageRow | undefined
  if (m === undefined || m.state !== "queued") return null
  const recipients = (s.pendingOfMessage.all(messageId, now, limit) as Array<RecipientRow>).map(toRecipient)
  return {
    id: m.id,
    queueId: m.queueId,
    arrivalTime: m.arrivalTime,
    sender: m.sender,
    mailParams: parseParams(m.mailParams) as MailParams,
    size: m.size,
    recipients,
    body: null,
  }
}

/** The next batch of a message's leased recipients: those after id `afterId`, in id order, at most `limit`. */
export const readActiveBatch = (db: Database.Database, messageId: number, afterId: number, limit: number): Array<QueuedRecipient> =>
  (stmts(db).activeOfMessageAfter.all(messageId, afterId, limit) as Array<RecipientRow>).map(toRecipient)

/** Why a message's stored body cannot be trusted (chunks missing, sizes wrong), or null when it is whole. */
export const bodyDamage = (db: Database.Database, messageId: number): string | null => {
  const s = stmts(db)
  const m = s.messageById.get(messageId) as MessageRow | undefined
  if (m === undefined) return `message ${messageId} is not in the queue`
  const { n, bytes } = s.chunkCount.get(messageId) as { n: number; bytes: number }
  return n !== m.bodyChunks || bytes !== m.size ? `body of ${m.queueId} is damaged: ${n}/${m.bodyChunks} chunks, ${bytes}/${m.size} bytes` : null
}

/**
 * Sets a message aside (Postfix's corrupt queue): it is never scheduled again and shows in queue list as
 * `corrupt`, so an operator can look at it; the rest of the queue runs on.
 */
export const quarantineMessage = (db: Database.Database, messageId: number, reason: string): void => {
  db.prepare(`UPDATE messages SET state = 'corrupt' WHERE id = ?`).run(messageId)
  db.prepare(`UPDATE recipients SET state = 'corrupt', last_reply = ?, lease_until = NULL WHERE message_id = ?`).run(reason, messageId)
}

/** The body of a message, chunk by chunk, in order. Throws when chunks are missing (a corrupt row). */
export function* readBodyChunks(db: Database.Database, messageId: number): Generator<Buffer> {
  const s = stmts(db)
  const m = s.messageById.get(messageId) as MessageRow | undefined
  if (m === undefined) throw new Error(`message ${messageId} is not in the queue`)
  const { n, bytes } = s.chunkCount.get(messageId) as { n: number; bytes: number }
  if (n !== m.bodyChunks || bytes !== m.size) {
    throw new Error(`body of ${m.queueId} is damaged: ${n}/${m.bodyChunks} chunks, ${bytes}/${m.size} bytes`)
  }
  // One statement per chunk, never a long-lived iterator: the writer's connection must stay free for
  // the group commit while a delivery streams the body out.
  for (let seq = 0; seq < m.bodyChunks; seq++) {
    const row = s.chunk.get(messageId, seq) as { data: Buffer } | undefined
    if (row === undefined) throw new Error(`body of ${m.queueId} is damaged: chunk ${seq} is missing`)
    yield row.data
  }
}

export const readBody = (db: Database.Database, messageId: number): Buffer => Buffer.concat([...readBodyChunks(db, messageId)])

// -------------------------------------------------------------------------------------- queue listing

export interface QueueListingRecipient {
  readonly address: string
  readonly state: string
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly delayReason: string | null
  readonly destination: string | null
}

export interface QueueListingEntry {
  readonly queueName: "incoming" | "active" | "deferred" | "hold" | "corrupt"
  readonly queueId: string
  readonly arrivalTime: number
  readonly size: number
  readonly sender: string
  readonly recipients: ReadonlyArray<QueueListingRecipient>
}

/** Every message in the queue, oldest first, classified as Postfix's queues would hold it. */
export function* listQueue(db: Database.Database): Generator<QueueListingEntry> {
  const messages = db
    .prepare(
      `SELECT id, queue_id AS queueId, state, arrival_time AS arrivalTime, size, sender FROM messages
        WHERE state != 'incoming' ORDER BY arrival_time, id`,
    )
    .iterate() as Iterable<{ id: number; queueId: string; state: string; arrivalTime: number; size: number; sender: string }>
  const rcpts = db.prepare(
    `SELECT address, state, attempts, next_attempt_at AS nextAttemptAt, last_reply AS delayReason, destination
       FROM recipients WHERE message_id = ? ORDER BY id`,
  )
  const rows = [...messages]
  for (const m of rows) {
    const recipients = rcpts.all(m.id) as Array<QueueListingRecipient>
    const queueName =
      m.state === "hold" || m.state === "corrupt"
        ? m.state
        : recipients.some((r) => r.state === "active")
          ? "active"
          : recipients.some((r) => r.attempts > 0)
            ? "deferred"
            : "incoming"
    yield { queueName, queueId: m.queueId, arrivalTime: m.arrivalTime, size: m.size, sender: m.sender, recipients }
  }
}

/**
 * Deletes at most `limit` rows of the attempts log that ended before `before` (epoch ms), oldest first;
 * returns how many went. Small batches keep each transaction short (attemptLogRetention).
 */
export const pruneAttempts = (db: Database.Database, before: number, limit: number): number =>
  db.prepare(`DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < ? ORDER BY at LIMIT ?)`).run(before, limit).changes
