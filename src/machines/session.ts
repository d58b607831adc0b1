// One SMTP session (Postfix's smtpd), from connect to close. It tracks the mail transaction the client is
// building and its limits; the host (src/actors/smtpd.ts) turns smtp-server callbacks into these events
// and asks the snapshot what to answer. Takes `smtp.*` and `queue.message.*` events; persists nothing (an
// unfinished transaction is discarded by design: the client retries what never got a 250).
import { assign, setup } from "xstate"
import type { MailParams, RcptParams } from "../store/types.js"

export interface SessionInput {
  readonly sessionId: string
  readonly clientAddress: string
  readonly trusted: boolean
  readonly recipientLimit: number
}

export interface Envelope {
  readonly sender: string
  readonly mailParams: MailParams
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly params: RcptParams }>
}

export interface SessionContext {
  readonly sessionId: string
  readonly clientAddress: string
  readonly trusted: boolean
  readonly recipientLimit: number
  readonly helo: string
  readonly envelope: Envelope | null
  readonly accepted: number
  readonly rejectedRecipients: number
}

export type SessionEvent =
  | { type: "smtp.helo"; name: string }
  /** `helo` lets the host pass the client's HELO/EHLO name with its first MAIL instead of a separate event. */
  | { type: "smtp.mail"; sender: string; params: MailParams; helo?: string }
  | { type: "smtp.rcpt.accepted"; address: string; params: RcptParams }
  | { type: "smtp.rcpt.rejected"; address: string }
  | { type: "smtp.data.start" }
  | { type: "smtp.data.end" }
  | { type: "smtp.data.aborted" }
  | { type: "queue.message.committed"; queueId: string }
  | { type: "queue.message.failed"; reason: string }
  | { type: "smtp.close" }

export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    input: {} as SessionInput,
    events: {} as SessionEvent,
  },
  guards: {
    hasRecipientRoom: ({ context }) => (context.envelope?.recipients.length ?? 0) < context.recipientLimit,
  },
  actions: {
    rememberHelo: assign({ helo: ({ event }) => (event.type === "smtp.helo" ? event.name : "") }),
    startTransaction: assign({
      envelope: ({ event }) =>
        event.type === "smtp.mail" ? { sender: event.sender, mailParams: event.params, recipients: [] } : null,
      helo: ({ context, event }) => (event.type === "smtp.mail" && event.helo !== undefined ? event.helo : context.helo),
    }),
    addRecipient: assign({
      envelope: ({ context, event }) =>
        event.type === "smtp.rcpt.accepted" && context.envelope !== null
          ? {
              ...context.envelope,
              recipients: [...context.envelope.recipients, { address: event.address, params: event.params }],
            }
          : context.envelope,
    }),
    countRejected: assign({ rejectedRecipients: ({ context }) => context.rejectedRecipients + 1 }),
    countAccepted: assign({ accepted: ({ context }) => context.accepted + 1 }),
    endTransaction: assign({ envelope: null }),
  },
}).createMachine({
  id: "session",
  context: ({ input }) => ({
    sessionId: input.sessionId,
    clientAddress: input.clientAddress,
    trusted: input.trusted,
    recipientLimit: input.recipientLimit,
    helo: "",
    envelope: null,
    accepted: 0,
    rejectedRecipients: 0,
  }),
  initial: "connected",
  on: {
    "smtp.close": ".closed",
    "smtp.helo": { target: ".greeted", actions: ["rememberHelo", "endTransaction"] },
  },
  states: {
    connected: {
      description: "The greeting was sent; the client has not said HELO or EHLO yet.",
      on: { "smtp.mail": { target: "awaitingRcpt", actions: "startTransaction" } },
    },
    greeted: {
      description: "HELO/EHLO done; no mail transaction open.",
      on: { "smtp.mail": { target: "awaitingRcpt", actions: "startTransaction" } },
    },
    awaitingRcpt: {
      description: "MAIL FROM accepted; waiting for the first accepted RCPT TO.",
      on: {
        "smtp.mail": { target: "awaitingRcpt", actions: "startTransaction", reenter: true },
        "smtp.rcpt.accepted": { guard: "hasRecipientRoom", target: "awaitingData", actions: "addRecipient" },
        "smtp.rcpt.rejected": { actions: "countRejected" },
      },
    },
    awaitingData: {
      description: "At least one recipient accepted; more RCPT TO or DATA may come.",
      on: {
        "smtp.mail": { target: "awaitingRcpt", actions: "startTransaction" },
        "smtp.rcpt.accepted": { guard: "hasRecipientRoom", actions: "addRecipient" },
        "smtp.rcpt.rejected": { actions: "countRejected" },
        "smtp.data.start": "receivingData",
      },
    },
    receivingData: {
      description: "The message content streams into the store; nothing is acknowledged yet.",
      on: {
        "smtp.data.end": "committing",
        "smtp.data.aborted": { target: "greeted", actions: "endTransaction" },
      },
    },
    committing: {
      description: "End of data seen; waiting for the queue's durable commit before replying 250.",
      on: {
        "queue.message.committed": { target: "greeted", actions: ["countAccepted", "endTransaction"] },
        "queue.message.failed": { target: "greeted", actions: "endTransaction" },
      },
    },
    closed: { description: "The connection is gone.", type: "final" },
  },
})
