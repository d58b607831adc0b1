// Everything the harness starts registers how to stop it here. On normal completion each owner stops its
// own resources; on an error, SIGINT or SIGTERM every registered cleanup runs (newest first, each bounded
// in time) before the harness exits, so no MTA, sink, client or data folder is left behind.
import { progress, warn } from "./log.js"

type CleanupFn = () => Promise<void> | void

interface Entry {
  readonly label: string
  readonly fn: CleanupFn
}

const entries = new Map<number, Entry>()
let nextId = 1
let running: Promise<void> | null = null

/** Registers a cleanup; the returned function unregisters it (call it once the resource is stopped). */
export const onCleanup = (label: string, fn: CleanupFn): (() => void) => {
  const id = nextId++
  entries.set(id, { label, fn })
  return () => {
    entries.delete(id)
  }
}

const withTimeout = async (p: Promise<void> | void, ms: number, label: string): Promise<void> => {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      Promise.resolve(p),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          warn(`cleanup "${label}" took more than ${ms / 1000}s; moving on`)
          resolve()
        }, ms)
      }),
    ])
  } finally {
    if (timer !== undefined) clearTimeout(timer)
  }
}

/** Runs every registered cleanup, newest first. Safe to call more than once. */
export const runCleanups = (): Promise<void> => {
  if (running !== null) return running
  running = (async () => {
    const list = [...entries.entries()].reverse()
    entries.clear()
    for (const [, e] of list) {
      try {
        await withTimeout(e.fn(), 30_000, e.label)
      } catch (err) {
        warn(`cleanup "${e.label}" failed: ${(err as Error).message}`)
      }
    }
  })()
  return running
}

/** SIGINT/SIGTERM (exit 130/143) and crashes (exit 1): stop what we started first. */
export const installSignalHandlers = (): void => {
  let interrupted = false
  const handler = (signal: NodeJS.Signals) => {
    if (interrupted) {
      warn(`${signal} again: exiting without waiting for cleanups`)
      process.exit(signal === "SIGINT" ? 130 : 143)
    }
    interrupted = true
    progress(`${signal}: stopping everything the bench started`)
    void runCleanups().finally(() => process.exit(signal === "SIGINT" ? 130 : 143))
  }
  process.on("SIGINT", handler)
  process.on("SIGTERM", handler)
  const crash = (what: string) => (err: unknown) => {
    process.stderr.write(`bench: ${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    void runCleanups().finally(() => process.exit(1))
  }
  process.on("uncaughtException", crash("uncaught exception"))
  process.on("unhandledRejection", crash("unhandled rejection"))
}
