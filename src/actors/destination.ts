// A destination queue (Postfix's qmgr_queue) as a hosted actor: the destination machine decides how many
// deliveries may run; this host keeps the to-do list of delivery requests (fair between messages, see
// destination-todo.ts), starts deliveries while the window has room, and defers everything queued at once
// when the destination is dead. Supervised by the queue manager: if the machine fails, it is restarted
// from its initial window and the queue goes on (a delivery it was starting when it failed goes back to
// the head of its message's line).
import { createActor, type ActorRefFrom } from "xstate"
import type { DeliveryOutput } from "../machines/delivery.js"
import { destinationMachine, type DestinationInput } from "../machines/destination.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import type { RestartPolicy } from "../machines/supervisor.js"
import { deferredForAll, type DeliveryRequest } from "./delivery.js"
import { withFaultHook, type FaultHooks } from "./fault-hooks.js"
import { DestinationTodo } from "./destination-todo.js"
import { supervise } from "./supervisor.js"

export interface DestinationDeps {
  readonly clock: ClockShape
  readonly log: Logger
  readonly deliver: (request: DeliveryRequest) => Promise<DeliveryOutput>
  /** Called with each finished delivery and how long it took. */
  readonly done: (request: DeliveryRequest, output: DeliveryOutput, durationMs: number) => void
  /** The destination machine's restart intensity (src/actors/system.ts). */
  readonly restartPolicy: RestartPolicy
  /** Past the restart intensity: the queue manager decides (it escalates further). */
  readonly escalate: (error: unknown) => void
  /** Test-only: see fault-hooks.ts. */
  readonly faultHook?: FaultHooks["destination"] | undefined
  /**
   * Whether a queued request still belongs to the message in the active window (a message actor that
   * failed has had its recipients put back in the queue: its requests here must never start).
   */
  readonly isCurrent?: (request: DeliveryRequest) => boolean
}

export type DestinationStatus =
  | { readonly state: "active"; readonly window: number; readonly busy: number; readonly queued: number }
  | { readonly state: "dead"; readonly reason: string | null; readonly queued: number; readonly deadUntil: number }
  | { readonly state: "rate-delayed"; readonly until: number; readonly queued: number }

const ESCALATED = "destination actor keeps failing"

/** The reply of a recipient deferred without a delivery (Postfix's retry transport). */
const suspendedText = (reason: string | null): string => `delivery temporarily suspended: ${reason ?? "destination is not responding"}`

/** The reply of the request's first recipient (the reason a dead destination gives its queue). */
const firstReply = (output: DeliveryOutput): string | undefined => {
  for (const address in output.verdicts) return output.verdicts[address]!.reply
  return undefined
}

export class DestinationQueue {
  private actor!: ActorRefFrom<typeof destinationMachine>
  private readonly logic: typeof destinationMachine
  private readonly todo = new DestinationTodo<DeliveryRequest>()
  /** Deliveries started and not yet completed. */
  private readonly inFlight = new Set<DeliveryRequest>()
  /** Set at shutdown: deliveries in flight finish, no new one starts. */
  private holding = false
  /** When the destination was last declared dead (epoch ms), for `postern queue list`. */
  private deadSince = 0
  /** destinationRateDelay: no new delivery before this time (epoch ms). */
  private pausedUntil = 0
  private pauseTimer: unknown = null
  /** When work last came or went (epoch ms): an idle queue is kept a while before it is dropped. */
  private lastActivity: number
  /** Past its restart intensity: never restarted again; whatever arrives is deferred. */
  private escalated = false

  constructor(
    readonly key: string,
    private readonly input: DestinationInput,
    private readonly deps: DestinationDeps,
  ) {
    this.lastActivity = deps.clock.now()
    this.logic = withFaultHook(destinationMachine, deps.faultHook)
    supervise(
      {
        id: `destination/${key}`,
        parent: "qmgr",
        policy: deps.restartPolicy,
        start: (fail) => {
          this.actor = this.spawn(fail)
          this.pump()
        },
        escalate: (err) => {
          this.escalated = true
          this.deferAllQueued(ESCALATED)
          deps.escalate(err)
        },
      },
      deps.clock,
      deps.log,
    )
  }

  /** Queues a request; the next free slot goes to the message holding the fewest slots here. */
  enqueue(request: DeliveryRequest): void {
    this.lastActivity = this.deps.clock.now()
    this.todo.push(request)
    this.pump()
  }

  /**
   * Whether a request queued now would be deferred at once, without a delivery: the destination is dead
   * (or past its restart intensity) and nothing else waits in its to-do list.
   */
  isSuspended(): boolean {
    return this.todo.size === 0 && (this.escalated || this.actor.getSnapshot().value === "dead")
  }

  /** What enqueue() does with a request while isSuspended(): counts it as activity and defers it. */
  deferSuspended(request: DeliveryRequest): DeliveryOutput {
    this.lastActivity = this.deps.clock.now()
    return deferredForAll(request, "4.4.1", suspendedText(this.escalated ? ESCALATED : this.actor.getSnapshot().context.deadReason))
  }

  /** Clears a dead mark (postern queue flush). */
  flush(): void {
    this.actor.send({ type: "destination.flush" })
    this.pump()
  }

  status(): DestinationStatus {
    const s = this.actor.getSnapshot()
    return s.value === "dead"
      ? { state: "dead", reason: s.context.deadReason, queued: this.todo.size, deadUntil: this.deadSince + this.input.deadTime }
      : this.pausedUntil > this.deps.clock.now()
        ? { state: "rate-delayed", until: this.pausedUntil, queued: this.todo.size }
        : { state: "active", window: s.context.window, busy: s.context.busy, queued: this.todo.size }
  }

  /**
   * True when nothing is queued or in flight, the destination is not dead, and nothing came or went for
   * `forMs` (it may be dropped).
   */
  isIdle(forMs = 0): boolean {
    const s = this.actor.getSnapshot()
    return (
      this.todo.size === 0 &&
      this.inFlight.size === 0 &&
      s.status === "active" &&
      s.value !== "dead" &&
      this.deps.clock.now() - this.lastActivity >= forMs
    )
  }

  /** Starts no new delivery from now on (shutdown); those in flight run to their end. */
  hold(): void {
    this.holding = true
  }

  /** Deliveries in flight (counted by this host: a restarted machine may not have seen them start). */
  busy(): number {
    return this.inFlight.size
  }

  stop(): void {
    if (this.pauseTimer !== null) this.deps.clock.clearTimeout(this.pauseTimer)
    this.actor.stop()
  }

  /** The queue ids of the mail this destination holds: queued here or in flight. */
  private heldQueueIds(): Array<string> {
    return [...this.inFlight, ...this.todo].map((r) => r.message.queueId)
  }

  private spawn(fail: (error: unknown, held: { queue_ids: ReadonlyArray<string> }) => void): ActorRefFrom<typeof destinationMachine> {
    // A restarted machine starts from the initial window but knows the deliveries still running.
    const actor = createActor(this.logic, { clock: this.deps.clock, input: { ...this.input, busy: this.inFlight.size } })
    let previous: unknown = "ready"
    actor.subscribe({
      next: (s) => {
        const was = previous
        previous = s.value
        if (s.value === "dead" && was !== "dead") {
          this.deadSince = this.deps.clock.now()
          this.deps.log.warn({ destination: this.key, reason: s.context.deadReason }, "destination is dead; deferring its queue")
          queueMicrotask(() => this.deferAllQueued(s.context.deadReason))
        } else if (was === "dead" && s.value !== "dead") {
          queueMicrotask(() => this.pump())
        }
      },
      error: (err) => fail(err, { queue_ids: this.heldQueueIds() }),
    })
    actor.start()
    return actor
  }

  private pump(): void {
    if (this.escalated) return this.deferAllQueued(ESCALATED)
    for (;;) {
      const s = this.actor.getSnapshot()
      if (s.value === "dead") {
        this.deferAllQueued(s.context.deadReason)
        return
      }
      if (this.holding || s.status !== "active" || s.value !== "ready" || this.todo.size === 0) return
      if (this.rateDelayed()) return
      const request = this.todo.take()!
      if (this.deps.isCurrent !== undefined && !this.deps.isCurrent(request)) {
        // Its message left the window (its actor failed): the recipients are back in the queue already.
        this.todo.finished(request)
        continue
      }
      this.inFlight.add(request)
      this.actor.send({ type: "delivery.started" })
      if (this.actor.getSnapshot().status !== "active") {
        // The destination actor failed taking this delivery: it never started; it runs after the restart.
        this.inFlight.delete(request)
        this.todo.putBack(request)
        if (this.escalated) this.deferAllQueued(ESCALATED)
        return
      }
      const started = this.deps.clock.now()
      void this.deps
        .deliver(request)
        .catch((err: unknown): DeliveryOutput => {
          // The agent promises never to reject; if it does, the attempt counts as a failed one, not a lost slot.
          this.deps.log.error({ actor: `destination/${this.key}`, queue_id: request.message.queueId, err }, "delivery agent failed; its recipients are deferred")
          return deferredForAll(request, "4.3.0", "delivery agent failure", true)
        })
        .then((output) => {
          this.inFlight.delete(request)
          // Postfix's destination rate delay: the queue is suspended for the delay after each delivery.
          if ((this.input.rateDelay ?? 0) > 0) this.pausedUntil = this.deps.clock.now() + this.input.rateDelay!
          this.todo.finished(request)
          this.actor.send({
            type: "delivery.completed",
            siteFailure: output.siteFailure,
            reason: firstReply(output) ?? "unknown",
          })
          this.lastActivity = this.deps.clock.now()
          this.deps.done(request, output, this.deps.clock.now() - started)
          this.pump()
        })
    }
  }

  /** True (and a wake-up armed) while the rate delay holds the next delivery back. */
  private rateDelayed(): boolean {
    const wait = this.pausedUntil - this.deps.clock.now()
    if (wait <= 0) return false
    if (this.pauseTimer === null) {
      this.pauseTimer = this.deps.clock.setTimeout(() => {
        this.pauseTimer = null
        this.pump()
      }, wait)
    }
    return true
  }

  private deferAllQueued(reason: string | null): void {
    const text = suspendedText(reason)
    for (const request of this.todo.drain()) this.deps.done(request, deferredForAll(request, "4.4.1", text), 0)
  }
}

