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

/** A virtual clock for tests and the simulator: timers fire only when time is advanced. */
export class ManualClock implements ClockShape {
  private current: number
  private seq = 0
  private readonly timers = new Map<number, { at: number; seq: number; fn: () => void }>()

  constructor(start = 0) {
    this.current = start
  }

  readonly now = (): number => this.current

  readonly setTimeout = (fn: (...args: Array<unknown>) => void, ms: number): unknown => {
    const id = ++this.seq
    this.timers.set(id, { at: this.current + Math.max(0, ms), seq: id, fn: () => fn() })
    return id
  }

  readonly clearTimeout = (handle: unknown): void => {
    this.timers.delete(handle as number)
  }

  /** Advance time by `ms`, firing every timer that comes due, in order of due time then creation. */
  advance(ms: number): void {
    const target = this.current + ms
    for (;;) {
      let next: { id: number; at: number; seq: number; fn: () => void } | undefined
      for (const [id, t] of this.timers) {
        if (t.at <= target && (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))) {
          next = { id, ...t }
        }
      }
      if (next === undefined) break
      this.timers.delete(next.id)
      this.current = Math.max(this.current, next.at)
      next.fn()
    }
    this.current = target
  }

  pendingTimers(): number {
    return this.timers.size
  }
}
