// One destination queue (Postfix's qmgr_queue): a (service, nexthop) pair with its concurrency window.
// Takes `delivery.started` and `delivery.completed` (with whether the whole site failed); enters `dead`
// when failed cohorts reach the limit and revives after `minimalBackoff`, or on `destination.flush`.
// It persists nothing: like Postfix's, a restarted destination starts over from the initial window.
import { assign, setup } from "xstate"
import {
  applyNegative,
  applyPositive,
  initialWindow,
  type WindowLimits,
  type WindowState,
} from "./feedback.js"

export interface DestinationInput {
  readonly name: string
  readonly limits: WindowLimits
  /** How long a dead destination stays dead (minimalBackoffTime, ms). */
  readonly deadTime: number
  /** At most one delivery per this many ms (destinationRateDelay); 0 = off. The host keeps the pause. */
  readonly rateDelay?: number
  /** Deliveries already in flight when this machine starts (a restart while its host's deliveries run). */
  readonly busy?: number
}

export interface DestinationContext extends WindowState {
  readonly name: string
  readonly limits: WindowLimits
  readonly deadTime: number
  /** Deliveries in flight. */
  readonly busy: number
  /** Why the destination was declared dead (the last site failure). */
  readonly deadReason: string | null
}

export type DestinationEvent =
  | { type: "delivery.started" }
  | { type: "delivery.completed"; siteFailure: boolean; reason: string }
  | { type: "destination.flush" }

export const destinationMachine = setup({
  types: {
    context: {} as DestinationContext,
    input: {} as DestinationInput,
    events: {} as DestinationEvent,
  },
  guards: {
    hasFreeSlot: ({ context }) => context.busy < context.window,
    isDead: ({ context }) => context.window === 0,
    isPositive: ({ event }) => event.type === "delivery.completed" && !event.siteFailure,
  },
  delays: {
    minimalBackoff: ({ context }) => context.deadTime,
  },
  actions: {
    countStarted: assign({ busy: ({ context }) => context.busy + 1 }),
    applyFeedback: assign(({ context, event }) => {
      if (event.type !== "delivery.completed") return {}
      // Feedback sees the delivery still counted as busy, as in qmgr_deliver_update().
      const next = event.siteFailure
        ? applyNegative(context, context.limits)
        : applyPositive(context, context.limits, context.busy)
      return {
        ...next,
        busy: Math.max(0, context.busy - 1),
        deadReason: next.window === 0 ? event.reason : null,
      }
    }),
    revive: assign(({ context }) => ({
      ...applyPositive({ ...context, window: 0 }, context.limits, context.busy),
      deadReason: null,
    })),
  },
}).createMachine({
  id: "destination",
  context: ({ input }) => ({
    name: input.name,
    limits: input.limits,
    deadTime: input.deadTime,
    busy: input.busy ?? 0,
    deadReason: null,
    ...initialWindow(input.limits),
  }),
  initial: "ready",
  states: {
    ready: {
      description: "Deliveries may start: fewer are in flight than the window allows.",
      always: { guard: ({ context }) => context.busy >= context.window, target: "saturated" },
      on: {
        "delivery.started": { actions: "countStarted" },
        "delivery.completed": { actions: "applyFeedback", target: "settling" },
      },
    },
    saturated: {
      description: "The window is full: new deliveries wait until one completes.",
      on: { "delivery.completed": { actions: "applyFeedback", target: "settling" } },
    },
    settling: {
      description: "Transient: picks the state that the new window implies.",
      always: [{ guard: "isDead", target: "dead" }, { guard: "hasFreeSlot", target: "ready" }, { target: "saturated" }],
    },
    dead: {
      description:
        "Every delivery failed the whole site: no connection is tried; queued mail is deferred with the last reason.",
      after: { minimalBackoff: { target: "settling", actions: "revive" } },
      on: {
        "delivery.completed": [
          // A delivery that did not fail the site proves it alive: revive at once (qmgr_queue_unthrottle).
          { guard: "isPositive", actions: "applyFeedback", target: "settling" },
          { actions: assign({ busy: ({ context }) => Math.max(0, context.busy - 1) }) },
        ],
        "destination.flush": { target: "settling", actions: "revive" },
      },
    },
  },
})
