// The message machine (Postfix's qmgr_message + qmgr_active_done) alone on a simulated clock: it waits for
// every in-flight recipient, then decides done / deferred with clamp(age, minimal, maximal) / expired.
import { describe, expect, it } from "vitest"
import { SimulatedClock, createActor, type SnapshotFrom } from "xstate"
import {
  jittered,
  backoffDelay,
  isExpired,
  messageMachine,
  type MessageEvent,
  type MessageInput,
  type RetryPolicy,
} from "../../../src/machines/message.js"

const S = 1000
const DAY = 24 * 3600 * S

/** Postfix's defaults for the backoff; the two lifetimes differ so the null-sender rule is visible. */
const POLICY: RetryPolicy = {
  minimalBackoffTime: 300 * S,
  maximalBackoffTime: 4000 * S,
  maximalQueueLifetime: 5 * DAY,
  bounceQueueLifetime: 1 * DAY,
  backoffJitter: 0, // Postfix has no jitter; its own tests are below
}
const ARRIVAL = Date.UTC(2024, 0, 15, 9, 30, 0)

const input = (over: Partial<MessageInput> = {}): MessageInput => ({
  queueId: "4XyZ01",
  arrivalTime: ARRIVAL,
  nullSender: false,
  recipientIds: [1, 2, 3],
  policy: POLICY,
  ...over,
})

type Snap = SnapshotFrom<typeof messageMachine>

const start = (inp: MessageInput = input(), snapshot?: Snap) => {
  const clock = new SimulatedClock()
  clock.set(ARRIVAL)
  const errors: Array<unknown> = []
  const actor = createActor(messageMachine, snapshot === undefined ? { clock, input: inp } : { clock, input: inp, snapshot })
  actor.subscribe({ error: (e) => errors.push(e) })
  actor.start()
  const report = (kind: "sent" | "deferred" | "bounced", recipientId: number, now = clock.now()) =>
    actor.send({ type: "recipients.reported", outcomes: [{ recipientId, outcome: kind }], now } satisfies MessageEvent)
  return { clock, actor, errors, report, snap: () => actor.getSnapshot() }
}

describe("backoffDelay: Postfix's clamp(age, minimal_backoff_time, maximal_backoff_time)", () => {
  it.each([
    [0, 300],
    [1, 300],
    [300, 300],
    [700, 700],
    [4000, 4000],
    [10000, 4000],
  ])("age %i s → %i s", (ageSeconds, delaySeconds) => {
    expect(backoffDelay(ageSeconds * S, POLICY)).toBe(delaySeconds * S)
  })
})

describe("isExpired", () => {
  it.each([
    [false, 5 * DAY - 1, false],
    [false, 5 * DAY, true],
    [true, 1 * DAY - 1, false],
    [true, 1 * DAY, true],
    [false, 1 * DAY, false],
  ])("nullSender %s at age %i ms → %s", (nullSender, age, expired) => {
    expect(isExpired(ARRIVAL + age, ARRIVAL, nullSender, POLICY)).toBe(expired)
  })
})

describe("message machine", () => {
  it("stays active until every recipient reports; all sent → final with output {kind: done}", () => {
    const m = start()
    m.report("sent", 1)
    m.report("sent", 2)
    expect(m.snap().value).toBe("active")
    expect(m.snap().status).toBe("active")
    expect(m.snap().context.inFlight).toEqual([3])
    m.report("sent", 3)
    expect(m.snap().value).toBe("settled")
    expect(m.snap().status).toBe("done")
    expect(m.snap().output).toEqual({ kind: "done" })
    expect(m.errors).toEqual([])
  })

  it("bounced recipients do not hold the message: sent + bounced → done", () => {
    const m = start()
    m.report("bounced", 2)
    m.report("sent", 1)
    m.report("bounced", 3)
    expect(m.snap().output).toEqual({ kind: "done" })
  })

  it.each([
    ["just arrived", 0, 300],
    ["700 s old", 700, 700],
    ["10 000 s old", 10000, 4000],
  ])("one deferred (%s) → deferred with nextAttemptAt = now + clamp(age)", (_label, ageSeconds, delaySeconds) => {
    const m = start()
    m.clock.set(ARRIVAL + ageSeconds * S)
    m.report("sent", 1)
    m.report("deferred", 2)
    m.report("bounced", 3)
    const now = ARRIVAL + ageSeconds * S
    expect(m.snap().status).toBe("done")
    expect(m.snap().output).toEqual({ kind: "deferred", nextAttemptAt: now + delaySeconds * S })
    expect(m.snap().context.deferred).toEqual([2])
  })

  it("the decision uses the `now` of the LAST report", () => {
    const m = start()
    m.report("deferred", 1, ARRIVAL + 100 * S)
    m.report("deferred", 2, ARRIVAL + 200 * S)
    m.report("sent", 3, ARRIVAL + 1000 * S)
    expect(m.snap().output).toEqual({ kind: "deferred", nextAttemptAt: ARRIVAL + 2000 * S })
    expect(m.snap().context.deferred).toEqual([1, 2])
  })

  describe("expiry: maximalQueueLifetime, or bounceQueueLifetime for the null sender", () => {
    it.each([
      // nullSender, age at the last report, expected kind
      [false, 5 * DAY - 1, "deferred"],
      [false, 5 * DAY, "expired"],
      [false, 1 * DAY, "deferred"], // 1 day is the null sender's lifetime, not this one's
      [true, 1 * DAY - 1, "deferred"],
      [true, 1 * DAY, "expired"],
      [true, 5 * DAY, "expired"],
    ] as const)("nullSender %s, age %i ms → %s", (nullSender, age, kind) => {
      const m = start(input({ nullSender, recipientIds: [7] }))
      m.report("deferred", 7, ARRIVAL + age)
      const out = m.snap().output
      expect(out?.kind).toBe(kind)
      if (out?.kind === "deferred") expect(out.nextAttemptAt).toBe(ARRIVAL + age + POLICY.maximalBackoffTime)
    })

    it("a message past its lifetime whose recipients were all delivered is done, not expired", () => {
      const m = start(input({ recipientIds: [7] }))
      m.report("sent", 7, ARRIVAL + 10 * DAY)
      expect(m.snap().output).toEqual({ kind: "done" })
    })
  })

  it("events for unknown recipient ids are ignored", () => {
    const m = start()
    const before = m.snap()
    m.report("sent", 99)
    m.report("deferred", 42)
    m.report("bounced", -1)
    expect(m.snap().value).toBe("active")
    expect(m.snap().context).toEqual(before.context)
  })

  it("a second report for an already-reported recipient is ignored", () => {
    const m = start()
    m.report("deferred", 1)
    m.report("sent", 1)
    m.report("deferred", 1)
    expect(m.snap().context.inFlight).toEqual([2, 3])
    expect(m.snap().context.deferred).toEqual([1])
    m.report("sent", 2)
    expect(m.snap().value).toBe("active")
    m.report("sent", 3)
    expect(m.snap().output?.kind).toBe("deferred")
  })

  it("reaches the final state only when the last in-flight recipient reports, in any order", () => {
    const m = start(input({ recipientIds: [10, 20, 30, 40] }))
    for (const id of [30, 10, 40]) {
      m.report("sent", id)
      expect(m.snap().status).toBe("active")
    }
    m.report("sent", 20)
    expect(m.snap().status).toBe("done")
  })

  it("a single-recipient message settles on its only report", () => {
    const m = start(input({ recipientIds: [5] }))
    m.report("bounced", 5)
    expect(m.snap().output).toEqual({ kind: "done" })
  })

  it("the simulated clock alone never settles a message (it has no timers)", () => {
    const m = start()
    m.clock.increment(30 * DAY)
    expect(m.snap().value).toBe("active")
  })

  it("persisted snapshot round trip: a half-reported message restored from JSON reaches the same decision", () => {
    const a = start()
    a.report("deferred", 1, ARRIVAL + 700 * S)
    a.report("sent", 2, ARRIVAL + 700 * S)
    const saved = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot())) as Snap
    const b = start(input(), saved)
    expect(b.snap().value).toBe("active")
    expect(b.snap().context).toEqual(a.snap().context)
    // Unknown ids are still ignored after the restore.
    b.report("sent", 99, ARRIVAL + 800 * S)
    expect(b.snap().status).toBe("active")
    for (const m of [a, b]) m.report("bounced", 3, ARRIVAL + 800 * S)
    expect(b.snap().status).toBe("done")
    expect(b.snap().output).toEqual({ kind: "deferred", nextAttemptAt: ARRIVAL + 1600 * S })
    expect(b.snap().output).toEqual(a.snap().output)
  })
})

describe("retry jitter (backoffJitter)", () => {
  it("spreads the delay to delay x (1 +- jitter) by the draw, and 0 keeps Postfix's schedule", () => {
    expect(jittered(600 * S, 0, 0.9)).toBe(600 * S)
    expect(jittered(600 * S, 0.1, 0)).toBe(540 * S)
    expect(jittered(600 * S, 0.1, 0.5)).toBe(600 * S)
    expect(jittered(600 * S, 0.1, 0.999999)).toBe(Math.round(600 * S * (1 + 0.1 * (2 * 0.999999 - 1))))
  })

  it("the deciding event's draw sets the next attempt", () => {
    const m = createActor(messageMachine, { input: input({ recipientIds: [1], policy: { ...POLICY, backoffJitter: 0.2 } }) }).start()
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 1, outcome: "deferred" }], now: ARRIVAL + 1000, draw: 0 })
    const out = m.getSnapshot().output
    expect(out).toEqual({ kind: "deferred", nextAttemptAt: ARRIVAL + 1000 + Math.round(300 * S * 0.8) })
  })
})

describe("recipients read in batches (qmgrMessageRecipientLimit)", () => {
  const read = (m: ReturnType<typeof start>, recipientIds: ReadonlyArray<number>, last: boolean, now = m.clock.now()) =>
    m.actor.send({ type: "recipients.read", recipientIds, last, now })

  it("a finished batch with more in the store waits for the next one and decides nothing", () => {
    const m = start(input({ recipientIds: [1, 2], moreToRead: true }))
    m.report("deferred", 1)
    m.report("sent", 2)
    expect(m.snap().value).toBe("awaitingBatch")
    expect(m.snap().status).toBe("active")
    expect(m.snap().context.decision).toBeNull()
    // outcomes of recipients it does not hold are ignored while it waits
    m.report("sent", 3)
    expect(m.snap().value).toBe("awaitingBatch")
  })

  it("learns each batch's recipients and decides after the last, over every batch's outcomes", () => {
    const m = start(input({ recipientIds: [1, 2], moreToRead: true }))
    m.report("deferred", 1)
    m.report("sent", 2)
    read(m, [3, 4], false)
    expect(m.snap().value).toBe("active")
    expect(m.snap().context.inFlight).toEqual([3, 4])
    m.report("sent", 3)
    m.report("sent", 4)
    expect(m.snap().value).toBe("awaitingBatch")
    read(m, [5], true)
    m.report("sent", 5, ARRIVAL + 700 * S)
    expect(m.snap().status).toBe("done")
    // recipient 1, deferred in the first batch, decides the fate after the last
    expect(m.snap().output).toEqual({ kind: "deferred", nextAttemptAt: ARRIVAL + 1400 * S })
    expect(m.snap().context.deferred).toEqual([1])
  })

  it("an empty read (nothing was left) decides at once", () => {
    const m = start(input({ recipientIds: [1], moreToRead: true }))
    m.report("sent", 1)
    read(m, [], true, ARRIVAL + 10 * S)
    expect(m.snap().output).toEqual({ kind: "done" })
  })

  it("a read before the batch is finished is ignored", () => {
    const m = start(input({ recipientIds: [1, 2], moreToRead: true }))
    read(m, [3], true)
    expect(m.snap().context.inFlight).toEqual([1, 2])
    expect(m.snap().context.moreToRead).toBe(true)
  })

describe("outcomes of one delivery request arrive together", () => {
  it("a request's mixed outcomes settle the message in one event", () => {
    const m = createActor(messageMachine, { input: input({ recipientIds: [1, 2, 3] }) }).start()
    m.send({
      type: "recipients.reported",
      outcomes: [
        { recipientId: 1, outcome: "sent" },
        { recipientId: 2, outcome: "deferred" },
        { recipientId: 3, outcome: "bounced" },
        { recipientId: 99, outcome: "deferred" }, // not in flight: ignored
      ],
      now: ARRIVAL + 1000,
    })
    expect(m.getSnapshot().status).toBe("done")
    expect(m.getSnapshot().context.deferred).toEqual([2])
    expect(m.getSnapshot().output?.kind).toBe("deferred")
  })

  it("a 20,000-recipient batch reported 50 at a time stays cheap (no per-recipient scans of the whole list)", () => {
    const ids = Array.from({ length: 20_000 }, (_, i) => i + 1)
    const m = createActor(messageMachine, { input: input({ recipientIds: ids }) }).start()
    const started = performance.now()
    for (let i = 0; i < ids.length; i += 50) {
      m.send({ type: "recipients.reported", outcomes: ids.slice(i, i + 50).map((recipientId) => ({ recipientId, outcome: "deferred" as const })), now: ARRIVAL + 1000 })
    }
    const ms = performance.now() - started
    expect(m.getSnapshot().status).toBe("done")
    expect(m.getSnapshot().context.deferred).toHaveLength(20_000)
    // ~400 events over a 20,000-long list: well under a second even on a slow, busy machine (one event per
    // recipient took ~5 s of CPU here).
    expect(ms).toBeLessThan(3_000)
  })
})
})
