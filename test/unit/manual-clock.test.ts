// The virtual clock that tests and the simulator run on: timers fire only when time is advanced, in
// order of due time and then of creation, including timers set by other timers within the same advance.
import { describe, expect, test } from "vitest"
import { ManualClock } from "../../src/runtime/clock.js"
import { SimClock } from "../../src/sim/clock.js"

describe("ManualClock", () => {
  test("timers fire in order of due time, then of creation; time reads as each one's due time", () => {
    const clock = new ManualClock(1000)
    const fired: Array<string> = []
    const at = (name: string) => () => fired.push(`${name}@${clock.now()}`)
    clock.setTimeout(at("c"), 30)
    clock.setTimeout(at("a"), 10)
    clock.setTimeout(at("b1"), 20)
    clock.setTimeout(at("b2"), 20)
    clock.setTimeout(at("late"), 100)
    clock.advance(50)
    expect(fired).toEqual(["a@1010", "b1@1020", "b2@1020", "c@1030"])
    expect(clock.now()).toBe(1050)
    expect(clock.pendingTimers()).toBe(1)
    expect(clock.nextDueAt()).toBe(1100)
  })

  test("a timer set by a timer fires in the same advance when it falls due before its end", () => {
    const clock = new ManualClock(0)
    const fired: Array<number> = []
    clock.setTimeout(() => {
      fired.push(clock.now())
      clock.setTimeout(() => fired.push(clock.now()), 5)
      clock.setTimeout(() => fired.push(clock.now()), 0)
    }, 10)
    clock.setTimeout(() => fired.push(clock.now()), 12)
    clock.advance(20)
    expect(fired).toEqual([10, 10, 12, 15])
  })

  test("a cleared timer never fires and is not the next due", () => {
    const clock = new ManualClock(0)
    const fired: Array<string> = []
    const first = clock.setTimeout(() => fired.push("first"), 10)
    clock.setTimeout(() => fired.push("second"), 20)
    clock.clearTimeout(first)
    expect(clock.pendingTimers()).toBe(1)
    expect(clock.nextDueAt()).toBe(20)
    clock.advance(100)
    expect(fired).toEqual(["second"])
    expect(clock.nextDueAt()).toBeNull()
  })

  test("thousands of timers set in random order fire sorted", () => {
    const clock = new ManualClock(0)
    const due: Array<number> = []
    let x = 7
    for (let i = 0; i < 5000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31
      const ms = x % 10_000
      const handle = clock.setTimeout(() => due.push(ms), ms)
      if (i % 7 === 0) clock.clearTimeout(handle)
    }
    clock.advance(10_000)
    expect(due.length).toBe(5000 - Math.ceil(5000 / 7))
    expect(due).toEqual([...due].sort((a, b) => a - b))
  })
})

describe("SimClock", () => {
  test("a delay under 1 ms counts as 1 ms, so a timer re-armed at now lets time move", () => {
    const clock = new SimClock(0)
    let ticks = 0
    const again = () => {
      if (++ticks < 5) clock.setTimeout(again, 0)
    }
    clock.setTimeout(again, 0)
    expect(clock.nextDueAt()).toBe(1)
    clock.advanceTo(10)
    expect(ticks).toBe(5)
    expect(clock.now()).toBe(10)
    expect(clock.pending()).toBe(0)
  })
})
