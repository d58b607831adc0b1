// One message in the queue manager's active window (Postfix's qmgr_message + qmgr_active_done): it waits
// for the outcome of each of its recipients in memory and, when none is left in flight, decides the
// message's fate: done, or deferred with Postfix's backoff (clamp(age, minimal, maximal)), or expired.
// Takes `recipient.sent`, `recipient.deferred`, `recipient.bounced`; persists nothing itself (its rows do).
import { assign, setup } from "xstate"

export interface MessageInput {
  readonly queueId: string
  readonly arrivalTime: number
  readonly nullSender: boolean
  readonly recipientIds: ReadonlyArray<number>
  readonly policy: RetryPolicy
}

export interface RetryPolicy {
  readonly minimalBackoffTime: number
  readonly maximalBackoffTime: number
  /** The delay is spread to delay × (1 ± jitter); 0 is Postfix's exact schedule. */
  readonly backoffJitter: number
  readonly maximalQueueLifetime: number
  readonly bounceQueueLifetime: number
}

export interface MessageContext {
  readonly queueId: string
  readonly arrivalTime: number
  readonly nullSender: boolean
  readonly policy: RetryPolicy
  readonly inFlight: ReadonlyArray<number>
  readonly deferred: ReadonlyArray<number>
  /** Set when the last recipient completes: what happens to the deferred ones. */
  readonly decision: MessageDecision | null
}

export type MessageDecision =
  | { readonly kind: "done" }
  | { readonly kind: "deferred"; readonly nextAttemptAt: number }
  | { readonly kind: "expired" }

/** `draw` is a uniform number in [0, 1) from the host's seeded Rng (the jitter of a deferral). */
export type MessageEvent =
  | { type: "recipient.sent"; recipientId: number; now: number; draw?: number }
  | { type: "recipient.bounced"; recipientId: number; now: number; draw?: number }
  | { type: "recipient.deferred"; recipientId: number; now: number; draw?: number }

/** Postfix's next-attempt delay: the message's age, clamped to the backoff bounds. */
export const backoffDelay = (age: number, policy: RetryPolicy): number =>
  Math.min(Math.max(age, policy.minimalBackoffTime), policy.maximalBackoffTime)

/** Whether a message has outlived its queue lifetime (bounceQueueLifetime for a null sender). */
export const isExpired = (now: number, arrivalTime: number, nullSender: boolean, policy: RetryPolicy): boolean =>
  now >= arrivalTime + (nullSender ? policy.bounceQueueLifetime : policy.maximalQueueLifetime)

/** The delay spread by jitter: delay × (1 + jitter × (2·draw − 1)), whole milliseconds. */
export const jittered = (delay: number, jitter: number, draw: number): number =>
  jitter === 0 ? delay : Math.round(delay * (1 + jitter * (2 * draw - 1)))

export const decide = (ctx: MessageContext, now: number, draw = 0.5): MessageDecision => {
  if (ctx.deferred.length === 0) return { kind: "done" }
  if (isExpired(now, ctx.arrivalTime, ctx.nullSender, ctx.policy)) return { kind: "expired" }
  const delay = jittered(backoffDelay(now - ctx.arrivalTime, ctx.policy), ctx.policy.backoffJitter, draw)
  return { kind: "deferred", nextAttemptAt: now + delay }
}

const without = (ids: ReadonlyArray<number>, id: number) => ids.filter((x) => x !== id)

export const messageMachine = setup({
  types: {
    context: {} as MessageContext,
    input: {} as MessageInput,
    events: {} as MessageEvent,
    output: {} as MessageDecision,
  },
  guards: {
    isLastInFlight: ({ context, event }) =>
      context.inFlight.length === 1 && context.inFlight[0] === event.recipientId,
    isInFlight: ({ context, event }) => context.inFlight.includes(event.recipientId),
  },
  actions: {
    completeRecipient: assign({ inFlight: ({ context, event }) => without(context.inFlight, event.recipientId) }),
    deferRecipient: assign({
      inFlight: ({ context, event }) => without(context.inFlight, event.recipientId),
      deferred: ({ context, event }) => [...context.deferred, event.recipientId],
    }),
    decideFate: assign({ decision: ({ context, event }) => decide(context, event.now, event.draw) }),
  },
}).createMachine({
  id: "message",
  context: ({ input }) => ({
    queueId: input.queueId,
    arrivalTime: input.arrivalTime,
    nullSender: input.nullSender,
    policy: input.policy,
    inFlight: input.recipientIds,
    deferred: [],
    decision: null,
  }),
  initial: "active",
  output: ({ context }) => context.decision ?? { kind: "done" },
  states: {
    active: {
      description: "Recipients are being delivered; the message waits for each outcome.",
      on: {
        "recipient.sent": [
          { guard: "isLastInFlight", actions: ["completeRecipient", "decideFate"], target: "settled" },
          { guard: "isInFlight", actions: "completeRecipient" },
        ],
        "recipient.bounced": [
          { guard: "isLastInFlight", actions: ["completeRecipient", "decideFate"], target: "settled" },
          { guard: "isInFlight", actions: "completeRecipient" },
        ],
        "recipient.deferred": [
          { guard: "isLastInFlight", actions: ["deferRecipient", "decideFate"], target: "settled" },
          { guard: "isInFlight", actions: "deferRecipient" },
        ],
      },
    },
    settled: {
      description: "Every recipient has an outcome: the decision is made and the message leaves the active window.",
      type: "final",
    },
  },
})
