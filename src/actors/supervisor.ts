// Hosts one supervised child: runs the supervisor machine for it, restarts the child after the backoff
// when it fails within its restart intensity, and escalates (calls the parent's handler) past the limit.
// Every failure is logged once with the child's id, its parent, the queue ids it held and the restart count.
import { createActor } from "xstate"
import { isWithinIntensity, restartBackoff, supervisorMachine, type RestartPolicy } from "../machines/supervisor.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import { logActorFailure } from "./failure-log.js"

export interface SupervisedChild {
  readonly id: string
  readonly parent: string
  readonly policy: RestartPolicy
  /** Starts (or restarts) the child; the child reports failures through `fail`, with the queue ids it held. */
  readonly start: (fail: (error: unknown, held?: { readonly queue_ids?: ReadonlyArray<string> }) => void) => void
  /** Called when the restart intensity is exceeded. */
  readonly escalate: (error: unknown) => void
}

export const supervise = (child: SupervisedChild, clock: ClockShape, log: Logger): { readonly restarts: () => number } => {
  // The supervisor machine is started at the child's first failure: until then it would sit in `running`
  // with no failures, and most children never fail (a destination queue is made for every idle nexthop
  // that gets mail again, thousands of times a day).
  let supervisor: ReturnType<typeof startSupervisor> | null = null
  let lastError: unknown = null
  let generation = 0
  const fail = (gen: number) => (error: unknown, held?: { readonly queue_ids?: ReadonlyArray<string> }) => {
    if (gen !== generation) return // a failure report from a child that was already replaced
    lastError = error
    generation++
    supervisor ??= startSupervisor()
    const { restarts, failures } = supervisor.getSnapshot().context
    const now = clock.now()
    const next = isWithinIntensity(child.policy, failures, now)
      ? `restarting in ${restartBackoff(child.policy, failures.filter((t) => now - t < child.policy.withinMs).length + 1)} ms`
      : `restart intensity exceeded (${child.policy.maxRestarts} in ${child.policy.withinMs / 1000}s); escalating to ${child.parent}`
    logActorFailure(log, { actor: child.id, parent: child.parent, queueIds: held?.queue_ids ?? [], restarts, err: error }, next)
    supervisor.send({ type: "child.failed", now })
  }
  const startSupervisor = () => {
    const actor = createActor(supervisorMachine, { clock, input: { child: child.id, policy: child.policy } })
    let previous: unknown = "running"
    actor.subscribe({
      next: (s) => {
        const was = previous
        previous = s.value
        if (s.value === "running" && was === "restarting") child.start(fail(generation))
      },
      complete: () => child.escalate(lastError),
      error: (err) => child.escalate(err),
    })
    actor.start()
    return actor
  }
  child.start(fail(generation))
  return { restarts: () => supervisor?.getSnapshot().context.restarts ?? 0 }
}
