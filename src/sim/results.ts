// What a policy run produced, read back from the production `attempts` table: one row per attempt, one
// row per recipient of the traffic (its fate and times), and the summary numbers. Pure over the rows;
// times are ms after the run's time 0.
import type { PolicyRun } from "./engine.js"
import type { SimMessage } from "./traffic.js"

export interface AttemptRow {
  readonly at: number
  /** The traffic message, or null for a message Postern made (a non-delivery report). */
  readonly message: number | null
  readonly queueId: string
  readonly recipient: string
  readonly destination: string
  readonly relay: string | null
  readonly attempt: number
  readonly outcome: string
  readonly dsn: string
  readonly reply: string
  readonly durationMs: number
}

export type FinalState = "delivered" | "bounced" | "expired" | "deferred" | "queued"

export interface RecipientRow {
  readonly message: number
  readonly queueId: string
  readonly recipient: string
  readonly domain: string
  readonly arrival: number
  readonly state: FinalState
  readonly attempts: number
  readonly firstAttempt: number | null
  /** When it was delivered, bounced or expired; null while it is still queued. */
  readonly finalAt: number | null
  readonly dsn: string
  readonly reply: string
}

export interface Percentiles {
  readonly p50: number
  readonly p90: number
  readonly p95: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

export interface PolicyResult {
  readonly run: PolicyRun
  readonly attempts: ReadonlyArray<AttemptRow>
  readonly recipients: ReadonlyArray<RecipientRow>
  readonly summary: PolicySummary
}

export interface PolicySummary {
  readonly config: Readonly<Record<string, unknown>>
  readonly messages: number
  readonly recipients: number
  readonly delivered: number
  readonly bounced: number
  readonly expired: number
  /** Still queued when the run ended: tried at least once / never tried. */
  readonly deferred: number
  readonly queued: number
  readonly deliveredShare: number
  /** Arrival to delivery, seconds, over delivered recipients (null when none was). */
  readonly latency: Percentiles | null
  /** Attempts (the attempts log, expiry rows aside) per recipient and, per message, its most tried recipient. */
  readonly attempts: number
  readonly attemptsPerRecipient: Percentiles | null
  readonly attemptsPerMessage: Percentiles | null
  readonly nonDeliveryReports: number
  readonly destinations: Readonly<Record<string, Readonly<Record<string, number>>>>
  readonly simulatedSeconds: number
  readonly ended: "idle" | "until"
  readonly engineErrors: number
}

/** Nearest-rank percentiles of `values` (sorted here), and the mean. */
export const percentiles = (values: ReadonlyArray<number>, scale = 1): Percentiles | null => {
  if (values.length === 0) return null
  const v = [...values].sort((a, b) => a - b)
  const at = (p: number) => v[Math.max(0, Math.ceil(p * v.length) - 1)]! / scale
  const mean = v.reduce((s, x) => s + x, 0) / v.length / scale
  return { p50: at(0.5), p90: at(0.9), p95: at(0.95), p99: at(0.99), max: v[v.length - 1]! / scale, mean: round(mean, 3) }
}

const round = (x: number, digits: number) => Number(x.toFixed(digits))

const domainOf = (a: string) => a.slice(a.lastIndexOf("@") + 1)

export const readAttempts = (run: PolicyRun, start: number): Array<AttemptRow> => {
  const rows = run.db
    .prepare(`SELECT at, queue_id, recipient, attempt, destination, relay, outcome, dsn, reply, duration_ms FROM attempts ORDER BY id`)
    .raw()
    .all() as Array<[number, string, string, number, string, string | null, string, string, string, number]>
  // One object per row, built once (hundreds of thousands of rows in a big run).
  const out: Array<AttemptRow> = new Array(rows.length)
  for (let i = 0; i < rows.length; i++) {
    const [at, queueId, recipient, attempt, destination, relay, outcome, dsn, reply, durationMs] = rows[i]!
    out[i] = { at: at - start, queueId, recipient, attempt, destination, relay, outcome, dsn, reply, durationMs, message: run.queueIds.get(queueId) ?? null }
  }
  return out
}

export const summarise = (run: PolicyRun, traffic: ReadonlyArray<SimMessage>, start: number): PolicyResult => {
  const attempts = readAttempts(run, start)
  const queueIdOf = new Map<number, string>()
  for (const [q, i] of run.queueIds) queueIdOf.set(i, q)
  const byRecipient = new Map<string, Array<AttemptRow>>()
  const reports = new Set<string>()
  for (const a of attempts) {
    if (a.message === null) {
      reports.add(a.queueId)
      continue
    }
    const key = `${a.queueId}\u0000${a.recipient}`
    const list = byRecipient.get(key)
    if (list === undefined) byRecipient.set(key, [a])
    else list.push(a)
  }
  // Messages still queued when the run ended may never have been tried.
  const recipients: Array<RecipientRow> = []
  const perMessage: Array<number> = []
  for (const m of traffic) {
    const queueId = queueIdOf.get(m.index) ?? ""
    let most = 0
    for (const recipient of m.recipients) {
      const rows = byRecipient.get(`${queueId}\u0000${recipient}`) ?? []
      const tries = rows.filter((r) => r.outcome !== "expired")
      const last = rows[rows.length - 1]
      const state: FinalState =
        last === undefined ? "queued" : last.outcome === "sent" ? "delivered" : last.outcome === "bounced" ? "bounced" : last.outcome === "expired" ? "expired" : "deferred"
      most = Math.max(most, tries.length)
      recipients.push({
        message: m.index,
        queueId,
        recipient,
        domain: domainOf(recipient),
        arrival: m.at,
        state,
        attempts: tries.length,
        firstAttempt: tries[0]?.at ?? null,
        finalAt: state === "deferred" || state === "queued" ? null : last!.at,
        dsn: last?.dsn ?? "",
        reply: last?.reply ?? "",
      })
    }
    perMessage.push(most)
  }
  const count = (s: FinalState) => recipients.filter((r) => r.state === s).length
  const delivered = recipients.filter((r) => r.state === "delivered")

  const destinations: Record<string, Record<string, number>> = {}
  for (const d of run.destinations) {
    const s = d.stats
    if (s.connections === 0) continue
    destinations[d.name] = {
      connections: s.connections,
      sessions: s.sessions,
      peakSessions: s.peakSessions,
      transactions: s.transactions,
      recipientsAccepted: s.recipientsAccepted,
      recipientsRejected: s.recipientsRejected,
    }
  }
  const summary: PolicySummary = {
    config: run.policy.overrides,
    messages: traffic.length,
    recipients: recipients.length,
    delivered: delivered.length,
    bounced: count("bounced"),
    expired: count("expired"),
    deferred: count("deferred"),
    queued: count("queued"),
    deliveredShare: recipients.length === 0 ? 0 : round(delivered.length / recipients.length, 6),
    latency: percentiles(delivered.map((r) => r.finalAt! - r.arrival), 1000),
    attempts: recipients.reduce((s, r) => s + r.attempts, 0),
    attemptsPerRecipient: percentiles(recipients.map((r) => r.attempts)),
    attemptsPerMessage: percentiles(perMessage),
    nonDeliveryReports: reports.size,
    destinations,
    simulatedSeconds: run.endedAt / 1000,
    ended: run.ended,
    engineErrors: run.errors.length,
  }
  return { run, attempts, recipients, summary }
}
