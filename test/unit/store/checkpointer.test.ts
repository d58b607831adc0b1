// Background WAL checkpoints (src/store/checkpointer.ts): with them on, committed pages reach the database
// file from the checkpoint thread while the writer's own automatic checkpoint is only a far-off backstop,
// and the WAL starts over once they are all copied; without them nothing changes.
import { mkdtempSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { BACKSTOP_PAGES } from "../../../src/store/checkpointer.js"
import { openQueueForWriting, type OpenedQueue } from "../../../src/store/open.js"

const dirs: Array<string> = []
const queues: Array<OpenedQueue> = []
afterEach(() => {
  for (const q of queues.splice(0)) q.close()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

const open = (background: boolean, problems: Array<string> = []) => {
  const dir = mkdtempSync(join(tmpdir(), "postern-checkpoint-"))
  dirs.push(dir)
  const q = openQueueForWriting(dir, background ? { backgroundCheckpoints: { onProblem: (m) => problems.push(m) } } : {})
  queues.push(q)
  return q
}

/** Commits `pages` pages' worth of rows (one 4 KiB blob per row), in transactions of 100 rows. */
const writePages = (q: OpenedQueue, pages: number) => {
  q.db.exec("CREATE TABLE IF NOT EXISTS scratch (x BLOB)")
  const insert = q.db.prepare("INSERT INTO scratch VALUES (?)")
  const blob = Buffer.alloc(4000, 7)
  const batch = q.db.transaction((n: number) => {
    for (let i = 0; i < n; i++) insert.run(blob)
  })
  for (let done = 0; done < pages; done += 100) batch(100)
}

const dbBytes = (q: OpenedQueue) => statSync(join(q.dataDir, "queue.db")).size
const walBytes = (q: OpenedQueue) => statSync(join(q.dataDir, "queue.db-wal")).size

const waitFor = async (what: string, ok: () => boolean, ms = 5000) => {
  const until = Date.now() + ms
  while (!ok()) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe("background WAL checkpoints", () => {
  it("copy committed pages into the database file while the writer only appends", async () => {
    const problems: Array<string> = []
    const q = open(true, problems)
    expect(q.db.pragma("wal_autocheckpoint", { simple: true })).toBe(BACKSTOP_PAGES)
    const before = dbBytes(q)
    writePages(q, 2_000) // far below the writer's backstop: only the thread can have checkpointed them
    await waitFor("the database file holds the rows", () => dbBytes(q) > before + 7_000_000)
    await new Promise((r) => setTimeout(r, 600)) // the thread's next rounds find every frame copied
    // Every frame copied: the writer's next commit starts the WAL over, so the file does not grow.
    const walAfterFirst = walBytes(q)
    writePages(q, 1_000)
    expect(walBytes(q)).toBe(walAfterFirst)
    await waitFor("the second batch is in the database file too", () => dbBytes(q) > before + 11_000_000)
    expect(problems).toEqual([])
  })

  it("are off unless asked for: the writer checkpoints by itself, every 4,000 pages", async () => {
    const q = open(false)
    expect(q.db.pragma("wal_autocheckpoint", { simple: true })).toBe(4000)
    const before = dbBytes(q)
    writePages(q, 2_000)
    await new Promise((r) => setTimeout(r, 600))
    expect(dbBytes(q)).toBe(before)
  })
})
