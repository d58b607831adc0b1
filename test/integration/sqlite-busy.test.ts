// SQLITE_BUSY (issue 5): another connection holds the queue database's write lock (a second
// better-sqlite3 connection in BEGIN IMMEDIATE, as an operator's sqlite3 shell or a backup tool would).
// Postern keeps serving: the event loop is never blocked waiting for the lock, a client whose message
// cannot be committed within the busy timeout (5 s) gets 451 4.3.0, no acknowledged message is lost, the
// bookkeeping of deliveries made meanwhile is retried, and mail flows again by itself once the lock goes.
import Database from "better-sqlite3"
import { join } from "node:path"
import { afterEach, expect, test } from "vitest"
import { DEFAULT_GROUP_COMMIT } from "../../src/store/group-commit.js"
import { QUEUE_DB } from "../../src/store/open.js"
import { inject, makeMessage } from "../support/inject.js"
import { captureLog, startPostern, waitFor, type TestPostern } from "../support/postern.js"
import { startReceiver, type Receiver } from "../support/receiver.js"

let postern: TestPostern | undefined
let receiver: Receiver | undefined
let other: Database.Database | undefined
afterEach(async () => {
  if (other?.inTransaction) other.exec("ROLLBACK")
  other?.close()
  other = undefined
  await postern?.close()
  postern = undefined
  await receiver?.close()
  receiver = undefined
})

const BUSY_TIMEOUT_MS = DEFAULT_GROUP_COMMIT.busyTimeoutMs!

/** The longest the event loop went without running a 10 ms timer, from start() to stop(). */
const loopWatch = () => {
  let worst = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    worst = Math.max(worst, now - last)
    last = now
  }, 10)
  return { stop: () => (clearInterval(timer), worst) }
}

const subjectsAt = (r: Receiver): Array<string> => r.messages.map((m) => /^Subject: (.*)\r?$/m.exec(m.body.toString("latin1"))?.[1] ?? "?")

test("while another connection holds the write lock: 451 4.3.0 within the busy timeout, nothing acknowledged lost, mail flows again by itself", async () => {
  receiver = await startReceiver()
  const rcv = receiver
  // The delivery of "held" waits at a gate, so its outcome is written while the lock is held.
  let reachedGate = false
  let openGate: () => void = () => undefined
  const gate = new Promise<void>((resolve) => (openGate = resolve))
  const exits: Array<unknown> = []
  const { log, lines } = captureLog("warn")
  postern = await startPostern(
    { transports: { "*": `smtp:[127.0.0.1]:${rcv.port}` }, minimalBackoffTime: "1s", maximalBackoffTime: "1s" },
    {
      log,
      exit: (_code, reason) => void exits.push(reason),
      deliveryFault: async (request) => {
        if (request.message.sender !== "held@src.test") return
        reachedGate = true
        await gate
      },
    },
  )
  const p = postern
  const send = (from: string, subject: string) =>
    inject(p.port, { from, to: ["rcpt@dst.test"], body: makeMessage({ from, to: "rcpt@dst.test", subject }), replyTimeoutMs: 3 * BUSY_TIMEOUT_MS })

  expect((await send("a@src.test", "before")).ok).toBe(true)
  const held = await send("held@src.test", "held")
  expect(held.ok).toBe(true) // acknowledged before the lock: it must not be lost
  await waitFor("the held delivery at its gate", () => reachedGate)
  const recipientsLeft = () => (p.queue.db.prepare("SELECT count(*) AS n FROM recipients").get() as { n: number }).n
  await waitFor("the first message's delivery recorded", () => recipientsLeft() === 1)

  other = new Database(join(p.dataDir, QUEUE_DB))
  other.exec("BEGIN IMMEDIATE")
  const watch = loopWatch()
  openGate() // "held" is delivered now; recording its outcome meets the lock

  // A message while the lock is held the whole busy timeout: refused with a temporary error, in time.
  const t0 = performance.now()
  const refused = await send("b@src.test", "while-locked")
  const took = performance.now() - t0
  expect(refused.ok).toBe(false)
  expect(refused.response).toMatch(/^451 4\.3\.0 Error: queue file write error/)
  expect(took).toBeGreaterThanOrEqual(BUSY_TIMEOUT_MS - 50)
  expect(took).toBeLessThan(BUSY_TIMEOUT_MS + 1500)
  expect(watch.stop()).toBeLessThan(250) // never blocked waiting for the lock
  await rcv.waitForMessages(2)
  // The delivery happened; its bookkeeping could not be written yet: the recipient is still held.
  expect(recipientsLeft()).toBe(1)
  expect(p.system.committer.stats().lockOuts).toBeGreaterThan(0)

  // A message sent while locked, for less than the busy timeout, waits and is acknowledged after.
  const waiting = send("c@src.test", "waited")
  await new Promise((r) => setTimeout(r, 1000))
  other.exec("ROLLBACK")
  const waited = await waiting
  expect(waited.ok).toBe(true)

  // Mail flows again by itself: no restart, no operator.
  expect((await send("d@src.test", "after")).ok).toBe(true)
  await rcv.waitForMessages(4, 10_000)
  await waitFor("the queue to empty", () => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0, 10_000)
  // Each acknowledged message exactly once ("held" was not sent again: its outcome was written late, not lost).
  expect(subjectsAt(rcv).sort()).toEqual(["after", "before", "held", "waited"])
  const outcomes = p.queue.db.prepare("SELECT queue_id, outcome FROM attempts ORDER BY id").all() as Array<{ queue_id: string; outcome: string }>
  expect(outcomes.filter((a) => a.queue_id === held.queueId)).toEqual([{ queue_id: held.queueId, outcome: "sent" }])
  expect(outcomes.every((a) => a.outcome === "sent")).toBe(true)
  expect(exits).toEqual([])
  // What was logged: the refused commit and the bookkeeping to be written again, nothing fatal.
  expect(lines.some((l) => l["msg"] === "could not queue the message" && (l["err"] as { message: string }).message.startsWith("store busy"))).toBe(true)
  expect(lines.some((l) => l["queue_id"] === held.queueId && String(l["msg"]).startsWith("could not record delivery outcomes; they will be written again"))).toBe(true)
  expect(lines.every((l) => (l["level"] as number) < 60)).toBe(true)
  for (const l of lines) console.log(`[sqlite-busy] ${l["level"]} ${JSON.stringify({ actor: l["actor"], queue_id: l["queue_id"], msg: l["msg"], err: (l["err"] as { message?: string } | undefined)?.message })}`)
}, 30_000)
