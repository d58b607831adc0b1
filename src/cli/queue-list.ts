// `postern queue list [--json]`: the queue as a second reader on the WAL database, while Postern runs.
// --json prints one object per message per line (like `postqueue -j`), with Postfix's field names plus,
// per recipient, next_attempt_time (epoch seconds) and attempts. Data on stdout only.
import type { DestinationState } from "../control/protocol.js"
import { openQueueForReading } from "../store/open.js"
import { listQueue, type QueueListingEntry } from "../store/queue-store.js"

/** What an operator reads for "why does it wait": active, dead until <time>, or not held right now. */
const describeState = (d: DestinationState | undefined): string | undefined => {
  if (d === undefined) return undefined
  if (d.state === "dead") return `dead until ${new Date(d.deadUntil ?? 0).toISOString()}`
  if (d.state === "rate-delayed") return `rate-delayed until ${new Date(d.rateDelayedUntil ?? 0).toISOString()}`
  return "active"
}

export const toJson = (m: QueueListingEntry, states: ReadonlyMap<string, DestinationState> = new Map()) => ({
  queue_name: m.queueName,
  queue_id: m.queueId,
  arrival_time: Math.floor(m.arrivalTime / 1000),
  message_size: m.size,
  forced_expire: false,
  sender: m.sender,
  recipients: m.recipients.map((r) => ({
    address: r.address,
    ...(r.delayReason !== null ? { delay_reason: r.delayReason } : {}),
    next_attempt_time: Math.floor(r.nextAttemptAt / 1000),
    attempts: r.attempts,
    ...(r.destination !== null ? { destination: r.destination } : {}),
    ...(r.destination !== null && states.has(r.destination) ? { destination_state: describeState(states.get(r.destination)) } : {}),
  })),
})

const mailqLine = (m: QueueListingEntry, states: ReadonlyMap<string, DestinationState>): string => {
  const mark = m.queueName === "active" ? "*" : m.queueName === "hold" ? "!" : " "
  const when = new Date(m.arrivalTime).toUTCString().slice(0, 22)
  const head = `${(m.queueId + mark).padEnd(18)} ${String(m.size).padStart(8)} ${when}  ${m.sender || "MAILER-DAEMON"}`
  const lines = [head]
  const reasons = new Set<string>()
  for (const r of m.recipients) {
    if (r.delayReason !== null && !reasons.has(r.delayReason)) {
      reasons.add(r.delayReason)
      const state = r.destination !== null ? describeState(states.get(r.destination)) : undefined
      lines.push(`(${r.delayReason})${state !== undefined && state !== "active" ? ` [${r.destination}: ${state}]` : ""}`)
    }
    lines.push(`${" ".repeat(40)} ${r.address}`)
  }
  return lines.join("\n")
}

export const queueList = (
  dataDir: string,
  json: boolean,
  out: NodeJS.WritableStream = process.stdout,
  states: ReadonlyMap<string, DestinationState> = new Map(),
): number => {
  const db = openQueueForReading(dataDir)
  try {
    let n = 0
    let rcpts = 0
    for (const m of listQueue(db)) {
      n++
      rcpts += m.recipients.length
      out.write(json ? `${JSON.stringify(toJson(m, states))}\n` : `${mailqLine(m, states)}\n\n`)
    }
    if (!json) out.write(n === 0 ? "Mail queue is empty\n" : `-- ${n} message${n === 1 ? "" : "s"}, ${rcpts} recipient${rcpts === 1 ? "" : "s"}\n`)
    return n
  } finally {
    db.close()
  }
}
