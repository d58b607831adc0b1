// Every reply Postern's SMTP server gives of its own, in one catalogue: a stable code, the SMTP reply
// code, the enhanced status code and the text (Postfix's wording). docs/replies.md documents each one,
// and a test keeps the two in step.

export interface ReplySpec {
  readonly code: number
  readonly enhanced: string
  readonly text: (arg: string) => string
}

export const REPLIES = {
  QUEUED: { code: 250, enhanced: "2.0.0", text: (queueId) => `Ok: queued as ${queueId}` },
  RELAY_DENIED: { code: 554, enhanced: "5.7.1", text: (rcpt) => `<${rcpt}>: Relay access denied` },
  TOO_MANY_RECIPIENTS: { code: 452, enhanced: "4.5.3", text: () => "Error: too many recipients" },
  UNSUPPORTED_OPTION: { code: 555, enhanced: "5.5.4", text: (option) => `Unsupported option: ${option}` },
  NEED_RCPT: { code: 503, enhanced: "5.5.1", text: () => "Error: need RCPT command" },
  MESSAGE_TOO_BIG: { code: 552, enhanced: "5.3.4", text: () => "Error: message file too big" },
  TOO_MANY_HOPS: { code: 554, enhanced: "5.4.6", text: () => "Error: too many hops" },
  TRANSFER_INTERRUPTED: { code: 451, enhanced: "4.3.0", text: () => "Error: message transfer interrupted" },
  QUEUE_WRITE_ERROR: { code: 451, enhanced: "4.3.0", text: () => "Error: queue file write error" },
  INSUFFICIENT_STORAGE: { code: 452, enhanced: "4.3.1", text: () => "Insufficient system storage" },
  SESSION_FAILED: { code: 421, enhanced: "4.3.0", text: (hostname) => `${hostname} Server local error` },
} as const satisfies Record<string, ReplySpec>

export type ReplyName = keyof typeof REPLIES

/** An SMTP reply as smtp-server sends it for an Error: `<responseCode> <message>`. */
export class SmtpReply extends Error {
  constructor(
    readonly name_: ReplyName,
    readonly responseCode: number,
    message: string,
  ) {
    super(message)
  }

  /** The line after the code: "<enhanced> <text>". */
  static text(name: ReplyName, arg = ""): string {
    const r: ReplySpec = REPLIES[name]
    return `${r.enhanced} ${r.text(arg)}`
  }

  static of(name: ReplyName, arg = ""): SmtpReply {
    return new SmtpReply(name, REPLIES[name].code, SmtpReply.text(name, arg))
  }
}

/** What the client hears when the queue cannot take its message: always temporary, nothing is lost. */
export const replyForStoreFailure = (reason: string): ReplyName =>
  reason === "disk-full" ? "INSUFFICIENT_STORAGE" : "QUEUE_WRITE_ERROR"
