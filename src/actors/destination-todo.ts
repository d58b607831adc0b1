// The to-do list of one destination queue, fair between messages: Postern's equivalent of Postfix's
// preemptive job scheduler (nqmgr). Guarantees: the next free delivery slot goes to the message that holds
// the fewest slots of this destination right now (ties: the one that has waited longest at that level),
// so a one-recipient message never waits behind the remaining requests of a 10,000-recipient list.
//
// Why this instead of Postfix's slot arithmetic: nqmgr serves jobs in FIFO order and lets a small job
// "preempt" the current one once the current job has earned enough delivery slots (slot cost 5, loan 3,
// discount 50%); its net effect is that small messages slip past bulk ones while the bulk job keeps most
// of the window. Least-held-first gets the same effect with no tuning knobs and a simple bound: a message
// that arrives while a list holds every slot waits only for the first of those deliveries to finish (no
// running delivery is ever interrupted, as in Postfix). It is work-conserving (a list alone uses the whole
// window), two lists share the window evenly instead of one waiting for the other, and when every message
// has one request per destination (most mail) it is exactly the FIFO order mail arrived in.

/** What the to-do list needs of a delivery request: the message it belongs to. */
export interface FairRequest {
  readonly message: { readonly id: number }
}

interface Job<R> {
  readonly messageId: number
  /** Requests not yet started, oldest first (from `head` on). */
  readonly todo: Array<R>
  head: number
  /** Requests of this message in flight at this destination. */
  busy: number
}

export class DestinationTodo<R extends FairRequest> {
  /** Every message with queued or running requests here. */
  private readonly jobs = new Map<number, Job<R>>()
  /** levels[n]: messages with queued requests and n deliveries in flight, in the order they reached that level. */
  private readonly levels: Array<Set<Job<R>>> = []
  private queued = 0

  /** Requests waiting for a slot. */
  get size(): number {
    return this.queued
  }

  push(request: R): void {
    const id = request.message.id
    let job = this.jobs.get(id)
    if (job === undefined) {
      job = { messageId: id, todo: [], head: 0, busy: 0 }
      this.jobs.set(id, job)
    }
    if (job.head === job.todo.length) this.level(job.busy).add(job)
    job.todo.push(request)
    this.queued++
  }

  /** The request to start next (counted as in flight until `finished`), or undefined when none waits. */
  take(): R | undefined {
    for (const level of this.levels) {
      const job = level.values().next().value
      if (job === undefined) continue
      level.delete(job)
      const request = job.todo[job.head]!
      job.head++
      job.busy++
      this.queued--
      if (job.head === job.todo.length) {
        job.todo.length = 0
        job.head = 0
      } else {
        this.level(job.busy).add(job)
      }
      return request
    }
    return undefined
  }

  /** A started request ended: its message holds one slot less. */
  finished(request: R): void {
    const job = this.jobs.get(request.message.id)
    if (job === undefined || job.busy === 0) return
    const waiting = job.head < job.todo.length
    if (waiting) this.levels[job.busy]!.delete(job)
    job.busy--
    if (waiting) this.level(job.busy).add(job)
    else if (job.busy === 0) this.jobs.delete(job.messageId)
  }

  /**
   * A taken request that never started (the destination actor failed as it took it) goes back first in
   * its message's line, and its slot is released.
   */
  putBack(request: R): void {
    const job = this.jobs.get(request.message.id)
    if (job === undefined || job.busy === 0) return this.push(request)
    if (job.head < job.todo.length) this.levels[job.busy]!.delete(job)
    job.busy--
    if (job.head > 0) job.todo[--job.head] = request
    else job.todo.unshift(request)
    this.queued++
    this.level(job.busy).add(job)
  }

  /** Every queued request (not the running ones), message by message. */
  *[Symbol.iterator](): Iterator<R> {
    for (const job of this.jobs.values()) for (let i = job.head; i < job.todo.length; i++) yield job.todo[i]!
  }

  /** Removes and returns every queued request (a dead destination defers them all); running ones stay counted. */
  drain(): Array<R> {
    const out: Array<R> = []
    for (const job of this.jobs.values()) {
      for (let i = job.head; i < job.todo.length; i++) out.push(job.todo[i]!)
      job.todo.length = 0
      job.head = 0
      if (job.busy === 0) this.jobs.delete(job.messageId)
    }
    for (const level of this.levels) level.clear()
    this.queued = 0
    return out
  }

  private level(busy: number): Set<Job<R>> {
    while (this.levels.length <= busy) this.levels.push(new Set())
    return this.levels[busy]!
  }
}
