// `postern queue flush [--destination D]` (Postfix's postqueue -f / -s): asks the running Postern to
// clear its dead marks and make deferred mail due now. With no Postern running, the store is updated
// directly, and the mail goes at the next start. Also: the live destination states for `queue list`.
import { askPostern } from "../control/client.js"
import { Clock } from "../runtime/clock.js"
import type { DestinationState } from "../control/protocol.js"
import { openQueueForWriting } from "../store/open.js"
import { flushDeferred } from "../store/queue-store.js"

export const queueFlush = async (dataDir: string, destination: string | undefined): Promise<void> => {
  const what = destination === undefined ? "all deferred mail" : `deferred mail for ${destination}`
  try {
    const reply = await askPostern(dataDir, destination === undefined ? { command: "flush" } : { command: "flush", destination })
    if (reply === null) {
      const q = openQueueForWriting(dataDir)
      try {
        const n = q.db.transaction(() => flushDeferred(q.db, Clock.system.now(), destination))()
        process.stderr.write(`postern: Postern is not running; ${what} (${n} recipients) will be tried at its next start\n`)
      } finally {
        q.close()
      }
      return
    }
    if (!reply.ok) throw new Error(reply.error)
    process.stderr.write(`postern: ${what}: ${reply.flushed ?? 0} recipients due now, dead destinations cleared\n`)
  } catch (e) {
    process.stderr.write(`postern: queue flush failed: ${(e as Error).message}\n`)
    process.exit(69)
  }
}

/** The running Postern's destination states by key; empty when it is not running or does not answer. */
export const liveDestinationStates = async (dataDir: string): Promise<ReadonlyMap<string, DestinationState>> => {
  try {
    const reply = await askPostern(dataDir, { command: "status" }, 3_000)
    if (reply === null || !reply.ok) return new Map()
    return new Map((reply.destinations ?? []).map((d) => [d.key, d]))
  } catch {
    return new Map()
  }
}
