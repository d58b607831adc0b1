// The supervisor host (src/actors/supervisor.ts) on virtual time: a failing child is restarted after a
// growing backoff, each failure logged once with the child, its parent and the restart count; past the
// restart intensity the failure escalates to the parent.
import { expect, test } from "vitest"
import { supervise } from "../../src/actors/supervisor.js"
import { ManualClock } from "../../src/runtime/clock.js"
import { pino } from "pino"

const capture = () => {
  const lines: Array<Record<string, unknown>> = []
  const log = pino({ level: "info" }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) })
  return { log, lines }
}

test("restarts after backoff, logs each failure once, escalates past the intensity", () => {
  const clock = new ManualClock(1_000_000)
  const { log, lines } = capture()
  let starts = 0
  let fail: ((e: unknown, ctx?: Record<string, unknown>) => void) | null = null
  const escalated: Array<unknown> = []
  const s = supervise(
    {
      id: "destination/smtp:example.test",
      parent: "qmgr",
      policy: { maxRestarts: 2, withinMs: 60_000, backoffMs: 100, maxBackoffMs: 1_000 },
      start: (f) => {
        starts++
        fail = f
      },
      escalate: (e) => escalated.push(e),
    },
    clock,
    log,
  )
  expect(starts).toBe(1)
  fail!(new Error("boom 1"), { queue_ids: ["Q1"] })
  fail!(new Error("stale report from the same child"), {})
  expect(starts).toBe(1)
  clock.advance(99)
  expect(starts).toBe(1)
  clock.advance(1)
  expect(starts).toBe(2)
  fail!(new Error("boom 2"))
  clock.advance(199)
  expect(starts).toBe(2)
  clock.advance(1)
  expect(starts).toBe(3)
  expect(s.restarts()).toBe(2)
  expect(escalated).toEqual([])
  fail!(new Error("boom 3"))
  expect(escalated).toHaveLength(1)
  expect((escalated[0] as Error).message).toBe("boom 3")
  clock.advance(10_000)
  expect(starts).toBe(3)
  const failures = lines.filter((l) => String(l["msg"]).startsWith("destination/smtp:example.test failed: "))
  expect(failures).toHaveLength(3)
  expect(failures.map((f) => String(f["msg"]).split(": ")[1])).toEqual([
    "restarting in 100 ms",
    "restarting in 200 ms",
    "restart intensity exceeded (2 in 60s); escalating to qmgr",
  ])
  expect(failures[0]).toMatchObject({ actor: "destination/smtp:example.test", parent: "qmgr", restarts: 0, queue_ids: ["Q1"] })
  expect(failures[1]).toMatchObject({ restarts: 1, queue_ids: [] })
  expect(failures[2]).toMatchObject({ restarts: 2 })
})
