// One log line per actor failure, with the same fields for every kind of actor (issue 5): the actor's id,
// its parent in the supervision tree (src/actors/system.ts), the queue ids it held and how many times it
// had been restarted before this failure (always 0 for a temporary actor, which is never restarted).
import type { Logger } from "../runtime/log.js"

export interface ActorFailure {
  readonly actor: string
  readonly parent: string
  readonly queueIds: ReadonlyArray<string>
  readonly restarts: number
  readonly err: unknown
}

/** Logs `failure` once, at error level; `what` says what happens next (restart, deferral, 4xx). */
export const logActorFailure = (log: Logger, failure: ActorFailure, what: string): void => {
  log.error(
    { actor: failure.actor, parent: failure.parent, queue_ids: [...new Set(failure.queueIds)], restarts: failure.restarts, err: failure.err },
    `${failure.actor} failed: ${what}`,
  )
}
