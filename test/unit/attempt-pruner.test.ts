// Attempts-log retention on virtual time (ManualClock): rows older than attemptLogRetention go, in
// batches of PRUNE_BATCH through the group committer, a minute after start and every 10 minutes after;
// newer rows stay; retention 0 keeps everything and arms no timer.
import { afterEach, expect, test } from "vitest"
import { AttemptPruner, PRUNE_BATCH, PRUNE_EVERY_MS, PRUNE_FIRST_MS, PRUNE_PAUSE_MS } from "../../src/actors/attempt-pruner.js"
import { decodeConfig } from "../../src/config/index.js"
import { ManualClock } from "../../src/runtime/clock.js"
import { silentLogger } from "../../src/runtime/log.js"
import { GroupCommitter } from "../../src/store/group-commit.js"
import { openQueueInMemory } from "../../src/store/open.js"
import { appendAttempt } from "../../src/store/queue-store.js"

const DAY = 86_400_000
const NEVER = 2_000_000_000 // the committer flushes only when the test says so

const open: Array<{ close(): void }> = []
afterEach(() => {
  for (const o of open.splice(0)) o.close()
})

const setup = (retention: string | number) => {
  const db = openQueueInMemory()
  open.push(db)
  const clock = new ManualClock(10 * DAY)
  const committer = new GroupCommitter(db, { windowMs: NEVER, lazyWindowMs: NEVER, maxBatch: 100_000 })
  const config = decodeConfig({ hostname: "postern.test", attemptLogRetention: retention }, "/tmp")
  const pruner = new AttemptPruner({ config: () => config, committer, clock, log: silentLogger() })
  open.push({ close: () => pruner.stop() })
  let seq = 0
  const add = (at: number, n: number) => {
    for (let i = 0; i < n; i++) {
      appendAttempt(db, {
        at, queueId: `Q${++seq}`, recipient: "r@x.test", attempt: 1, destination: "smtp:x.test",
        relay: null, outcome: "sent", dsn: "2.0.0", reply: "ok", durationMs: 1,
      })
    }
  }
  const ats = () => (db.prepare("SELECT at FROM attempts ORDER BY id").all() as Array<{ at: number }>).map((r) => r.at)
  /** Lets the committer run what is queued, and the pruner see the result. */
  const settle = async () => {
    for (let i = 0; i < 5; i++) {
      committer.flush()
      await new Promise((r) => setImmediate(r))
    }
  }
  return { db, clock, pruner, add, ats, settle, committer }
}

test("rows past the retention are deleted in batches, on the clock; newer rows stay", async () => {
  const { clock, pruner, add, ats, settle, committer } = setup("7d")
  const now = clock.now()
  const firstCutoff = now + PRUNE_FIRST_MS - 7 * DAY // what the first sweep deletes: rows that ended before this
  add(1 * DAY, 1_200) // old
  add(firstCutoff - 1, 5) // just past the retention
  add(firstCutoff + 5 * 60_000, 100) // inside it at the first sweep, past it at the second
  add(now - 1 * DAY, 50)
  pruner.start()

  clock.advance(PRUNE_FIRST_MS - 1)
  await settle()
  expect(ats()).toHaveLength(1_355) // nothing before the first sweep
  clock.advance(1)
  await settle()
  expect(ats()).toHaveLength(1_355 - PRUNE_BATCH) // one batch, one transaction
  clock.advance(PRUNE_PAUSE_MS)
  await settle()
  expect(ats()).toHaveLength(1_355 - 2 * PRUNE_BATCH)
  clock.advance(PRUNE_PAUSE_MS)
  await settle()
  expect(ats()).toHaveLength(150) // the last, partial batch ends the sweep
  expect(ats().every((at) => at >= firstCutoff)).toBe(true)
  expect(committer.stats().transactions).toBe(3)

  // The next sweep, 10 minutes on: the 100 rows that have aged out by then go too.
  clock.advance(PRUNE_EVERY_MS - 1)
  await settle()
  expect(ats()).toHaveLength(150)
  clock.advance(1)
  await settle()
  expect(ats()).toHaveLength(50)
  expect(ats().every((at) => at === now - DAY)).toBe(true)
})

test("retention 0 keeps every row and arms no timer", async () => {
  const { clock, pruner, add, ats, settle } = setup(0)
  add(0, 10)
  pruner.start()
  expect(clock.pendingTimers()).toBe(0)
  clock.advance(365 * DAY)
  await settle()
  expect(ats()).toHaveLength(10)
})

test("the default is 7 days", () => {
  const config = decodeConfig({ hostname: "postern.test" }, "/tmp")
  expect(config.attemptLogRetention).toBe(7 * DAY)
})
