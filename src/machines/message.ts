// One message in the queue manager's active window (Postfix's qmgr_message + qmgr_active_done): it waits
// for the outcome of each of its recipients in memory and, when none is left in flight, decides the
// message's fate: done, or deferred with Postfix's backoff (clamp(age, minimal, maximal)), or expired.
// A message with more recipients than memory may hold is read in batches (qmgrMessageRecipientLimit): when
// a batch is finished and more are in the store it waits in `awaitingBatch` until the host reads the next
// one (`recipients.read`), and decides only after the last. Takes `recipients.reported` (the outcomes of
// one delivery request: sent, bounced or deferred per recipient) and `recipients.read`; persists nothing
// itself (its rows do).
import { and, assign, setup } from "xstate"

export interface MessageInput {
  readonly queueId: string
  readonly arrivalTime: number
  readonly nullSender: boolean
  readonly recipientIds: ReadonlyArray<number>
  /** More recipients wait in the store beyond `recipientIds` (read in batches by the host). */
  readonly moreToRead?: boolean
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
  /** Recipients of this active period are still unread in the store. */
  readonly moreToRead: boolean
  /** Set when the last recipient completes: what happens to the deferred ones. */
  readonly decision: MessageDecision | null
}

export type MessageDecision =
  | { readonly kind: "done" }
  | { readonly kind: "deferred"; readonly nextAttemptAt: number }
  | { readonly kind: "expired" }

export type RecipientOutcome = "sent" | "bounced" | "deferred"

/**
 * `draw` is a uniform number in [0, 1) from the host's seeded Rng (the jitter of a deferral). Outcomes come
 * one event per delivery request (up to its recipient limit), so a large list costs one event per
 * transaction, not per recipient; an outcome for a recipient not in flight is ignored.
 */
export type MessageEvent =
  | {
      type: "recipients.reported"
      outcomes: ReadonlyArray<{ readonly recipientId: number; readonly outcome: RecipientOutcome }>
      now: number
      draw?: number
    }
  /** The host read the next batch from the store; `last` when nothing is left unread after it. */
  | { type: "recipients.read"; recipientIds: ReadonlyArray<number>; last: boolean; now: number; draw?: number }

/** Postfix's next-attempt delay: the message's age, clamped to the backoff bounds. */
export const backoffDelay = (age: number, policy: RetryPolicy): number =>
  Math.min(Math.max(age, policy.minimalBackoffTime), policy.maximalBackoffTime)

/** Whether a message has outlived its queue lifetime (bounceQueueLifetime for a null sender). */
export const isExpired = (now: number, arrivalTime: number, nullSender: boolean, policy: RetryPolicy): boolean =>
  now >= arrivalTime + (nullSender ? policy.bounceQueueLifetime : policy.maximalQueueLifetime)

/** The delay spread by jitter: delay × (1 + jitter × (2·draw − 1)), whole milliseconds. */
export const jittered = (delay: number, jitter: number, draw: number): number =>
  jitter === 0 ? delay : Math.round(delay * (1 + jitter * (2 * draw - 1)))

/** The message's fate once no recipient is in flight (the host uses it too, for a message it settles without an actor). */
export const decide = (
  ctx: Pick<MessageContext, "deferred" | "arrivalTime" | "nullSender" | "policy">,
  now: number,
  draw = 0.5,
): MessageDecision => {
  if (ctx.deferred.length === 0) return { kind: "done" }
  if (isExpired(now, ctx.arrivalTime, ctx.nullSender, ctx.policy)) return { kind: "expired" }
  const delay = jittered(backoffDelay(now - ctx.arrivalTime, ctx.policy), ctx.policy.backoffJitter, draw)
  return { kind: "deferred", nextAttemptAt: now + delay }
}

/** The context after a request's outcomes: who is still in flight, who was deferred (in flight ones only). */
const afterOutcomes = (context: MessageContext, event: MessageEvent): Pick<MessageContext, "inFlight" | "deferred"> => {
  if (event.type !== "recipients.reported") return context
  const reported = new Map(event.outcomes.map((o) => [o.recipientId, o.outcome]))
  const inFlight = context.inFlight.filter((id) => !reported.has(id))
  const deferred = context.inFlight.filter((id) => reported.get(id) === "deferred")
  return { inFlight, deferred: deferred.length === 0 ? context.deferred : [...context.deferred, ...deferred] }
}

export const messageMachine = setup({
  types: {
    context: {} as MessageContext,
    input: {} as MessageInput,
    events: {} as MessageEvent,
    output: {} as MessageDecision,
  },
  guards: {
    /** These outcomes leave no recipient of the current batch in flight. */
    finishesBatch: ({ context, event }) => {
      if (event.type !== "recipients.reported") return false
      const reported = new Set(event.outcomes.map((o) => o.recipientId))
      return context.inFlight.every((id) => reported.has(id))
    },
    hasMoreToRead: ({ context }) => context.moreToRead,
    isEmptyBatch: ({ event }) => event.type === "recipients.read" && event.recipientIds.length === 0,
  },
  actions: {
    recordOutcomes: assign(({ context, event }) => afterOutcomes(context, event)),
    addBatch: assign(({ event }) =>
      event.type === "recipients.read" ? { inFlight: event.recipientIds, moreToRead: !event.last } : {},
    ),
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
    moreToRead: input.moreToRead ?? false,
    decision: null,
  }),
  initial: "active",
  output: ({ context }) => context.decision ?? { kind: "done" },
  states: {
    active: {
      description: "Recipients are being delivered; the message waits for each outcome.",
      on: {
        "recipients.reported": [
          { guard: and(["finishesBatch", "hasMoreToRead"]), actions: "recordOutcomes", target: "awaitingBatch" },
          { guard: "finishesBatch", actions: ["recordOutcomes", "decideFate"], target: "settled" },
          { actions: "recordOutcomes" },
        ],
      },
    },
    awaitingBatch: {
      description:
        "Every recipient read so far has an outcome and more wait in the store: the host reads the next batch. " +
        "Nothing is decided before the last batch.",
      on: {
        "recipients.read": [
          { guard: "isEmptyBatch", actions: "decideFate", target: "settled" },
          { actions: "addBatch", target: "active" },
        ],
      },
    },
    settled: {
      description: "Every recipient has an outcome: the decision is made and the message leaves the active window.",
      type: "final",
    },
  },
})
