// The destination machine (Postfix's qmgr_queue) alone on a simulated clock: window, saturation, death
// after failed cohorts, revival after minimalBackoff or on flush, and a persisted-snapshot round trip.
import { describe, expect, it } from "vitest"
import { SimulatedClock, createActor, type SnapshotFrom } from "xstate"
import { destinationMachine, type DestinationInput } from "../../../src/machines/destination.js"
import { parseFeedback, type Feedback, type WindowLimits } from "../../../src/machines/feedback.js"

const fb = (text: string): Feedback => parseFeedback(text) ?? (() => { throw new Error(text) })()

const DEAD_TIME = 300_000
const LIMITS: WindowLimits = { initial: 5, limit: 20, positive: fb("1"), negative: fb("1"), cohortLimit: 1 }
const input = (over: Partial<WindowLimits> = {}): DestinationInput => ({
  name: "smtp:example.net",
  limits: { ...LIMITS, ...over },
  deadTime: DEAD_TIME,
})

type Snap = SnapshotFrom<typeof destinationMachine>

const start = (inp: DestinationInput = input(), snapshot?: Snap) => {
  const clock = new SimulatedClock()
  const errors: Array<unknown> = []
  const actor = createActor(destinationMachine, snapshot === undefined ? { clock, input: inp } : { clock, input: inp, snapshot })
  actor.subscribe({ error: (e) => errors.push(e) })
  actor.start()
  const started = (n = 1) => {
    for (let i = 0; i < n; i++) actor.send({ type: "delivery.started" })
  }
  const ok = () => actor.send({ type: "delivery.completed", siteFailure: false, reason: "250 2.0.0 ok" })
  const siteFail = (reason = "connect to mx.example.net[192.0.2.1]:25: Connection refused") =>
    actor.send({ type: "delivery.completed", siteFailure: true, reason })
  const snap = () => actor.getSnapshot()
  return { clock, actor, errors, started, ok, siteFail, snap }
}

/** Three site failures in a row from window 5 with three deliveries in flight: 5 → 3 → 2 → dead. */
const killWithBusy = (d: ReturnType<typeof start>, inFlight: number) => {
  d.started(inFlight)
  d.siteFail("reason 1")
  d.siteFail("reason 2")
  d.siteFail("connect to mx.example.net[192.0.2.1]:25: Connection refused")
}

describe("destination machine", () => {
  it.each([
    [5, 20, 5],
    [5, 2, 2],
    [5, 0, 5],
  ])("starts ready with window min(initial %i, limit %i) = %i", (initial, limit, window) => {
    const d = start(input({ initial, limit }))
    expect(d.snap().value).toBe("ready")
    expect(d.snap().context).toMatchObject({ window, busy: 0, deadReason: null, success: 0, failure: 0, failCohorts: 0 })
  })

  it("delivery.started up to the window → saturated", () => {
    const d = start()
    d.started(4)
    expect(d.snap().value).toBe("ready")
    expect(d.snap().context.busy).toBe(4)
    d.started()
    expect(d.snap().value).toBe("saturated")
    expect(d.snap().context.busy).toBe(5)
  })

  it("a window of 2 (limit) saturates after 2 starts", () => {
    const d = start(input({ limit: 2 }))
    d.started(2)
    expect(d.snap().value).toBe("saturated")
  })

  it("a completion while saturated goes back to ready (and, with busy = window, grows the window)", () => {
    const d = start()
    d.started(5)
    d.ok()
    expect(d.snap().value).toBe("ready")
    expect(d.snap().context).toMatchObject({ busy: 4, window: 6 })
  })

  it("a completion with the safety clause failing leaves the window alone", () => {
    const d = start()
    d.started(1)
    d.ok() // busy 1 at feedback time: 5 < 1 + 5 → grows to 6
    d.started(1)
    d.ok() // busy 1: 6 < 6 is false → stays 6
    expect(d.snap().context).toMatchObject({ busy: 0, window: 6 })
    expect(d.snap().value).toBe("ready")
  })

  it("a site failure that shrinks the window below busy stays saturated", () => {
    const d = start()
    d.started(5)
    d.siteFail() // window 3, busy 4
    expect(d.snap().context).toMatchObject({ window: 3, busy: 4 })
    expect(d.snap().value).toBe("saturated")
  })

  it("three site failures → dead, with the last reason as deadReason", () => {
    const d = start()
    killWithBusy(d, 3)
    const s = d.snap()
    expect(s.value).toBe("dead")
    expect(s.context.window).toBe(0)
    expect(s.context.busy).toBe(0)
    expect(s.context.deadReason).toBe("connect to mx.example.net[192.0.2.1]:25: Connection refused")
  })

  it("dead revives after minimalBackoff (deadTime) on the simulated clock, not a millisecond before", () => {
    const d = start()
    killWithBusy(d, 3)
    d.clock.increment(DEAD_TIME - 1)
    expect(d.snap().value).toBe("dead")
    d.clock.increment(1)
    expect(d.snap().value).toBe("ready")
    expect(d.snap().context).toMatchObject({ window: 5, busy: 0, deadReason: null, failCohorts: 0 })
  })

  it("destination.flush revives at once, and the dead timer no longer matters", () => {
    const d = start()
    killWithBusy(d, 3)
    d.clock.increment(1000)
    d.actor.send({ type: "destination.flush" })
    expect(d.snap().value).toBe("ready")
    expect(d.snap().context).toMatchObject({ window: 5, deadReason: null })
    // Dies again right away; the first death's timer (which would have fired at 300 000) was cancelled,
    // so the new death lasts a full deadTime from now.
    killWithBusy(d, 3)
    expect(d.snap().value).toBe("dead")
    d.clock.increment(DEAD_TIME - 1)
    expect(d.snap().value).toBe("dead")
    d.clock.increment(1)
    expect(d.snap().value).toBe("ready")
  })

  it("flush is ignored when the destination is alive", () => {
    const d = start()
    d.started(2)
    const before = d.snap().context
    d.actor.send({ type: "destination.flush" })
    expect(d.snap().value).toBe("ready")
    expect(d.snap().context).toEqual(before)
  })

  it("site-failure completions while dead only decrement busy", () => {
    const d = start()
    killWithBusy(d, 5) // dies with 2 still in flight
    expect(d.snap().value).toBe("dead")
    expect(d.snap().context.busy).toBe(2)
    d.siteFail("another failure")
    expect(d.snap().value).toBe("dead")
    expect(d.snap().context).toMatchObject({ busy: 1, window: 0 })
    // The reason stays the one that killed it (Postfix does not throttle a queue that is not ready).
    expect(d.snap().context.deadReason).toBe("connect to mx.example.net[192.0.2.1]:25: Connection refused")
    d.siteFail("another failure")
    d.siteFail("spurious") // never below 0
    expect(d.snap().context.busy).toBe(0)
    expect(d.snap().value).toBe("dead")
  })

  it("delivery.started is ignored while dead (no connection is tried)", () => {
    const d = start()
    killWithBusy(d, 3)
    d.started(2)
    expect(d.snap().context.busy).toBe(0)
    expect(d.snap().value).toBe("dead")
  })

  it("revival with deliveries still in flight sets the window to busy (Postfix: 'anyone's guess')", () => {
    const d = start()
    killWithBusy(d, 5) // busy 2 at death
    d.actor.send({ type: "destination.flush" })
    expect(d.snap().context).toMatchObject({ window: 2, busy: 2 })
    expect(d.snap().value).toBe("saturated")
    d.ok()
    expect(d.snap().value).toBe("ready")
  })

  // Postfix qmgr_deliver.c: a completion with no hop status always calls qmgr_queue_unthrottle(), which on
  // a dead queue cancels the timer and revives it (window = busy, this delivery included). The machine's
  // `dead` state only decrements busy, so a dead site that is in fact delivering stays dead for deadTime.
  it("a positive completion while dead revives the destination at once (Postfix qmgr_queue_unthrottle)", () => {
    const d = start()
    killWithBusy(d, 5) // busy 2 at death
    d.ok()
    const s = d.snap()
    expect(s.value).toBe("ready")
    expect(s.context).toMatchObject({ window: 2, busy: 1, deadReason: null, failCohorts: 0 })
  })

  it("never fails (no error status) across a long mixed run", () => {
    const d = start()
    for (let round = 0; round < 20; round++) {
      d.started(3)
      d.siteFail()
      d.ok()
      d.siteFail()
      d.clock.increment(DEAD_TIME)
      d.actor.send({ type: "destination.flush" })
    }
    expect(d.errors).toEqual([])
    expect(d.snap().status).toBe("active")
  })

  describe("persisted snapshot round trip", () => {
    it("a ready destination restored from JSON behaves the same for subsequent events", () => {
      const a = start()
      a.started(5)
      a.ok() // window 6, busy 4
      const saved = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot())) as Snap
      const b = start(input(), saved)
      expect(b.snap().value).toBe(a.snap().value)
      expect(b.snap().context).toEqual(a.snap().context)
      for (const d of [a, b]) {
        d.started(2)
        d.siteFail()
        d.ok()
      }
      expect(b.snap().value).toBe(a.snap().value)
      expect(b.snap().context).toEqual(a.snap().context)
      a.actor.stop()
      b.actor.stop()
    })

    it("a dead destination restored from a snapshot does not revive by itself (after-timers are not restored), only on flush", () => {
      const a = start()
      killWithBusy(a, 3)
      a.clock.increment(1000)
      const saved = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot())) as Snap
      a.actor.stop()

      const b = start(input(), saved)
      expect(b.snap().value).toBe("dead")
      expect(b.snap().context.deadReason).toBe("connect to mx.example.net[192.0.2.1]:25: Connection refused")
      b.clock.increment(DEAD_TIME)
      expect(b.snap().value).toBe("dead")
      b.clock.increment(10 * DEAD_TIME)
      expect(b.snap().value).toBe("dead")
      b.actor.send({ type: "destination.flush" })
      expect(b.snap().value).toBe("ready")
      expect(b.snap().context).toMatchObject({ window: 5, busy: 0, deadReason: null })
      expect(b.errors).toEqual([])
    })
  })
})
