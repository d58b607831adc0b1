// The queue store alone: schema, the due index, group commit and its isolation of a failing operation,
// recovery, and recovery's determinism (the same database always recovers to the same queue).
import { copyFileSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import Database from "better-sqlite3"
import { afterEach, describe, expect, test } from "vitest"
import { GroupCommitter } from "../../../src/store/group-commit.js"
import { DataDirLockedError, openQueueForReading, openQueueForWriting, openQueueInMemory } from "../../../src/store/open.js"
import * as q from "../../../src/store/queue-store.js"
import { canonicalDump, recover } from "../../../src/store/recovery.js"
import { migrate, migrations } from "../../../src/store/schema.js"
import { StoreError } from "../../../src/store/errors.js"
import { replyForStoreFailure, SmtpReply } from "../../../src/smtpd/replies.js"
import type { NewMessage } from "../../../src/store/types.js"

const dirs: Array<string> = []
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "postern-store-"))
  dirs.push(d)
  return d
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

const message = (queueId: string, arrivalTime: number, recipients = ["a@x.test"]): NewMessage => ({
  queueId,
  arrivalTime,
  sender: "s@y.test",
  mailParams: { BODY: "8BITMIME" },
  client: { address: "127.0.0.1", helo: "h", hostname: "" },
  recipients: recipients.map((address) => ({ address, params: {} })),
  size: 5,
})

describe("schema", () => {
  test("migrations are numbered 1..n without gaps", () => {
    expect(migrations.map((m) => m.version)).toEqual(migrations.map((_, i) => i + 1))
  })

  test("the due-recipient query uses the partial index, so deferred recipients cost nothing", () => {
    const db = openQueueInMemory()
    const plan = db
      .prepare(`EXPLAIN QUERY PLAN SELECT id, message_id FROM recipients WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT 10`)
      .all(0) as Array<{ detail: string }>
    expect(plan.map((p) => p.detail).join("\n")).toMatch(/USING INDEX recipients_due/)
    const next = db.prepare(`EXPLAIN QUERY PLAN SELECT min(next_attempt_at) FROM recipients WHERE state = 'pending'`).all() as Array<{ detail: string }>
    expect(next.map((p) => p.detail).join("\n")).toMatch(/recipients_due/)
  })

  test("a database from a newer Postern is refused with a clear error", () => {
    const dir = tmp()
    const first = openQueueForWriting(dir)
    first.db.prepare("INSERT INTO schema_migrations (version, description) VALUES (999, 'future')").run()
    first.close()
    expect(() => openQueueForWriting(dir)).toThrow(/schema version 999, newer than this Postern knows/)
  })
})

describe("the data folder lock", () => {
  test("a second writer on the same folder is refused; the lock goes with the first", () => {
    const dir = tmp()
    const first = openQueueForWriting(dir)
    expect(() => openQueueForWriting(dir)).toThrow(DataDirLockedError)
    const reader = openQueueForReading(dir)
    expect((reader.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n).toBe(0)
    reader.close()
    first.close()
    openQueueForWriting(dir).close()
  })
})

describe("group commit", () => {
  test("operations that arrive together share one transaction, and each gets its own result", async () => {
    const db = openQueueInMemory()
    const c = new GroupCommitter(db, { windowMs: 5, lazyWindowMs: 50, maxBatch: 100 })
    const ids = await Promise.all(
      Array.from({ length: 30 }, (_, i) => c.run((d) => q.commitMessage(d, message(`Q${i}`, i), [Buffer.from("hello")], 0, null, true, 1000).messageId)),
    )
    expect(new Set(ids).size).toBe(30)
    expect(c.stats().transactions).toBe(1)
    expect(c.stats().operations).toBe(30)
  })

  test("a failing operation fails alone; its neighbours in the batch commit", async () => {
    const db = openQueueInMemory()
    const c = new GroupCommitter(db, { windowMs: 5, lazyWindowMs: 50, maxBatch: 100 })
    const good = c.run((d) => q.commitMessage(d, message("A", 1), [Buffer.from("x")], 0, null, true, 1))
    const bad = c.run((d) => q.commitMessage(d, message("A", 2), [Buffer.from("y")], 0, null, true, 1)) // duplicate queue id
    const good2 = c.run((d) => q.commitMessage(d, message("B", 3), [Buffer.from("z")], 0, null, true, 1))
    await expect(good).resolves.toMatchObject({ messageId: expect.any(Number) })
    await expect(bad).rejects.toBeInstanceOf(StoreError)
    await expect(bad).rejects.toMatchObject({ reason: "constraint" })
    await expect(good2).resolves.toBeDefined()
    expect((db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n).toBe(2)
    expect((db.prepare("SELECT count(*) AS n FROM bodies").get() as { n: number }).n).toBe(2)
  })

  test("lazy work rides with the next urgent batch instead of paying for its own transaction", async () => {
    const db = openQueueInMemory()
    const c = new GroupCommitter(db, { windowMs: 5, lazyWindowMs: 10_000, maxBatch: 100 })
    let lazyDone = false
    const lazy = c.runLazily(() => "bookkeeping").then((v) => {
      lazyDone = true
      return v
    })
    await new Promise((r) => setTimeout(r, 20))
    expect(lazyDone).toBe(false) // still waiting for company
    await c.run(() => "urgent")
    await expect(lazy).resolves.toBe("bookkeeping")
    expect(c.stats()).toMatchObject({ transactions: 1, operations: 2 })
  })

  test("flushed by its owner (the simulator): nothing commits on a timer, everything on flush(), in one transaction", async () => {
    const db = openQueueInMemory()
    const c = new GroupCommitter(db, { windowMs: 0, lazyWindowMs: 0, maxBatch: 2, flushedByOwner: true })
    let settled = 0
    const all = [c.run(() => 1), c.runLazily(() => 2), c.run(() => 3)].map((p) => p.then((v) => (settled++, v)))
    await new Promise((r) => setTimeout(r, 20))
    expect(settled).toBe(0)
    expect(c.stats().transactions).toBe(0)
    c.flush()
    await expect(Promise.all(all)).resolves.toEqual([1, 2, 3])
    expect(c.stats()).toMatchObject({ transactions: 2, operations: 3 }) // maxBatch 2: two transactions
  })

  test("disk-full errors map to 452 4.3.1 for the client", () => {
    const e = StoreError.from(Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }))
    expect(e.reason).toBe("disk-full")
    expect(SmtpReply.of(replyForStoreFailure(e.reason))).toMatchObject({ responseCode: 452, message: "4.3.1 Insufficient system storage" })
    const busy = StoreError.from(Object.assign(new Error("busy"), { code: "SQLITE_BUSY" }))
    expect(busy.reason).toBe("busy")
    expect(SmtpReply.of(replyForStoreFailure(busy.reason)).responseCode).toBe(451)
  })
})

describe("queue repository", () => {
  test("due messages come out in due order; deferred ones wait for their time", () => {
    const db = openQueueInMemory()
    const a = q.commitMessage(db, message("A", 100), [Buffer.from("a")], 0, null, false, 0)
    const b = q.commitMessage(db, message("B", 50), [Buffer.from("b")], 0, null, false, 0)
    q.rescheduleRecipient(db, a.recipients[0]!.id, 10_000)
    expect(q.dueMessageIds(db, 1000, 10)).toEqual([b.messageId])
    expect(q.nextDueTime(db)).toBe(50)
    q.completeRecipient(db, b.recipients[0]!.id)
    expect(q.deleteMessageIfDone(db, b.messageId)).toBe(true)
    expect(q.nextDueTime(db)).toBe(10_000)
    expect(q.dueMessageIds(db, 10_000, 10)).toEqual([a.messageId])
    const loaded = q.loadDueMessage(db, a.messageId, 10_000)!
    expect(loaded).toMatchObject({ queueId: "A", sender: "s@y.test", mailParams: { BODY: "8BITMIME" } })
    expect(loaded.recipients.map((r) => r.address)).toEqual(["a@x.test"])
  })

  test("a body stored in chunks reads back whole; a missing chunk is reported as damage", () => {
    const db = openQueueInMemory()
    const id = q.insertIncomingMessage(db, "BIG", 1)
    const chunks = [Buffer.alloc(q.BODY_CHUNK_BYTES, 1), Buffer.alloc(q.BODY_CHUNK_BYTES, 2)]
    chunks.forEach((c, i) => q.appendBodyChunk(db, id, i, c))
    const m = { ...message("BIG", 1), size: 2 * q.BODY_CHUNK_BYTES + 3 }
    q.commitMessage(db, m, [Buffer.from("end")], 2, id, true, 0)
    expect(q.readBody(db, id)).toEqual(Buffer.concat([...chunks, Buffer.from("end")]))
    db.prepare("DELETE FROM bodies WHERE message_id = ? AND seq = 1").run(id)
    expect(() => q.readBody(db, id)).toThrow(/damaged/)
  })
})

describe("recovery", () => {
  const seed = (db: Database.Database) => {
    // acknowledged and active (in flight at the crash)
    q.commitMessage(db, message("ACTIVE", 10, ["a@x.test", "b@x.test"]), [Buffer.from("1")], 0, null, true, 99_999)
    // acknowledged and deferred
    const d = q.commitMessage(db, message("DEFERRED", 20), [Buffer.from("2")], 0, null, false, 0)
    q.rescheduleRecipient(db, d.recipients[0]!.id, 5_000)
    // never acknowledged: DATA still streaming at the crash
    const inc = q.insertIncomingMessage(db, "INCOMING", 30)
    q.appendBodyChunk(db, inc, 0, Buffer.from("partial"))
  }

  test("in-flight recipients become due again, half-written messages vanish, deferred ones keep their time", () => {
    const db = openQueueInMemory()
    seed(db)
    const report = recover(db)
    expect(report).toEqual({ released: 2, discardedIncoming: 1, orphans: 0 })
    const rows = db.prepare("SELECT m.queue_id AS q, r.state, r.next_attempt_at AS at FROM recipients r JOIN messages m ON m.id = r.message_id ORDER BY r.id").all()
    expect(rows).toEqual([
      { q: "ACTIVE", state: "pending", at: 10 },
      { q: "ACTIVE", state: "pending", at: 10 },
      { q: "DEFERRED", state: "pending", at: 5_000 },
    ])
    expect(db.prepare("SELECT count(*) AS n FROM messages WHERE queue_id = 'INCOMING'").get()).toEqual({ n: 0 })
    expect(db.prepare("SELECT count(*) AS n FROM bodies").get()).toEqual({ n: 2 })
    expect(recover(db)).toEqual({ released: 0, discardedIncoming: 0, orphans: 0 })
  })

  test("a copy of the database taken at a crash point recovers to byte-identical queues twice", () => {
    const dir = tmp()
    const live = openQueueForWriting(dir)
    seed(live.db)
    live.db.pragma("wal_checkpoint(FULL)")
    const copies = [join(tmp(), "a.db"), join(tmp(), "b.db")]
    for (const c of copies) copyFileSync(join(dir, "queue.db"), c)
    live.close()
    const dumps = copies.map((c) => {
      const db = new Database(c)
      recover(db)
      const dump = canonicalDump(db)
      db.close()
      return dump
    })
    expect(dumps[0]).toBe(dumps[1])
    expect(dumps[0]).toContain('"queue_id":"ACTIVE"')
    expect(dumps[0]).not.toContain("INCOMING")
  })
})

describe("migration 3: bodies as a rowid table", () => {
  test("a queue made before it keeps every body chunk, in order, and seeks bodies by the primary-key index", () => {
    const db = new Database(":memory:")
    // The schema as it stood at version 2, with a body in it.
    db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
    for (const m of migrations.slice(0, 2)) {
      db.exec(m.sql)
      db.prepare("INSERT INTO schema_migrations (version, description) VALUES (?, ?)").run(m.version, m.description)
    }
    const insert = db.prepare("INSERT INTO bodies (message_id, seq, data) VALUES (?, ?, ?)")
    insert.run(7, 1, Buffer.alloc(5000, 0x62))
    insert.run(7, 0, Buffer.alloc(70_000, 0x61))
    insert.run(8, 0, Buffer.from("short"))
    expect(migrate(db)).toBe(migrations.length)
    const rows = db.prepare("SELECT message_id AS m, seq, length(data) AS len, substr(data, 1, 1) AS first FROM bodies ORDER BY message_id, seq").all()
    expect(rows).toEqual([
      { m: 7, seq: 0, len: 70_000, first: Buffer.from("a") },
      { m: 7, seq: 1, len: 5000, first: Buffer.from("b") },
      { m: 8, seq: 0, len: 5, first: Buffer.from("s") },
    ])
    const plan = db.prepare("EXPLAIN QUERY PLAN SELECT data FROM bodies WHERE message_id = ? AND seq = ?").all(7, 0) as Array<{ detail: string }>
    expect(plan.map((p) => p.detail).join("\n")).toMatch(/USING INDEX sqlite_autoindex_bodies/)
    expect(() => insert.run(8, 0, Buffer.from("again"))).toThrow(/UNIQUE/)
  })
})
