// Postfix's concurrency feedback arithmetic (qmgr_queue.c, qmgr_feedback.c), exactly: slow start, the
// safety clause, reverse hysteresis and failed cohorts. Pure functions over a window record, used by the
// destination machine and unit-tested against Postfix's own numbers.

/** A feedback setting: `1`, `1/2`, `1/concurrency`, `1/sqrt_concurrency` (qmgr_feedback.c syntax). */
export interface Feedback {
  readonly numerator: number
  readonly per: "constant" | "concurrency" | "sqrt_concurrency"
  readonly denominator: number
}

export const parseFeedback = (text: string): Feedback | undefined => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:\/\s*(\d+(?:\.\d+)?|concurrency|sqrt_concurrency))?\s*$/.exec(text)
  if (m === null) return undefined
  const numerator = Number(m[1])
  const rhs = m[2]
  if (rhs === undefined) return numerator <= 1 ? { numerator, per: "constant", denominator: 1 } : undefined
  if (rhs === "concurrency" || rhs === "sqrt_concurrency") return { numerator, per: rhs, denominator: 1 }
  const denominator = Number(rhs)
  if (denominator <= 0 || numerator / denominator > 1) return undefined
  return { numerator, per: "constant", denominator }
}

export const feedbackAmount = (f: Feedback, window: number): number => {
  const w = Math.max(window, 1)
  switch (f.per) {
    case "constant":
      return f.numerator / f.denominator
    case "concurrency":
      return f.numerator / w
    case "sqrt_concurrency":
      return f.numerator / Math.sqrt(w)
  }
}

export interface WindowState {
  /** Deliveries allowed at once; 0 means the destination is dead. */
  readonly window: number
  readonly success: number
  readonly failure: number
  readonly failCohorts: number
}

export interface WindowLimits {
  readonly initial: number
  /** 0 = no limit. */
  readonly limit: number
  readonly positive: Feedback
  readonly negative: Feedback
  /** 0 = never declare the destination dead. */
  readonly cohortLimit: number
}

export const initialWindow = (l: WindowLimits): WindowState => ({
  window: l.limit > 0 ? Math.min(l.initial, l.limit) : l.initial,
  success: 0,
  failure: 0,
  failCohorts: 0,
})

/** A delivery that did not fail the whole site. `busy` counts deliveries in flight, this one included. */
export const applyPositive = (s: WindowState, l: WindowLimits, busy: number): WindowState => {
  if (s.window === 0) {
    return { window: busy > 0 ? busy : l.initial, success: 0, failure: 0, failCohorts: 0 }
  }
  let { window, success, failure } = s
  if ((l.limit === 0 || window < l.limit) && window < busy + l.initial) {
    const g = feedbackAmount(l.positive, window)
    success += g
    while (success + g / 2 >= 1) {
      window += 1
      success -= 1
      failure = 0
    }
    if (l.limit > 0) window = Math.min(window, l.limit)
  }
  return { window, success, failure, failCohorts: 0 }
}

/** A whole-destination failure (no session could be completed). Returns window 0 when it is dead. */
export const applyNegative = (s: WindowState, l: WindowLimits): WindowState => {
  const failCohorts = s.failCohorts + 1 / Math.max(s.window, 1)
  if (l.cohortLimit > 0 && failCohorts >= l.cohortLimit) {
    return { window: 0, success: s.success, failure: s.failure, failCohorts }
  }
  let { window, success, failure } = s
  const f = feedbackAmount(l.negative, window)
  failure -= f
  while (failure - f / 2 < 0) {
    window -= 1
    success = 0
    failure += 1
  }
  return { window: Math.max(window, 1), success, failure, failCohorts }
}
