// The group committer when another connection holds the database's write lock (SQLITE_BUSY): the event
// loop is not blocked, queued work keeps its order and commits once the lock goes, and work locked out
// longer than the busy timeout fails with reason 'busy' (which smtpd turns into 451 4.3.0).
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import Database from "better-sqlite3"
import { afterEach, expect, test } from "vitest"
import { StoreError } from "../../../src/store/errors.js"
import { GroupCommitter } from "../../../src/store/group-commit.js"
import { replyForStoreFailure, SmtpReply } from "../../../src/smtpd/replies.js"

const cleanup: Array<() => void> = []
afterEach(() => {
  for (const c of cleanup.splice(0).reverse()) c()
})

/** A WAL database with a table, our connection and a second one (the lock holder). */
const setup = () => {
  const dir = mkdtempSync(join(tmpdir(), "postern-busy-"))
  const file = join(dir, "q.db")
  const db = new Database(file)
  db.pragma("journal_mode = WAL")
  db.exec("CREATE TABLE t (v TEXT)")
  const other = new Database(file)
  cleanup.push(() => {
    if (other.inTransaction) other.exec("ROLLBACK")
    other.close()
    db.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { db, other }
}

const rows = (db: Database.Database) => (db.prepare("SELECT v FROM t ORDER BY rowid").all() as Array<{ v: string }>).map((r) => r.v)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

test("queued work waits for the lock without blocking the event loop, then commits in order", async () => {
  const { db, other } = setup()
  const c = new GroupCommitter(db, { windowMs: 0, lazyWindowMs: 0, maxBatch: 2, busyTimeoutMs: 5_000, lockWaitMs: 5 })
  other.exec("BEGIN IMMEDIATE")
  const insert = (v: string) => c.run((d) => void d.prepare("INSERT INTO t (v) VALUES (?)").run(v))
  const done = ["a", "b", "c", "d", "e"].map(insert)
  let ticks = 0
  const ticker = setInterval(() => ticks++, 10)
  await sleep(300)
  clearInterval(ticker)
  expect(ticks).toBeGreaterThan(15) // the loop kept turning while locked out
  expect(c.stats().lockOuts).toBeGreaterThan(1)
  expect(rows(db)).toEqual([])
  other.exec("ROLLBACK")
  await Promise.all(done)
  expect(rows(db)).toEqual(["a", "b", "c", "d", "e"])
})

test("work locked out longer than the busy timeout fails 'busy' (451 4.3.0); later work commits once the lock goes", async () => {
  const { db, other } = setup()
  const c = new GroupCommitter(db, { windowMs: 0, lazyWindowMs: 0, maxBatch: 512, busyTimeoutMs: 200, lockWaitMs: 5 })
  other.exec("BEGIN IMMEDIATE")
  const t0 = performance.now()
  const err = await c.run((d) => void d.prepare("INSERT INTO t (v) VALUES ('lost')").run()).then(
    () => null,
    (e: unknown) => e,
  )
  const took = performance.now() - t0
  expect(err).toBeInstanceOf(StoreError)
  expect((err as StoreError).reason).toBe("busy")
  expect(SmtpReply.text(replyForStoreFailure((err as StoreError).reason))).toBe("4.3.0 Error: queue file write error")
  expect(took).toBeGreaterThanOrEqual(195)
  expect(took).toBeLessThan(600)
  const later = c.run((d) => void d.prepare("INSERT INTO t (v) VALUES ('later')").run())
  await sleep(50)
  other.exec("ROLLBACK")
  await later
  expect(rows(db)).toEqual(["later"])
})

test("a failing operation is still isolated from its batch, and extended busy codes count as busy", async () => {
  const { db } = setup()
  const c = new GroupCommitter(db, { windowMs: 0, lazyWindowMs: 0, maxBatch: 512 })
  const ok = c.run((d) => void d.prepare("INSERT INTO t (v) VALUES ('ok')").run())
  const bad = c.run(() => {
    throw Object.assign(new Error("constraint"), { code: "SQLITE_CONSTRAINT_UNIQUE" })
  })
  await ok
  await expect(bad).rejects.toMatchObject({ reason: "constraint" })
  expect(rows(db)).toEqual(["ok"])
  for (const code of ["SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_TIMEOUT", "SQLITE_LOCKED"]) {
    expect(StoreError.from(Object.assign(new Error(code), { code })).reason).toBe("busy")
  }
})
