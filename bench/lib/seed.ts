// Seeds a Postern queue offline through Postern's own store code: openQueueForWriting(dir).db, then
// commitMessage for each message inside one transaction per batch (as the group commit does), and for a
// backlog rescheduleRecipient to push every recipient's next attempt into the coming hours. Deterministic:
// the same options give the same queue apart from the times.
import { openQueueForWriting } from "../../src/store/open.js"
import { BODY_CHUNK_BYTES, commitMessage, rescheduleRecipient } from "../../src/store/queue-store.js"
import type { NewMessage } from "../../src/store/types.js"
import { fmtInt, now, progress } from "./log.js"
import { buildMessage } from "./smtp-client.js"

export type SeedDue =
  /** Pending and due at arrival: a restarted Postern starts delivering them at once. */
  | { readonly kind: "now" }
  /** Next attempts spread evenly over [now + fromMs, now + toMs]: nothing comes due during a bench run. */
  | { readonly kind: "spread"; readonly fromMs: number; readonly toMs: number }

export interface SeedOptions {
  readonly dataDir: string
  readonly messages: number
  readonly recipientsPerMessage: number
  readonly bodySize: number
  readonly due: SeedDue
  readonly batch?: number
}

export interface SeedReport {
  readonly messages: number
  readonly recipients: number
  readonly seconds: number
  readonly bodyBytes: number
}

const chunksOf = (body: Buffer): Array<Buffer> => {
  const out: Array<Buffer> = []
  for (let off = 0; off < body.length; off += BODY_CHUNK_BYTES) out.push(body.subarray(off, off + BODY_CHUNK_BYTES))
  return out
}

export const seedQueue = (o: SeedOptions): SeedReport => {
  const t0 = now()
  const wall = Date.now()
  const body = buildMessage(o.bodySize, "seeded")
  const chunks = chunksOf(body)
  const total = o.messages * o.recipientsPerMessage
  const batch = o.batch ?? 2_000
  const q = openQueueForWriting(o.dataDir)
  try {
    const db = q.db
    const insertBatch = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) {
        // Arrivals spread over the past day, oldest first; ids unique and sortable like Postern's.
        const arrivalTime = wall - 86_400_000 + Math.floor((i / o.messages) * 86_400_000)
        const msg: NewMessage = {
          queueId: `SEED${i.toString(32).toUpperCase().padStart(10, "0")}`,
          arrivalTime,
          sender: `sender${i % 997}@source.test`,
          mailParams: { BODY: "8BITMIME" },
          client: { address: "127.0.0.1", helo: "seed.bench.test", hostname: "localhost" },
          recipients: Array.from({ length: o.recipientsPerMessage }, (_, j) => ({
            address: `user${(i * o.recipientsPerMessage + j) % 100_000}@d${(i + j) % 500}.backlog.test`,
            params: {},
          })),
          size: body.length,
        }
        const committed = commitMessage(db, msg, chunks, 0, null, false, 0)
        const due = o.due
        if (due.kind === "spread") {
          const span = due.toMs - due.fromMs
          committed.recipients.forEach((r, j) => {
            const k = i * o.recipientsPerMessage + j
            rescheduleRecipient(db, r.id, wall + due.fromMs + Math.floor((k / total) * span))
          })
        }
      }
    })
    let lastReport = now()
    for (let from = 0; from < o.messages; from += batch) {
      insertBatch(from, Math.min(o.messages, from + batch))
      if (now() - lastReport > 10_000) {
        lastReport = now()
        const done = Math.min(o.messages, from + batch)
        progress(`seeding ${o.dataDir}: ${fmtInt(done)}/${fmtInt(o.messages)} messages (${fmtInt(done / ((now() - t0) / 1000))}/s)`)
      }
    }
  } finally {
    q.close()
  }
  return { messages: o.messages, recipients: total, seconds: (now() - t0) / 1000, bodyBytes: body.length }
}
