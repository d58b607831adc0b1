// Time as a service: every clock read and every timer in Postern goes through a Clock, so tests and the
// simulator run the production code on virtual time. The shape is a superset of xstate's clock, so the
// same object is handed to `createActor(machine, { clock })`.
import { Context, Layer } from "effect"

export interface ClockShape {
  /** Epoch milliseconds. */
  readonly now: () => number
  readonly setTimeout: (fn: (...args: Array<unknown>) => void, ms: number) => unknown
  readonly clearTimeout: (handle: unknown) => void
}

export class Clock extends Context.Service<Clock, ClockShape>()("postern/runtime/Clock") {
  static readonly system: ClockShape = {
    now: () => Date.now(),
    setTimeout: (fn, ms) => {
      const t = setTimeout(fn, ms)
      t.unref()
      return t
    },
    clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  }
  static readonly layer = Layer.succeed(Clock, Clock.of(Clock.system))
}

interface ManualTimer {
  readonly id: number
  readonly at: number
  readonly fn: () => void
}

/** Whether `a` fires before `b`: earlier due time, then earlier creation. */
const firesBefore = (a: ManualTimer, b: ManualTimer): boolean => a.at < b.at || (a.at === b.at && a.id < b.id)

/**
 * A virtual clock for tests and the simulator: timers fire only when time is advanced. Pending timers are
 * kept in a binary heap (due time, then creation): a simulation holds thousands and fires millions.
 */
export class ManualClock implements ClockShape {
  private current: number
  private seq = 0
  /** Pending timers by handle. A cleared timer leaves at once; the heap drops it when it reaches the top. */
  private readonly timers = new Map<number, ManualTimer>()
  private readonly heap: Array<ManualTimer> = []

  constructor(start = 0) {
    this.current = start
  }

  readonly now = (): number => this.current

  readonly setTimeout = (fn: (...args: Array<unknown>) => void, ms: number): unknown => {
    const timer: ManualTimer = { id: ++this.seq, at: this.current + Math.max(0, ms), fn: () => fn() }
    this.timers.set(timer.id, timer)
    this.push(timer)
    return timer.id
  }

  readonly clearTimeout = (handle: unknown): void => {
    this.timers.delete(handle as number)
  }

  /** Advance time by `ms`, firing every timer that comes due, in order of due time then creation. */
  advance(ms: number): void {
    const target = this.current + ms
    for (let next = this.first(); next !== undefined && next.at <= target; next = this.first()) {
      this.pop()
      this.timers.delete(next.id)
      this.current = Math.max(this.current, next.at)
      next.fn()
    }
    this.current = target
  }

  /** When the earliest pending timer is due, or null when none is pending. */
  nextDueAt(): number | null {
    return this.first()?.at ?? null
  }

  pendingTimers(): number {
    return this.timers.size
  }

  /** The pending timer that fires first (cleared ones on top are dropped on the way). */
  private first(): ManualTimer | undefined {
    while (this.heap.length > 0 && this.timers.get(this.heap[0]!.id) !== this.heap[0]) this.pop()
    return this.heap[0]
  }

  private push(timer: ManualTimer): void {
    const h = this.heap
    let i = h.length
    h.push(timer)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!firesBefore(timer, h[parent]!)) break
      h[i] = h[parent]!
      i = parent
    }
    h[i] = timer
  }

  private pop(): void {
    const h = this.heap
    const last = h.pop()!
    if (h.length === 0) return
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= h.length) break
      const r = l + 1
      const c = r < h.length && firesBefore(h[r]!, h[l]!) ? r : l
      if (!firesBefore(h[c]!, last)) break
      h[i] = h[c]!
      i = c
    }
    h[i] = last
  }
}
