// Postfix's concurrency arithmetic (qmgr_queue.c, qmgr_feedback.c) as src/machines/feedback.ts implements
// it. The numbers are Postfix's own (/work/shared/reference/postfix.md §2.5).
import { describe, expect, it } from "vitest"
import {
  applyNegative,
  applyPositive,
  feedbackAmount,
  initialWindow,
  parseFeedback,
  type Feedback,
  type WindowLimits,
  type WindowState,
} from "../../../src/machines/feedback.js"

const fb = (text: string): Feedback => {
  const f = parseFeedback(text)
  if (f === undefined) throw new Error(`test setup: ${text} does not parse`)
  return f
}

/** Postfix's defaults: initial 5, limit 20, +1 / -1 feedback, failed cohort limit 1. */
const DEFAULTS: WindowLimits = { initial: 5, limit: 20, positive: fb("1"), negative: fb("1"), cohortLimit: 1 }
const limits = (over: Partial<WindowLimits> = {}): WindowLimits => ({ ...DEFAULTS, ...over })

/** Applies `n` positive feedbacks with busy = the current window (so the safety clause always holds). */
const successesAtFullLoad = (s: WindowState, l: WindowLimits, n: number): Array<number> => {
  const windows: Array<number> = []
  let cur = s
  for (let i = 0; i < n; i++) {
    cur = applyPositive(cur, l, cur.window)
    windows.push(cur.window)
  }
  return windows
}

describe("parseFeedback", () => {
  it.each([
    ["1", { numerator: 1, per: "constant", denominator: 1 }],
    ["1/2", { numerator: 1, per: "constant", denominator: 2 }],
    [" 1 / 4 ", { numerator: 1, per: "constant", denominator: 4 }],
    ["0.5", { numerator: 0.5, per: "constant", denominator: 1 }],
    ["1/concurrency", { numerator: 1, per: "concurrency", denominator: 1 }],
    ["1/sqrt_concurrency", { numerator: 1, per: "sqrt_concurrency", denominator: 1 }],
  ] as const)("accepts %j", (text, expected) => {
    expect(parseFeedback(text)).toEqual(expected)
  })

  it.each(["2", "x", "3/2", "", "1/0", "-1", "1/", "/2", "1/concurrencyx", "1/2/3"])("rejects %j", (text) => {
    expect(parseFeedback(text)).toBeUndefined()
  })
})

describe("feedbackAmount", () => {
  it.each([
    ["1", 5, 1],
    ["1/2", 5, 0.5],
    ["1/concurrency", 5, 0.2],
    ["1/concurrency", 8, 0.125],
    ["1/sqrt_concurrency", 16, 0.25],
    // A window of 0 (dead) is treated as 1, so the amount is never infinite.
    ["1/concurrency", 0, 1],
    ["1/sqrt_concurrency", 0, 1],
  ] as const)("%s at window %i is %d", (text, window, amount) => {
    expect(feedbackAmount(fb(text), window)).toBeCloseTo(amount, 12)
  })
})

describe("initialWindow", () => {
  it.each([
    [5, 20, 5],
    [5, 2, 2],
    [5, 0, 5], // limit 0 = no limit
  ])("initial %i, limit %i → window %i", (initial, limit, window) => {
    expect(initialWindow(limits({ initial, limit }))).toEqual({ window, success: 0, failure: 0, failCohorts: 0 })
  })
})

describe("negative feedback (site failures)", () => {
  it("three back-to-back failures from window 5 with cohort limit 1 give 3 → 2 → dead", () => {
    const l = limits()
    const s0 = initialWindow(l)
    const s1 = applyNegative(s0, l)
    const s2 = applyNegative(s1, l)
    const s3 = applyNegative(s2, l)
    expect([s1.window, s2.window, s3.window]).toEqual([3, 2, 0])
    // Failed pseudo-cohorts: 1/5, + 1/3, + 1/2.
    expect(s1.failCohorts).toBeCloseTo(0.2, 12)
    expect(s2.failCohorts).toBeCloseTo(0.2 + 1 / 3, 12)
    expect(s3.failCohorts).toBeCloseTo(0.2 + 1 / 3 + 0.5, 12)
    expect(s3.failCohorts).toBeGreaterThanOrEqual(1)
  })

  it("with cohort limit 0 the destination is never declared dead: the window floors at 1", () => {
    const l = limits({ cohortLimit: 0 })
    let s = initialWindow(l)
    const windows: Array<number> = []
    for (let i = 0; i < 6; i++) {
      s = applyNegative(s, l)
      windows.push(s.window)
    }
    expect(windows).toEqual([3, 2, 1, 1, 1, 1])
  })

  it("a higher cohort limit tolerates more failed cohorts", () => {
    const l = limits({ cohortLimit: 2 })
    let s = initialWindow(l)
    const windows: Array<number> = []
    for (let i = 0; i < 5; i++) {
      s = applyNegative(s, l)
      windows.push(s.window)
    }
    // Cohorts: 0.2, 0.53, 1.03, 2.03 → dead at the 4th failure.
    expect(windows.slice(0, 4)).toEqual([3, 2, 1, 0])
  })

  it("with 1/concurrency negative feedback the window drops at the START of each cohort (reverse hysteresis)", () => {
    const l = limits({ negative: fb("1/concurrency"), cohortLimit: 0 })
    let s = initialWindow(l)
    const windows: Array<number> = []
    for (let i = 0; i < 4; i++) {
      s = applyNegative(s, l)
      windows.push(s.window)
    }
    expect(windows).toEqual([4, 4, 4, 3])
  })

  it("a failure resets the positive hysteresis (success = 0)", () => {
    const l = limits({ positive: fb("1/concurrency") })
    const grown = applyPositive(initialWindow(l), l, 5) // success 0.2, window still 5
    expect(grown.success).toBeCloseTo(0.2, 12)
    const failed = applyNegative(grown, { ...l, cohortLimit: 0 })
    expect(failed.success).toBe(0)
  })
})

describe("positive feedback", () => {
  it("with 1/concurrency and busy = window: 5 → 6 after 5 successes → 7 after 6 more", () => {
    const l = limits({ positive: fb("1/concurrency") })
    const windows = successesAtFullLoad(initialWindow(l), l, 11)
    expect(windows).toEqual([5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7])
  })

  it("with 1/2 the window grows by one every two successes", () => {
    const l = limits({ positive: fb("1/2") })
    expect(successesAtFullLoad(initialWindow(l), l, 6)).toEqual([5, 6, 6, 7, 7, 8])
  })

  it("with 1 the window grows by one per success up to the limit 20, never above", () => {
    const l = limits()
    const windows = successesAtFullLoad(initialWindow(l), l, 20)
    expect(windows).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 20, 20, 20, 20, 20])
  })

  it.each([
    // busy, final window after many successes: min(limit, max(window, busy + init))
    [0, 5],
    [1, 6],
    [3, 8],
    [10, 15],
    [15, 20],
    [40, 20],
  ])("with 1 and busy %i the window never exceeds busy + init (ends at %i)", (busy, expected) => {
    const l = limits()
    let s = initialWindow(l)
    for (let i = 0; i < 50; i++) {
      s = applyPositive(s, l, busy)
      expect(s.window).toBeLessThanOrEqual(Math.max(l.initial, busy + l.initial))
      expect(s.window).toBeLessThanOrEqual(l.limit)
    }
    expect(s.window).toBe(expected)
  })

  it("limit 0 means no limit: the window grows past 20", () => {
    const l = limits({ limit: 0 })
    const windows = successesAtFullLoad(initialWindow(l), l, 30)
    expect(windows.at(-1)).toBe(35)
  })

  it("a positive feedback clears the failed cohorts, so the destination survives a later failure", () => {
    const l = limits()
    let s = initialWindow(l)
    s = applyNegative(s, l) // 3, cohorts 0.2
    s = applyNegative(s, l) // 2, cohorts 0.53
    s = applyPositive(s, l, 2)
    expect(s.failCohorts).toBe(0)
    expect(s.window).toBe(3)
    s = applyNegative(s, l) // cohorts 1/3 only: not dead
    expect(s.window).toBeGreaterThan(0)
    // With f = 1, the first failure after a reset lowers the window by 2 (the ±f/2 rounding).
    expect(s.window).toBe(1)
  })

  it.each([
    [3, 3],
    [1, 1],
    [0, 5],
  ])("on a dead window (0) with busy %i it revives to %i and resets the counters", (busy, window) => {
    const l = limits()
    const dead: WindowState = { window: 0, success: 0.4, failure: 0.7, failCohorts: 1.03 }
    expect(applyPositive(dead, l, busy)).toEqual({ window, success: 0, failure: 0, failCohorts: 0 })
  })

  it("a real death then revival: 3 failures from 5, then one positive feedback with nothing busy → back to init", () => {
    const l = limits()
    let s = initialWindow(l)
    for (let i = 0; i < 3; i++) s = applyNegative(s, l)
    expect(s.window).toBe(0)
    s = applyPositive(s, l, 0)
    expect(s).toEqual(initialWindow(l))
  })
})
