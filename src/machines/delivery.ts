// One delivery attempt (Postfix's smtp(8) for one request): up to `destinationRecipientLimit` recipients
// of one message to one nexthop. It resolves the nexthop's servers, connects (or reuses a cached
// session), transfers, and walks to the next server as Postfix's failure policy allows. Its output is a
// verdict per recipient and whether the whole site failed. The I/O is the host's: each state names the
// work it needs as an entry action (lookUpServers, openSession, transferMail) and waits for the host's
// event with the result. Never persisted or restored: after a crash its recipients come back through
// recovery, so the mail is never sent twice by a restored attempt.
import { assign, setup } from "xstate"
import { describeTarget, type Target, type TargetsResult } from "../transport/mx.js"
import {
  classifyAttempt,
  type AttemptResult,
  type RecipientVerdict,
} from "../transport/smtp-outcome.js"

export interface DeliveryInput {
  readonly deliveryId: string
  readonly nexthop: string
  readonly recipients: ReadonlyArray<string>
  /** The servers, when the host already knows them (an IP literal needs no lookup): no resolving. */
  readonly targets?: ReadonlyArray<Target>
}

export interface DeliveryOutput {
  readonly verdicts: Readonly<Record<string, RecipientVerdict>>
  readonly siteFailure: boolean
  /** The last server spoken to, host[address]:port, or null when none was reached. */
  readonly relay: string | null
  /** The TLS protocol of the session the mail went over (e.g. "TLSv1.3"); absent in plaintext. Set by the host. */
  readonly tls?: string
}

export interface DeliveryContext {
  readonly deliveryId: string
  readonly nexthop: string
  readonly targets: ReadonlyArray<Target>
  readonly index: number
  /** Recipients without a verdict yet. */
  readonly pending: ReadonlyArray<string>
  readonly verdicts: Readonly<Record<string, RecipientVerdict>>
  readonly siteFailure: boolean
  /** A mail transaction ran to its end on some server of this request: no longer a site failure. */
  readonly sessionCompleted: boolean
  readonly relay: string | null
}

/** What the host reports back, one event per piece of work the machine asked for. */
export type DeliveryEvent =
  | { readonly type: "lookup.done"; readonly result: TargetsResult }
  | { readonly type: "lookup.error"; readonly error: unknown }
  | { readonly type: "session.opened" }
  | { readonly type: "session.refused"; readonly result: AttemptResult }
  | { readonly type: "session.error"; readonly error: unknown }
  | { readonly type: "transfer.done"; readonly result: AttemptResult }
  | { readonly type: "transfer.error"; readonly error: unknown }

const notProvided = (name: string) => () => {
  throw new Error(`delivery effect "${name}" was not provided by the host`)
}

const messageOf = (error: unknown): string => String((error as Error)?.message ?? error)

const serverName = (t: Target | undefined): string => (t === undefined ? "unknown" : describeTarget(t))

/**
 * A verdict table keyed by recipient address, without a prototype. An object literal given a new address
 * per delivery adds a hidden-class transition for every address ever seen (V8's transition tree grows
 * with each recipient); a prototype-less object is a dictionary from the start. Creating one and copying
 * it once: 2.2 -> 1.0 µs.
 */
export const verdictTable = (from?: Readonly<Record<string, RecipientVerdict>>): Record<string, RecipientVerdict> => {
  const table = Object.create(null) as Record<string, RecipientVerdict>
  return from === undefined ? table : Object.assign(table, from)
}

/** Folds one server's result into the context: verdicts, who is left, site failure. */
const absorb = (context: DeliveryContext, result: AttemptResult): Partial<DeliveryContext> => {
  const finalServer = context.index >= context.targets.length - 1
  const c = classifyAttempt(result, context.pending, finalServer, serverName(context.targets[context.index]))
  const verdicts = verdictTable(context.verdicts)
  for (const [address, v] of c.verdicts) verdicts[address] = v
  // Postfix (smtp_trouble.c): once a transaction on an earlier server ran to its end, even with 4xx
  // replies, a later server's failure does not make the whole site fail.
  const sessionCompleted =
    context.sessionCompleted || result.stage === "mail" || result.stage === "data" || result.stage === "done"
  return {
    verdicts,
    pending: c.tryNextServer,
    siteFailure: c.siteFailure && !sessionCompleted,
    sessionCompleted,
    relay: result.stage === "connect" || result.stage === "local" ? context.relay : serverName(context.targets[context.index]),
  }
}

export const deliveryMachine = setup({
  types: {
    context: {} as DeliveryContext,
    input: {} as DeliveryInput,
    events: {} as DeliveryEvent,
    output: {} as DeliveryOutput,
  },
  guards: {
    hasNextServer: ({ context }) => context.pending.length > 0 && context.index + 1 < context.targets.length,
  },
  actions: {
    /** The host looks up the nexthop's servers (MX, then addresses) and answers lookup.done / lookup.error. */
    lookUpServers: notProvided("lookUpServers"),
    /** The host opens (or takes from its cache) a session to the current server: session.opened / .refused / .error. */
    openSession: notProvided("openSession"),
    /** The host runs one mail transaction for the pending recipients: transfer.done / transfer.error. */
    transferMail: notProvided("transferMail"),
    failAllOnLookup: assign(({ context }, result: TargetsResult) => {
      if (result.kind !== "failed") return {}
      const verdicts = verdictTable(context.verdicts)
      for (const a of context.pending) {
        verdicts[a] = { verdict: result.permanent ? "bounced" : "deferred", dsn: result.dsn, reply: result.reason, remote: false }
      }
      return { verdicts, pending: [] }
    }),
    absorbResult: assign(({ context }, result: AttemptResult) => absorb(context, result)),
    advanceServer: assign({ index: ({ context }) => context.index + 1 }),
  },
}).createMachine({
  id: "delivery",
  context: ({ input }) => ({
    deliveryId: input.deliveryId,
    nexthop: input.nexthop,
    targets: input.targets ?? [],
    index: 0,
    pending: input.recipients,
    verdicts: verdictTable(),
    siteFailure: false,
    sessionCompleted: false,
    relay: null,
  }),
  initial: "starting",
  output: ({ context }) => ({ verdicts: context.verdicts, siteFailure: context.siteFailure, relay: context.relay }),
  states: {
    starting: {
      description: "Transient: skips the lookup when the servers are already known.",
      always: [{ guard: ({ context }) => context.targets.length > 0, target: "connecting" }, { target: "resolving" }],
    },
    resolving: {
      description: "Looking up the nexthop's servers (MX, then addresses), unless it is bracketed.",
      entry: "lookUpServers",
      on: {
        "lookup.done": [
          {
            guard: ({ event }) => event.result.kind === "failed",
            actions: { type: "failAllOnLookup", params: ({ event }) => event.result },
            target: "finished",
          },
          {
            actions: assign({ targets: ({ event }) => (event.result.kind === "targets" ? event.result.targets : []) }),
            target: "connecting",
          },
        ],
        "lookup.error": {
          actions: {
            type: "failAllOnLookup",
            params: ({ event }) => ({
              kind: "failed" as const,
              permanent: false,
              dsn: "4.4.3",
              reason: `lookup of the nexthop failed: ${messageOf(event.error)}`,
            }),
          },
          target: "finished",
        },
      },
    },
    connecting: {
      description: "Opening a session with the current server: TCP connect, greeting, EHLO (or a cached session).",
      entry: "openSession",
      on: {
        "session.opened": { target: "transferring" },
        "session.refused": { actions: { type: "absorbResult", params: ({ event }) => event.result }, target: "choosingServer" },
        "session.error": {
          actions: { type: "absorbResult", params: ({ event }) => ({ stage: "connect" as const, reason: messageOf(event.error) }) },
          target: "choosingServer",
        },
      },
    },
    transferring: {
      description: "MAIL, RCPT and DATA for the recipients still pending, on the open session.",
      entry: "transferMail",
      on: {
        "transfer.done": { actions: { type: "absorbResult", params: ({ event }) => event.result }, target: "choosingServer" },
        "transfer.error": {
          actions: {
            type: "absorbResult",
            params: ({ event }) => ({ stage: "io" as const, reason: messageOf(event.error), sessionCompleted: false }),
          },
          target: "choosingServer",
        },
      },
    },
    choosingServer: {
      description: "Some recipients may go to the next server (Postfix's smtp_trouble rules); otherwise done.",
      always: [{ guard: "hasNextServer", actions: "advanceServer", target: "connecting" }, { target: "finished" }],
    },
    finished: {
      description: "Every recipient has a verdict: sent, deferred or bounced.",
      type: "final",
    },
  },
})

/** The current server of a delivery in `connecting` or `transferring`. */
export const currentTarget = (context: DeliveryContext): Target => context.targets[context.index]!
