// Test-only fault injection into the engine's actors: a hook called as an actor takes each event, inside
// its transition, so a hook that throws makes that actor fail exactly as a bug in its machine would. Hooks
// reach the engine only through startEngine/startSystem deps (never from the config file); without one
// the machine is used as is, at no cost. Machine files stay free of any of this.
import type { AnyStateMachine, ContextFrom, EventFromLogic, EventObject, StateValue } from "xstate"
import type { DeliveryContext } from "../machines/delivery.js"
import type { DestinationContext, DestinationEvent } from "../machines/destination.js"
import type { MessageContext, MessageEvent } from "../machines/message.js"
import type { SessionContext, SessionEvent } from "../machines/session.js"

/**
 * Where an actor is when it takes an event: the state it is in, its context, and the event (typed as the
 * machine's own events; xstate's internal ones, such as timers and invoke results, pass by too).
 */
export interface FaultSite<C, E> {
  readonly state: StateValue
  readonly context: C
  readonly event: E
}

/** Throw to make the actor fail at this site; return to let it take the event as usual. */
export type FaultHook<C, E> = (site: FaultSite<C, E>) => void

/** One hook per actor kind of the supervision table (src/actors/system.ts). */
export interface FaultHooks {
  /** The session actor (one per SMTP connection; context.sessionId). */
  readonly session?: FaultHook<SessionContext, SessionEvent>
  /** The message actor (one per message in the active window; context.queueId). */
  readonly message?: FaultHook<MessageContext, MessageEvent>
  /** The destination actor (one per service:nexthop; context.name). */
  readonly destination?: FaultHook<DestinationContext, DestinationEvent>
  /** The delivery actor (one per attempt; context.deliveryId). Forces the delivery agents onto the main thread. */
  readonly delivery?: FaultHook<DeliveryContext, EventObject>
}

/**
 * The machine with `hook` run inside its transition function, before the event is taken; the machine
 * itself when there is no hook. An exception from the hook fails the actor (xstate puts it in 'error' and
 * tells its error observers), which is what a supervisor must survive.
 */
export const withFaultHook = <M extends AnyStateMachine>(
  machine: M,
  hook: FaultHook<ContextFrom<M>, EventFromLogic<M>> | undefined,
): M => {
  if (hook === undefined) return machine
  const faulty = Object.create(machine) as M
  Object.defineProperty(faulty, "transition", {
    value: (snapshot: { value: StateValue; context: ContextFrom<M> }, event: EventFromLogic<M>, scope: unknown) => {
      hook({ state: snapshot.value, context: snapshot.context, event })
      return (machine.transition as (s: unknown, e: unknown, a: unknown) => unknown)(snapshot, event, scope)
    },
  })
  return faulty
}
