// The supervisor machine (OTP-style restart intensity) alone on a simulated clock: exponential backoff,
// escalation past maxRestarts within withinMs, old failures forgotten, and a persisted-snapshot round trip.
import { describe, expect, it } from "vitest"
import { SimulatedClock, createActor, type SnapshotFrom } from "xstate"
import { restartBackoff, supervisorMachine, type RestartPolicy } from "../../../src/machines/supervisor.js"

const POLICY: RestartPolicy = { maxRestarts: 3, withinMs: 60_000, backoffMs: 1000, maxBackoffMs: 5000 }

type Snap = SnapshotFrom<typeof supervisorMachine>

const start = (policy: RestartPolicy = POLICY, snapshot?: Snap) => {
  const clock = new SimulatedClock()
  const errors: Array<unknown> = []
  const inp = { child: "qmgr", policy }
  const actor = createActor(supervisorMachine, snapshot === undefined ? { clock, input: inp } : { clock, input: inp, snapshot })
  actor.subscribe({ error: (e) => errors.push(e) })
  actor.start()
  const fail = () => actor.send({ type: "child.failed", now: clock.now() })
  return { clock, actor, errors, fail, snap: () => actor.getSnapshot() }
}

/** Fails the child and waits exactly its backoff; asserts it restarts then and not 1 ms earlier. */
const failAndRestart = (s: ReturnType<typeof start>, expectedBackoff: number) => {
  s.fail()
  expect(s.snap().value).toBe("restarting")
  s.clock.increment(expectedBackoff - 1)
  expect(s.snap().value).toBe("restarting")
  s.clock.increment(1)
  expect(s.snap().value).toBe("running")
}

describe("restartBackoff", () => {
  it.each([
    [0, 1000],
    [1, 1000],
    [2, 2000],
    [3, 4000],
    [4, 5000],
    [10, 5000],
  ])("%i failures in the window → %i ms", (failures, ms) => {
    expect(restartBackoff(POLICY, failures)).toBe(ms)
  })
})

describe("supervisor machine", () => {
  it("starts running with no failures", () => {
    const s = start()
    expect(s.snap().value).toBe("running")
    expect(s.snap().context).toMatchObject({ child: "qmgr", failures: [], restarts: 0 })
  })

  it("a failure within intensity → restarting, then running after the backoff (not a millisecond before)", () => {
    const s = start()
    s.clock.increment(5000)
    failAndRestart(s, 1000)
    expect(s.snap().context.restarts).toBe(1)
    expect(s.snap().context.failures).toEqual([5000])
  })

  it("the backoff is exponential and capped: 1 s, 2 s, 4 s, 5 s, 5 s", () => {
    const s = start({ maxRestarts: 10, withinMs: 3_600_000, backoffMs: 1000, maxBackoffMs: 5000 })
    for (const backoff of [1000, 2000, 4000, 5000, 5000]) failAndRestart(s, backoff)
    expect(s.snap().context.restarts).toBe(5)
  })

  it("the (maxRestarts + 1)-th failure within withinMs → escalated (final)", () => {
    const s = start()
    failAndRestart(s, 1000)
    failAndRestart(s, 2000)
    failAndRestart(s, 4000)
    expect(s.snap().context.restarts).toBe(3)
    s.fail() // the 4th within 60 s (at t = 7 s)
    expect(s.snap().value).toBe("escalated")
    expect(s.snap().status).toBe("done")
    expect(s.snap().context.failures).toHaveLength(4)
    expect(s.errors).toEqual([])
  })

  it("maxRestarts 0 escalates on the first failure", () => {
    const s = start({ ...POLICY, maxRestarts: 0 })
    s.fail()
    expect(s.snap().value).toBe("escalated")
  })

  it("failures older than the window do not count", () => {
    const s = start()
    failAndRestart(s, 1000) // t = 0
    failAndRestart(s, 2000) // t = 1 s
    failAndRestart(s, 4000) // t = 3 s
    // Now t = 7 s. Wait until the first two failures are exactly withinMs old (a failure withinMs
    // old is outside the window): only the one at 3 s still counts.
    s.clock.set(61_000)
    s.fail()
    expect(s.snap().value).toBe("restarting")
    expect(s.snap().context.failures).toEqual([3000, 61_000])
    // Two failures in the window → the backoff is back to 2 s.
    s.clock.increment(1999)
    expect(s.snap().value).toBe("restarting")
    s.clock.increment(1)
    expect(s.snap().value).toBe("running")
    // t = 63 s: the failure at 3 s has now aged out too, so this is the 2nd in the window (2 s backoff),
    // the next one the 3rd (4 s) and the one after that the 4th: escalated.
    failAndRestart(s, 2000)
    expect(s.snap().context.failures).toEqual([61_000, 63_000])
    failAndRestart(s, 4000)
    s.fail()
    expect(s.snap().value).toBe("escalated")
  })

  it("a failure 1 ms inside the window still counts", () => {
    const s = start()
    failAndRestart(s, 1000) // t = 0
    failAndRestart(s, 2000) // t = 1 s
    failAndRestart(s, 4000) // t = 3 s
    s.clock.set(59_999)
    s.fail() // all three still inside: 4th → escalated
    expect(s.snap().value).toBe("escalated")
  })

  it("a child.failed while restarting is recorded but does not reset the pending restart", () => {
    const s = start({ ...POLICY, maxRestarts: 5 })
    s.fail()
    s.clock.increment(500)
    s.fail()
    expect(s.snap().value).toBe("restarting")
    expect(s.snap().context.failures).toEqual([0, 500])
    s.clock.increment(500) // the first backoff (1 s from t = 0) still fires
    expect(s.snap().value).toBe("running")
  })

  describe("persisted snapshot round trip", () => {
    it("a running supervisor restored from JSON keeps its failure history: the same failure escalates", () => {
      const a = start()
      failAndRestart(a, 1000)
      failAndRestart(a, 2000)
      const saved = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot())) as Snap
      const b = start(POLICY, saved)
      b.clock.set(a.clock.now())
      expect(b.snap().value).toBe("running")
      expect(b.snap().context).toEqual(a.snap().context)
      for (const s of [a, b]) failAndRestart(s, 4000)
      for (const s of [a, b]) s.fail()
      expect(b.snap().value).toBe("escalated")
      expect(b.snap().context).toEqual(a.snap().context)
    })

    it("a restarting supervisor restored from a snapshot does not restart by itself (after-timers are not restored)", () => {
      const a = start()
      a.fail()
      const saved = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot())) as Snap
      a.actor.stop()
      const b = start(POLICY, saved)
      expect(b.snap().value).toBe("restarting")
      b.clock.increment(POLICY.maxBackoffMs * 100)
      expect(b.snap().value).toBe("restarting")
      expect(b.snap().context.restarts).toBe(0)
      expect(b.errors).toEqual([])
    })
  })
})
