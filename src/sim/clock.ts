// The simulator's view of the production ManualClock: the same clock (timers fire only when time is
// advanced, in order of due time then creation), plus a ledger of pending due times so the run can jump
// straight to the next one instead of stepping through empty time. Delays below 1 ms count as 1 ms, as
// Node's own setTimeout does: a timer re-armed at "now" over and over lets virtual time move on, as the
// wall clock does, instead of spinning at one instant forever.
import { ManualClock, type ClockShape } from "../runtime/clock.js"

export class SimClock implements ClockShape {
  private readonly manual: ManualClock
  /** Min-heap of [due, handle]; entries of fired or cleared timers are dropped lazily. */
  private readonly heap: Array<readonly [number, unknown]> = []
  private readonly live = new Set<unknown>()

  constructor(start: number) {
    this.manual = new ManualClock(start)
  }

  readonly now = (): number => this.manual.now()

  readonly setTimeout = (fn: (...args: Array<unknown>) => void, ms: number): unknown => {
    const delay = ms >= 1 ? ms : 1
    const handle: unknown = this.manual.setTimeout(() => {
      this.live.delete(handle)
      fn()
    }, delay)
    this.live.add(handle)
    this.push([this.manual.now() + delay, handle])
    return handle
  }

  readonly clearTimeout = (handle: unknown): void => {
    this.live.delete(handle)
    this.manual.clearTimeout(handle)
  }

  /** When the earliest pending timer is due, or null when none is pending. */
  nextDueAt(): number | null {
    while (this.heap.length > 0 && !this.live.has(this.heap[0]![1])) this.pop()
    return this.heap.length === 0 ? null : this.heap[0]![0]
  }

  /** Moves time to `at`, firing every timer due until then (the ManualClock's own order). */
  advanceTo(at: number): void {
    this.manual.advance(Math.max(0, at - this.manual.now()))
  }

  pending(): number {
    return this.live.size
  }

  private push(entry: readonly [number, unknown]): void {
    const h = this.heap
    h.push(entry)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (h[parent]![0] <= entry[0]) break
      h[i] = h[parent]!
      i = parent
    }
    h[i] = entry
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
      const c = r < h.length && h[r]![0] < h[l]![0] ? r : l
      if (h[c]![0] >= last[0]) break
      h[i] = h[c]!
      i = c
    }
    h[i] = last
  }
}
