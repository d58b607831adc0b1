// Engine faults (issue 5): an exception thrown inside each kind of actor, injected with the test-only
// fault hooks (src/actors/fault-hooks.ts), and what the supervision table (src/actors/system.ts) says
// must then happen, happens. Each failure is logged exactly once with the actor's id, its parent, the
// queue ids it held and its restart count. A real Postern on 127.0.0.1 relays to a real receiver.
import { afterEach, describe, expect, test } from "vitest"
import type { FaultHooks } from "../../src/actors/fault-hooks.js"
import { cleanupChildren, startPosternChild, tempDir } from "../support/child.js"
import { inject, makeMessage, type InjectResult } from "../support/inject.js"
import { captureLog, startPostern, waitFor, type TestPostern } from "../support/postern.js"
import { startReceiver, type Receiver } from "../support/receiver.js"

const FAST = { minimalBackoffTime: "1s", maximalBackoffTime: "1s" } as const

let postern: TestPostern | undefined
const receivers: Array<Receiver> = []
afterEach(async () => {
  await postern?.close()
  postern = undefined
  for (const r of receivers.splice(0)) await r.close()
  await cleanupChildren()
})

const receiver = async (script?: Parameters<typeof startReceiver>[0]): Promise<Receiver> => {
  const r = await startReceiver(script)
  receivers.push(r)
  return r
}

const relayTo = (r: Receiver): Record<string, unknown> => ({ transports: { "*": `smtp:[127.0.0.1]:${r.port}` }, ...FAST })

/** Starts Postern with the hooks and a captured log; escalations to the root are recorded, not fatal. */
const start = async (config: Record<string, unknown>, faultHooks: FaultHooks) => {
  const { log, lines } = captureLog()
  const exits: Array<{ code: number; reason: unknown }> = []
  postern = await startPostern(config, { faultHooks, log, exit: (code, reason) => void exits.push({ code, reason }) })
  return { p: postern, lines, exits }
}

const send = (p: TestPostern, from: string, to: ReadonlyArray<string>, subject = "engine fault"): Promise<InjectResult> =>
  inject(p.port, { from, to, body: makeMessage({ from, to: to[0]!, subject }) })

const failuresOf = (lines: ReadonlyArray<Record<string, unknown>>, actorPrefix: string) =>
  lines.filter((l) => l["level"] === 50 && typeof l["actor"] === "string" && (l["actor"] as string).startsWith(actorPrefix))

const count = (p: TestPostern, sql: string): number => (p.queue.db.prepare(sql).get() as { n: number }).n
const queueEmpty = (p: TestPostern) => count(p, "SELECT count(*) AS n FROM messages") === 0

const attempts = (p: TestPostern) =>
  p.queue.db.prepare("SELECT queue_id, recipient, outcome, dsn, reply FROM attempts ORDER BY id").all() as Array<{
    queue_id: string
    recipient: string
    outcome: string
    dsn: string
    reply: string
  }>

/** How many copies of each recipient the receiver got. */
const copies = (r: Receiver): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const m of r.messages) for (const to of m.to) out[to] = (out[to] ?? 0) + 1
  return out
}

describe("session actor (temporary; parent smtpd)", () => {
  test("its client gets 421 4.3.0 and is disconnected, nothing of it is queued, the listener serves everyone else", async () => {
    const rcv = await receiver()
    const { p, lines } = await start(relayTo(rcv), {
      session: ({ context, event }) => {
        if (event.type === "smtp.data.end" && context.envelope?.sender === "doomed@src.test") throw new Error("injected session actor fault")
      },
    })
    // The doomed client and two others, at the same time.
    const [doomed, a, b] = await Promise.all([
      send(p, "doomed@src.test", ["x@dst.test"]),
      send(p, "a@src.test", ["a@dst.test"]),
      send(p, "b@src.test", ["b@dst.test"]),
    ])
    expect(doomed.code).toBe(421)
    expect(doomed.response).toMatch(/^421 4\.3\.0 postern\.test Server local error/)
    expect(a.ok && b.ok).toBe(true)
    // ...and a new client afterwards.
    expect((await send(p, "c@src.test", ["c@dst.test"])).ok).toBe(true)
    await rcv.waitForMessages(3, 10_000)
    await waitFor("the queue to empty", () => queueEmpty(p))
    expect(rcv.messages.map((m) => m.from).sort()).toEqual(["a@src.test", "b@src.test", "c@src.test"])
    expect(count(p, "SELECT count(*) AS n FROM messages")).toBe(0) // the doomed DATA left nothing behind

    const failures = failuresOf(lines, "session/")
    expect(failures).toHaveLength(1)
    const f = failures[0]!
    expect(f).toMatchObject({ parent: "smtpd", restarts: 0 })
    expect(f["queue_ids"]).toHaveLength(1) // the queue id its DATA was being received under
    expect(String(f["msg"])).toMatch(/^session\/\S+ failed: the client gets 421 4\.3\.0/)
    expect((f["err"] as { message: string }).message).toBe("injected session actor fault")
    console.log(`[engine-faults] session: ${JSON.stringify({ actor: f["actor"], parent: f["parent"], queue_ids: f["queue_ids"], restarts: f["restarts"], msg: f["msg"] })}`)
  })
})

describe("message actor (temporary; parent qmgr)", () => {
  test("its recipients go back to the queue and are delivered later; nothing lost, nothing twice", async () => {
    // b@dst.test is greylisted once, so the message's second outcome is a deferral: the hook fails the
    // message actor as it takes it, before it could decide anything.
    const rcv = await receiver({ rcpt: (address, attempt) => (address === "b@dst.test" && attempt === 1 ? { code: 450, message: "4.2.0 greylisted" } : undefined) })
    let thrown = 0
    const { p, lines } = await start(relayTo(rcv), {
      message: ({ event }) => {
        if (event.type === "recipients.reported" && event.outcomes.some((o) => o.outcome === "deferred") && thrown++ === 0) {
          throw new Error("injected message actor fault")
        }
      },
    })
    const r = await send(p, "s@src.test", ["a@dst.test", "b@dst.test"])
    expect(r.ok).toBe(true)
    await waitFor("both recipients delivered", () => (copies(rcv)["a@dst.test"] ?? 0) >= 1 && (copies(rcv)["b@dst.test"] ?? 0) >= 1, 10_000)
    await waitFor("the queue to empty", () => queueEmpty(p))
    expect(copies(rcv)).toEqual({ "a@dst.test": 1, "b@dst.test": 1 })
    expect(attempts(p).map((a) => `${a.recipient} ${a.outcome}`)).toEqual(["a@dst.test sent", "b@dst.test deferred", "b@dst.test sent"])

    const failures = failuresOf(lines, "message/")
    expect(failures).toHaveLength(1)
    expect(failures[0]).toMatchObject({ actor: `message/${r.queueId}`, parent: "qmgr", queue_ids: [r.queueId], restarts: 0 })
    expect(String(failures[0]!["msg"])).toMatch(/its recipients return to the queue/)
    const f = failures[0]!
    console.log(`[engine-faults] message: ${JSON.stringify({ actor: f["actor"], parent: f["parent"], queue_ids: f["queue_ids"], restarts: f["restarts"], msg: f["msg"] })}`)
  })
})

describe("message actor failure with requests still queued at its destination", () => {
  test("the queued requests never start: every recipient is delivered exactly once, later", async () => {
    // One recipient per transaction and one connection at a time: when the actor fails on the first
    // outcome, three requests of the message still wait in the destination's to-do list.
    const rcv = await receiver()
    let thrown = 0
    const { p } = await start(
      { ...relayTo(rcv), defaultDestinationRecipientLimit: 1, initialDestinationConcurrency: 1, defaultDestinationConcurrencyLimit: 1 },
      {
        message: ({ event }) => {
          if (event.type === "recipients.reported" && thrown++ === 0) throw new Error("injected message actor fault")
        },
      },
    )
    const to = ["a@dst.test", "b@dst.test", "c@dst.test", "d@dst.test"]
    expect((await send(p, "s@src.test", to)).ok).toBe(true)
    await waitFor("all four delivered", () => to.every((a) => (copies(rcv)[a] ?? 0) >= 1), 15_000)
    await waitFor("the queue to empty", () => queueEmpty(p), 15_000)
    await new Promise((r) => setTimeout(r, 300))
    expect(copies(rcv)).toEqual({ "a@dst.test": 1, "b@dst.test": 1, "c@dst.test": 1, "d@dst.test": 1 })
  })
})

describe("destination actor (permanent; parent qmgr; 5 restarts in 60 s, backoff 100 ms doubling)", () => {
  test("restarted with backoff; the delivery it was taking and its queued work are delivered", async () => {
    const rcv = await receiver()
    let thrown = 0
    const { p, lines, exits } = await start(relayTo(rcv), {
      destination: ({ event }) => {
        if (event.type === "delivery.started" && thrown < 2) {
          thrown++
          throw new Error(`injected destination actor fault ${thrown}`)
        }
      },
    })
    const sent = await Promise.all([send(p, "s@src.test", ["one@dst.test"]), send(p, "s@src.test", ["two@dst.test"])])
    expect(sent.every((r) => r.ok)).toBe(true)
    await rcv.waitForMessages(2, 10_000)
    await waitFor("the queue to empty", () => queueEmpty(p))
    expect(copies(rcv)).toEqual({ "one@dst.test": 1, "two@dst.test": 1 })
    expect(attempts(p).map((a) => a.outcome)).toEqual(["sent", "sent"]) // no attempt was lost or deferred
    expect(exits).toEqual([])

    const key = `destination/smtp:[127.0.0.1]:${rcv.port}`
    const failures = failuresOf(lines, "destination/")
    expect(failures.map((f) => f["restarts"])).toEqual([0, 1])
    for (const f of failures) {
      expect(f).toMatchObject({ actor: key, parent: "qmgr" })
      // it held the mail it was about to deliver
      expect((f["queue_ids"] as Array<string>).length).toBeGreaterThan(0)
      expect(sent.map((r) => r.queueId)).toEqual(expect.arrayContaining(f["queue_ids"] as Array<string>))
    }
    expect(failures.map((f) => String(f["msg"]).replace(/^\S+ /, ""))).toEqual(["failed: restarting in 100 ms", "failed: restarting in 200 ms"])
    for (const f of failures) {
      console.log(`[engine-faults] destination: ${JSON.stringify({ actor: f["actor"], parent: f["parent"], queue_ids: f["queue_ids"], restarts: f["restarts"], msg: f["msg"] })}`)
    }
  })

  test("past its restart intensity it escalates: the root is asked to exit 70, and the mail is deferred, not lost", async () => {
    const rcv = await receiver()
    const { p, lines, exits } = await start(relayTo(rcv), {
      destination: ({ event }) => {
        if (event.type === "delivery.started") throw new Error("injected destination actor fault")
      },
    })
    const r = await send(p, "s@src.test", ["x@dst.test"])
    expect(r.ok).toBe(true)
    // backoffs 100 + 200 + 400 + 800 + 1600 ms, then the sixth failure in the window escalates
    await waitFor("the escalation", () => exits.length > 0, 10_000)
    expect(exits[0]!.code).toBe(70)
    const failures = failuresOf(lines, "destination/")
    expect(failures.map((f) => f["restarts"])).toEqual([0, 1, 2, 3, 4, 5])
    expect(String(failures[5]!["msg"])).toMatch(/restart intensity exceeded \(5 in 60s\); escalating to qmgr/)
    expect(failures.every((f) => (f["queue_ids"] as Array<string>)[0] === r.queueId)).toBe(true)
    // Nothing lost: the recipient is back in the queue, deferred, for the restarted process to deliver.
    await waitFor("the recipient deferred", () => count(p, "SELECT count(*) AS n FROM recipients WHERE state = 'pending' AND attempts = 1") === 1)
    expect(attempts(p).map((a) => a.reply)).toEqual(["delivery temporarily suspended: destination actor keeps failing"])
    expect(rcv.messages).toHaveLength(0)
    const f = failures[5]!
    console.log(`[engine-faults] destination escalation: ${JSON.stringify({ actor: f["actor"], parent: f["parent"], queue_ids: f["queue_ids"], restarts: f["restarts"], msg: f["msg"] })}`)
  })

  test("as a real process: the root exits 70, and a restart without the fault delivers the mail", async () => {
    const rcv = await receiver()
    const dataDir = tempDir("postern-escalate-")
    const config = { ...relayTo(rcv), logLevel: "info" }
    const child = await startPosternChild({ config, dataDir, script: { path: "test/support/fault-child.ts", args: ["destination-always-fails"] } })
    const r = await inject(child.port, { from: "s@src.test", to: ["x@dst.test"], body: makeMessage({ from: "s@src.test", to: "x@dst.test" }) })
    expect(r.ok).toBe(true)
    const exit = await Promise.race([child.exited, new Promise<"timeout">((res) => setTimeout(() => res("timeout"), 15_000))])
    expect(exit).toEqual({ code: 70, signal: null })
    const logged = child
      .stdout()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(logged.filter((l) => String(l["actor"]).startsWith("destination/") && l["level"] === 50)).toHaveLength(6)
    const root = logged.find((l) => l["actor"] === "root" && l["level"] === 60)
    expect(root?.["msg"]).toBe("supervision escalated to the root; exiting for a clean restart")
    console.log(`[engine-faults] child root: ${JSON.stringify({ actor: root?.["actor"], msg: root?.["msg"], err: (root?.["err"] as { message?: string })?.message })}`)
    // The process manager's restart, this time without the fault: recovery makes the queue whole.
    const again = await startPosternChild({ config, dataDir })
    await rcv.waitForMessages(1, 10_000)
    expect(copies(rcv)).toEqual({ "x@dst.test": 1 })
    await again.stop()
  })
})

describe("delivery actor (temporary; parent its destination)", () => {
  test("its recipients are deferred and retried; delivered once", async () => {
    const rcv = await receiver()
    let thrown = 0
    const { p, lines } = await start(relayTo(rcv), {
      // fails as it takes the open session, before any mail transaction
      delivery: ({ state, event }) => {
        if (state === "connecting" && event.type === "session.opened" && thrown++ === 0) throw new Error("injected delivery actor fault")
      },
    })
    const r = await send(p, "s@src.test", ["x@dst.test"])
    expect(r.ok).toBe(true)
    await rcv.waitForMessages(1, 10_000)
    await waitFor("the queue to empty", () => queueEmpty(p))
    expect(copies(rcv)).toEqual({ "x@dst.test": 1 })
    expect(attempts(p).map((a) => `${a.outcome} ${a.dsn} ${a.reply}`)).toEqual(["deferred 4.3.0 delivery agent failure", expect.stringMatching(/^sent 2\.0\.0/)])

    const failures = failuresOf(lines, "delivery/")
    expect(failures).toHaveLength(1)
    expect(failures[0]).toMatchObject({ parent: `destination/smtp:[127.0.0.1]:${rcv.port}`, queue_ids: [r.queueId], restarts: 0 })
    expect(String(failures[0]!["actor"])).toMatch(new RegExp(`^delivery/${r.queueId}\\.\\d+$`))
    const f = failures[0]!
    console.log(`[engine-faults] delivery: ${JSON.stringify({ actor: f["actor"], parent: f["parent"], queue_ids: f["queue_ids"], restarts: f["restarts"], msg: f["msg"] })}`)
  })

  test("the queue manager defers a destination whose delivery actors keep dying; other destinations flow", async () => {
    const dying = await receiver()
    const healthy = await receiver()
    const started = new Set<string>()
    const { p, exits } = await start(
      {
        transports: { "dying.test": `smtp:[127.0.0.1]:${dying.port}`, "*": `smtp:[127.0.0.1]:${healthy.port}` },
        minimalBackoffTime: "10m",
        maximalBackoffTime: "10m",
        initialDestinationConcurrency: 1,
      },
      {
        delivery: ({ context, event }) => {
          if (event.type === "session.opened" && context.nexthop === `[127.0.0.1]:${dying.port}`) {
            started.add(context.deliveryId)
            throw new Error("injected: this destination's delivery actors always die")
          }
        },
      },
    )
    const sent = await Promise.all(Array.from({ length: 6 }, (_, i) => send(p, "s@src.test", [`r${i}@dying.test`])))
    expect(sent.every((r) => r.ok)).toBe(true)
    expect((await send(p, "s@src.test", ["ok@fine.test"])).ok).toBe(true)
    await healthy.waitForMessages(1, 10_000)
    await waitFor("6 deferred recipients", () => count(p, "SELECT count(*) AS n FROM recipients WHERE state = 'pending' AND attempts > 0") === 6)
    const key = `smtp:[127.0.0.1]:${dying.port}`
    expect(p.system.qmgr.destinationStates().find((d) => d.key === key)?.state).toBe("dead")
    expect(started.size).toBeLessThan(6) // the dead destination started no more delivery actors
    const replies = attempts(p).filter((a) => a.recipient.endsWith("@dying.test")).map((a) => a.reply)
    expect(replies.filter((r) => r === "delivery temporarily suspended: delivery agent failure")).toHaveLength(6 - started.size)
    expect(dying.messages).toHaveLength(0)
    expect(exits).toEqual([])
  })
})
