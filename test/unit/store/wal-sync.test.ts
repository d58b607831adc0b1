// WalSync (src/store/wal-sync.ts): commits are acknowledged only after an fsync of the WAL that began after
// them; fsyncs coalesce (callers behind a running fsync share the next one); the group committer holds its
// callers until then.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { openQueueForWriting, type OpenedQueue } from "../../../src/store/open.js"
import { GroupCommitter } from "../../../src/store/group-commit.js"
import { WalSync } from "../../../src/store/wal-sync.js"

const dirs: Array<string> = []
const queues: Array<OpenedQueue> = []
afterEach(() => {
  for (const q of queues.splice(0)) q.close()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

const open = () => {
  const dir = mkdtempSync(join(tmpdir(), "postern-walsync-"))
  dirs.push(dir)
  const q = openQueueForWriting(dir)
  queues.push(q)
  return q
}

describe("WalSync", () => {
  it("the queue runs synchronous=NORMAL in WAL mode (the fsync is ours)", () => {
    const q = open()
    expect(q.db.pragma("journal_mode", { simple: true })).toBe("wal")
    expect(q.db.pragma("synchronous", { simple: true })).toBe(1)
  })

  it("callers behind a running fsync share the next one: many syncs, few fsyncs, all resolved in order", async () => {
    const q = open()
    q.db.exec("CREATE TABLE t (x INTEGER)")
    const wal = new WalSync(join(q.dataDir, "queue.db-wal"))
    const order: Array<number> = []
    const all = Array.from({ length: 50 }, (_, i) => {
      q.db.prepare("INSERT INTO t VALUES (?)").run(i)
      return wal.sync().then(() => void order.push(i))
    })
    await Promise.all(all)
    expect(order).toEqual(Array.from({ length: 50 }, (_, i) => i))
    // The first call starts one fsync; the 49 behind it share one more.
    expect(wal.syncs).toBe(2)
    wal.close()
  })

  it("the group committer answers only after the fsync, and not at all if it fails", async () => {
    const q = open()
    q.db.exec("CREATE TABLE t (x INTEGER)")
    let release!: () => void
    let fail = false
    const gate = new Promise<void>((r) => (release = r))
    const committer = new GroupCommitter(q.db, { windowMs: 0, lazyWindowMs: 0, maxBatch: 100 }, () => gate.then(() => (fail ? Promise.reject(Object.assign(new Error("EIO"), { code: "EIO" })) : undefined)))
    let answered = false
    const done = committer.run((db) => db.prepare("INSERT INTO t VALUES (1)").run()).then(() => (answered = true))
    committer.flush()
    // Committed (visible) but not acknowledged while the disk has not confirmed.
    expect((q.db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n).toBe(1)
    await new Promise((r) => setTimeout(r, 20))
    expect(answered).toBe(false)
    release()
    await done
    expect(answered).toBe(true)

    fail = true
    const failed = committer.run((db) => db.prepare("INSERT INTO t VALUES (2)").run())
    committer.flush()
    await expect(failed).rejects.toThrow(/EIO/)
  })
})
