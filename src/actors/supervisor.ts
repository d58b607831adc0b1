// Hosts one supervised child: runs the supervisor machine for it, restarts the child after the backoff
// when it fails within its restart intensity, and escalates (calls the parent's handler) past the limit.
// Every failure is logged once with the child's id, its parent and the restart count.
import { createActor } from "xstate"
import { supervisorMachine, type RestartPolicy } from "../machines/supervisor.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"

export interface SupervisedChild {
  readonly id: string
  readonly parent: string
  readonly policy: RestartPolicy
  /** Starts (or restarts) the child; the child reports failures through `fail`. */
  readonly start: (fail: (error: unknown, context?: Record<string, unknown>) => void) => void
  /** Called when the restart intensity is exceeded. */
  readonly escalate: (error: unknown) => void
}

export const supervise = (child: SupervisedChild, clock: ClockShape, log: Logger): { readonly restarts: () => number } => {
  const actor = createActor(supervisorMachine, { clock, input: { child: child.id, policy: child.policy } })
  let lastError: unknown = null
  let generation = 0
  const fail = (gen: number) => (error: unknown, context?: Record<string, unknown>) => {
    if (gen !== generation) return // a failure report from a child that was already replaced
    lastError = error
    generation++
    const restarts = actor.getSnapshot().context.restarts
    log.error({ actor: child.id, parent: child.parent, restarts, err: error, ...context }, `${child.id} failed`)
    actor.send({ type: "child.failed", now: clock.now() })
  }
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
  child.start(fail(generation))
  return { restarts: () => actor.getSnapshot().context.restarts }
}
