// The simulator's view of the production ManualClock: the same clock (timers fire only when time is
// advanced, in order of due time then creation), and when the next timer is due, so the run can jump
// straight to it instead of stepping through empty time. Delays below 1 ms count as 1 ms, as Node's own
// setTimeout does: a timer re-armed at "now" over and over lets virtual time move on, as the wall clock
// does, instead of spinning at one instant forever.
import { ManualClock, type ClockShape } from "../runtime/clock.js"

export class SimClock implements ClockShape {
  private readonly manual: ManualClock

  constructor(start: number) {
    this.manual = new ManualClock(start)
  }

  readonly now = (): number => this.manual.now()

  readonly setTimeout = (fn: (...args: Array<unknown>) => void, ms: number): unknown => this.manual.setTimeout(fn, ms >= 1 ? ms : 1)

  readonly clearTimeout = (handle: unknown): void => this.manual.clearTimeout(handle)

  /** When the earliest pending timer is due, or null when none is pending. */
  nextDueAt(): number | null {
    return this.manual.nextDueAt()
  }

  /** Moves time to `at`, firing every timer due until then (the ManualClock's own order). */
  advanceTo(at: number): void {
    this.manual.advance(Math.max(0, at - this.manual.now()))
  }

  pending(): number {
    return this.manual.pendingTimers()
  }
}
