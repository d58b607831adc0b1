// The end of a chaos or soak run: wait (bounded) until every acknowledged recipient has arrived at a
// receiver and Postern's queue is empty, and say what is still missing.
import { waitUntil } from "./args.js"
import type { Ledger } from "./ledger.js"
import type { Load } from "./load.js"
import { queueCounts, type QueueCounts } from "./queue-db.js"

/** Acknowledged recipients no receiver has seen yet. */
export const missingOf = (load: Load, ledger: Ledger): Array<string> => [...load.ackedAddresses.keys()].filter((a) => !ledger.has(a))

export interface Drain {
  readonly drained: boolean
  readonly missing: Array<string>
  readonly counts: QueueCounts
}

export const waitForDrain = async (load: Load, ledger: Ledger, dataDir: string, timeoutMs: number, everyMs: number): Promise<Drain> => {
  let missing: Array<string> = []
  let counts: QueueCounts = { messages: 0, recipients: 0, queuedRecipients: 0 }
  const drained = await waitUntil(
    () => {
      ledger.collect()
      missing = missingOf(load, ledger)
      try {
        counts = queueCounts(dataDir)
      } catch {
        return false // the database is busy: look again
      }
      return missing.length === 0 && counts.recipients === 0
    },
    timeoutMs,
    everyMs,
  )
  return { drained, missing, counts }
}
