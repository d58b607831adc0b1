// The queue's records as the rest of Postern sees them: a message, its recipients, and the outcome of an
// attempt. These are plain data; the store turns them into rows and back.

/** MAIL FROM parameters as the client gave them (keys upper-case: BODY, SIZE, SMTPUTF8, ENVID, RET). */
export type MailParams = Readonly<Record<string, string | true>>
/** RCPT TO parameters as the client gave them (NOTIFY, ORCPT). */
export type RcptParams = Readonly<Record<string, string | true>>

export interface ClientInfo {
  readonly address: string
  readonly helo: string
  readonly hostname: string
}

export interface NewRecipient {
  readonly address: string
  readonly params: RcptParams
}

/** What the SMTP server hands the store at end-of-data. */
export interface NewMessage {
  readonly queueId: string
  readonly arrivalTime: number
  readonly sender: string
  readonly mailParams: MailParams
  readonly client: ClientInfo
  readonly recipients: ReadonlyArray<NewRecipient>
  readonly size: number
}

export interface QueuedRecipient {
  readonly id: number
  readonly address: string
  readonly params: RcptParams
  readonly attempts: number
}

/** A message in the queue manager's active window. The body is held in memory only when small. */
export interface ActiveMessage {
  readonly id: number
  readonly queueId: string
  readonly arrivalTime: number
  readonly sender: string
  readonly mailParams: MailParams
  readonly size: number
  readonly recipients: ReadonlyArray<QueuedRecipient>
  readonly body: Buffer | null
}

export type RecipientOutcomeKind = "sent" | "deferred" | "bounced" | "expired"

/** The end of one recipient's attempt, as the delivery agent and the queue manager report it. */
export interface RecipientOutcome {
  readonly recipientId: number
  readonly address: string
  readonly kind: RecipientOutcomeKind
  /** Enhanced status code, e.g. "2.0.0", "4.4.1", "5.1.1". */
  readonly dsn: string
  /** The remote reply or our own reason, one line. */
  readonly reply: string
  /** Whether `reply` came from the remote server (Diagnostic-Code: smtp;) or from us. */
  readonly remote: boolean
}

/** One row of the append-only attempts log. */
export interface AttemptRecord {
  readonly at: number
  readonly queueId: string
  readonly recipient: string
  readonly attempt: number
  readonly destination: string
  readonly relay: string | null
  readonly outcome: RecipientOutcomeKind
  readonly dsn: string
  readonly reply: string
  readonly durationMs: number
}
