// Postfix's SMTP client failure policy (smtp_trouble.c), as pure functions: what each failure at each
// stage means for each recipient, whether the next server may be tried, and whether the failure counts
// against the whole destination (negative concurrency feedback) or is positive feedback.

/** Where an attempt on one server ended, as the SMTP client saw it. */
export type AttemptResult =
  /** We decided against sending (e.g. the message needs SMTPUTF8 and the server lacks it). */
  | { readonly stage: "local"; readonly dsn: string; readonly reason: string; readonly permanent: boolean }
  | { readonly stage: "connect"; readonly reason: string }
  | { readonly stage: "greeting"; readonly reply: string }
  /**
   * TLS could not be had as the policy requires (not offered, refused, handshake failed, certificate not
   * verified). `handshake` marks a failed handshake, which the `may` level retries in plaintext.
   */
  | { readonly stage: "tls"; readonly dsn: string; readonly reason: string; readonly handshake: boolean }
  | { readonly stage: "io"; readonly reason: string; readonly sessionCompleted: boolean }
  | { readonly stage: "mail"; readonly reply: string }
  | { readonly stage: "data"; readonly reply: string; readonly accepted: ReadonlyArray<string>; readonly rejected: ReadonlyArray<RcptRejection> }
  | {
      readonly stage: "done"
      readonly reply: string
      readonly accepted: ReadonlyArray<string>
      readonly rejected: ReadonlyArray<RcptRejection>
      /** LMTP: the server's own reply after DATA for each recipient it accepted at RCPT (2xx, 4xx or 5xx). */
      readonly perRecipient?: ReadonlyArray<{ readonly address: string; readonly reply: string }>
    }

export interface RcptRejection {
  readonly address: string
  readonly reply: string
}

export type Verdict = "sent" | "deferred" | "bounced"

export interface RecipientVerdict {
  readonly verdict: Verdict
  readonly dsn: string
  readonly reply: string
  /** The reply came from the remote server (vs our own description of a failure). */
  readonly remote: boolean
}

export interface Classification {
  /** Final verdicts, by address. */
  readonly verdicts: ReadonlyMap<string, RecipientVerdict>
  /** Recipients to try again on the next server of this nexthop (only when one is left). */
  readonly tryNextServer: ReadonlyArray<string>
  /** The whole destination failed (negative feedback), not just one message or recipient. */
  readonly siteFailure: boolean
}

export const replyCode = (reply: string): number => {
  const m = /^(\d{3})/.exec(reply)
  return m === null ? 0 : Number(m[1])
}

/** The enhanced status code of a reply, or one derived from its basic code (550 → 5.0.0). */
export const enhancedCode = (reply: string): string => {
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply)
  if (m !== null) return m[1]!
  const code = replyCode(reply)
  return code >= 500 ? "5.0.0" : code >= 400 ? "4.0.0" : "2.0.0"
}

/** One line, printable: replies may span lines; logs and DSNs want one. */
export const oneLine = (text: string): string => text.replace(/\r?\n/g, " ").replace(/\s+/g, " ").trim()

const remoteVerdict = (reply: string, forceTemp = false): RecipientVerdict => {
  const code = replyCode(reply)
  const permanent = code >= 500 && !forceTemp
  let dsn = enhancedCode(reply)
  if (!permanent && dsn.startsWith("5")) dsn = `4${dsn.slice(1)}`
  return { verdict: permanent ? "bounced" : "deferred", dsn, reply: oneLine(reply), remote: true }
}

const localDeferral = (dsn: string, reason: string): RecipientVerdict => ({ verdict: "deferred", dsn, reply: reason, remote: false })

/**
 * Classifies the result of one attempt on one server for the given recipients.
 * `finalServer` is true when no other server of the nexthop is left to try.
 */
export const classifyAttempt = (
  result: AttemptResult,
  recipients: ReadonlyArray<string>,
  finalServer: boolean,
  serverName: string,
): Classification => {
  const verdicts = new Map<string, RecipientVerdict>()
  const all = (v: RecipientVerdict) => {
    for (const r of recipients) verdicts.set(r, v)
  }
  const nextOrDefer = (v: RecipientVerdict, site: boolean): Classification => {
    if (!finalServer) return { verdicts, tryNextServer: recipients, siteFailure: false }
    all(v)
    return { verdicts, tryNextServer: [], siteFailure: site }
  }
  switch (result.stage) {
    case "local":
      all({ verdict: result.permanent ? "bounced" : "deferred", dsn: result.dsn, reply: result.reason, remote: false })
      return { verdicts, tryNextServer: [], siteFailure: false }
    case "connect":
      return nextOrDefer(localDeferral("4.4.1", `connect to ${serverName}: ${result.reason}`), true)
    case "greeting":
      // A 5xx greeting is treated as 4xx (smtp_skip_5xx_greeting = yes): the next server is tried.
      return nextOrDefer(
        { ...remoteVerdict(result.reply, true), reply: `host ${serverName} refused to talk to me: ${oneLine(result.reply)}` },
        true,
      )
    case "tls":
      // Postfix's smtp_site_fail: the next server is tried; on the last one it defers, and the whole
      // destination failed (unless a session completed earlier in this request, see the delivery machine).
      return nextOrDefer(localDeferral(result.dsn, result.reason), true)
    case "io":
      return nextOrDefer(localDeferral("4.4.2", `lost connection with ${serverName}: ${result.reason}`), !result.sessionCompleted)
    case "mail": {
      const v = remoteVerdict(result.reply)
      if (v.verdict === "deferred") return nextOrDefer({ ...v, reply: `host ${serverName} said: ${v.reply}` }, false)
      all({ ...v, reply: `host ${serverName} said: ${v.reply}` })
      return { verdicts, tryNextServer: [], siteFailure: false }
    }
    case "data":
    case "done": {
      const next: Array<string> = []
      for (const r of result.rejected) {
        const v = remoteVerdict(r.reply)
        if (v.verdict === "deferred" && !finalServer) next.push(r.address)
        else verdicts.set(r.address, { ...v, reply: `host ${serverName} said: ${v.reply} (in reply to RCPT TO command)` })
      }
      if (result.stage === "data") {
        const v = remoteVerdict(result.reply)
        for (const a of result.accepted) {
          if (v.verdict === "deferred" && !finalServer) next.push(a)
          else verdicts.set(a, { ...v, reply: `host ${serverName} said: ${v.reply} (in reply to end of DATA command)` })
        }
      } else {
        const lmtp = new Map(result.perRecipient?.map((p) => [p.address, p.reply]))
        for (const a of result.accepted) {
          const reply = lmtp.get(a) ?? result.reply
          const code = replyCode(reply)
          if (code >= 200 && code < 300) {
            verdicts.set(a, { verdict: "sent", dsn: enhancedCode(reply), reply: `${serverName} said: ${oneLine(reply)}`, remote: true })
          } else {
            const v = remoteVerdict(reply)
            const after = lmtp.has(a) ? " (in reply to end of DATA command)" : ""
            if (v.verdict === "deferred" && !finalServer) next.push(a)
            else verdicts.set(a, { ...v, reply: `host ${serverName} said: ${v.reply}${after}` })
          }
        }
      }
      return { verdicts, tryNextServer: next, siteFailure: false }
    }
  }
}
