// The bounce service (Postfix's bounce(8)): turns recipients that failed for good into one RFC 3464
// non-delivery report addressed to the envelope sender, as a new message for the same queue. Mail from
// the null sender is never bounced (that is how bounce loops end): it is logged and dropped. DSN NOTIFY
// is honoured: NEVER, or a list without FAILURE, means no report for that recipient.
import { buildNonDeliveryReport, extractHeaderSection, type BouncedRecipient } from "../dsn/ndr.js"
import type { ActiveMessage, NewMessage, QueuedRecipient } from "../store/types.js"
import type { RecipientVerdict } from "../transport/smtp-outcome.js"

export interface Failed {
  readonly recipient: QueuedRecipient
  readonly verdict: RecipientVerdict
  readonly relay: string | null
  readonly at: number
}

export interface BounceMessage {
  readonly message: NewMessage
  readonly body: Buffer
}

const wantsFailureNotice = (r: QueuedRecipient): boolean => {
  const notify = r.params["NOTIFY"]
  if (typeof notify !== "string") return true
  return notify.toUpperCase().split(",").includes("FAILURE")
}

/** Builds the report for `failed` recipients of `message`, or null when no report is to be sent. */
export const makeBounce = (
  message: ActiveMessage,
  original: Buffer,
  failed: ReadonlyArray<Failed>,
  opts: { readonly hostname: string; readonly now: number; readonly queueId: string },
): BounceMessage | null => {
  if (message.sender === "") return null
  const notified = failed.filter((f) => wantsFailureNotice(f.recipient))
  if (notified.length === 0) return null
  const recipients: Array<BouncedRecipient> = notified.map((f) => {
    const orcpt = f.recipient.params["ORCPT"]
    return {
      address: f.recipient.address,
      ...(typeof orcpt === "string" ? { originalRecipient: orcpt } : {}),
      status: f.verdict.dsn,
      action: "failed",
      ...(f.verdict.remote ? { diagnosticCode: `smtp; ${f.verdict.reply.replace(/^.*? said: /, "")}` } : {}),
      ...(f.relay !== null ? { remoteMta: `dns; ${f.relay.replace(/\[.*$/, "")}` } : {}),
      lastAttemptAt: f.at,
      reason: f.verdict.reply,
    }
  })
  const ret = message.mailParams["RET"] === "FULL" ? "FULL" : "HDRS"
  const envid = message.mailParams["ENVID"]
  const body = buildNonDeliveryReport({
    reportingMta: opts.hostname,
    queueId: message.queueId,
    originalSender: message.sender,
    arrivalAt: message.arrivalTime,
    now: opts.now,
    ...(typeof envid === "string" ? { envelopeId: envid } : {}),
    ret,
    recipients,
    originalHeaders: extractHeaderSection(original),
    ...(ret === "FULL" ? { originalMessage: original } : {}),
    boundarySeed: `${opts.queueId}/${message.queueId}`,
  })
  return {
    message: {
      queueId: opts.queueId,
      arrivalTime: opts.now,
      sender: "",
      mailParams: {},
      client: { address: "127.0.0.1", helo: opts.hostname, hostname: "localhost" },
      recipients: [{ address: message.sender, params: {} }],
      size: body.length,
    },
    body,
  }
}
