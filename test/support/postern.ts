// Starts a real Postern in this process for integration tests: a real SQLite file in a temporary data
// folder, real sockets on 127.0.0.1 (an ephemeral port), the production supervision tree, a DNS table
// instead of the network, and a silent logger.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { pino } from "pino"
import { decodeConfig } from "../../src/config/index.js"
import type { PosternConfig } from "../../src/config/types.js"
import { startSystem, type RunningSystem } from "../../src/actors/system.js"
import type { GroupCommitOptions } from "../../src/store/group-commit.js"
import type { DurableSync } from "../../src/store/wal-sync.js"
import { Clock } from "../../src/runtime/clock.js"
import { makeLogger, silentLogger, type Logger } from "../../src/runtime/log.js"
import { seededRng } from "../../src/runtime/rng.js"
import { openQueueForWriting, type OpenedQueue } from "../../src/store/open.js"
import { tableResolver, type DnsTable } from "../../src/transport/dns.js"
import type { DeliveryRequest } from "../../src/actors/delivery.js"
import type { FaultHooks } from "../../src/actors/fault-hooks.js"

export interface TestPostern {
  readonly port: number
  readonly config: PosternConfig
  readonly system: RunningSystem
  readonly queue: OpenedQueue
  readonly dataDir: string
  close(): Promise<void>
}

export const tempDir = (prefix = "postern-test-"): string => mkdtempSync(join(tmpdir(), prefix))

export async function startPostern(
  overrides: Record<string, unknown> = {},
  opts: {
    dataDir?: string
    deliveryFault?: (r: DeliveryRequest) => void | Promise<void>
    exit?: (code: number, reason: unknown) => void
    /** DNS answers for this Postern (default: an empty table, so every name is NXDOMAIN; never real DNS). */
    dns?: DnsTable
    /** Exceptions thrown inside the engine's actors (src/actors/fault-hooks.ts). */
    faultHooks?: FaultHooks
    /** Where Postern logs (default: silent, or POSTERN_TEST_LOG's level on stderr). */
    log?: Logger
    /** Wraps the queue's durability sync (the WAL's fsync), e.g. to hold it back and watch who waits. */
    durable?: (sync: DurableSync) => DurableSync
    /** Group-commit timing other than the production defaults (e.g. a long window, to watch who waits). */
    groupCommit?: GroupCommitOptions
  } = {},
): Promise<TestPostern> {
  const dataDir = opts.dataDir ?? tempDir()
  const config = decodeConfig(
    {
      hostname: "postern.test",
      dataDir,
      listen: [{ address: "127.0.0.1:0", greetWait: "0s" }],
      // The delivery thread is what most tests go through, whatever auto picks on this host; tests of the
      // main-thread path say so (and the simulator always takes it).
      deliveryThread: "worker",
      ...overrides,
    },
    dataDir,
  )
  const queue = openQueueForWriting(config.dataDir)
  const system = await startSystem({
    config: () => config,
    db: queue.db,
    durable: opts.durable !== undefined ? opts.durable(queue.sync) : queue.sync,
    controlDir: queue.dataDir,
    clock: Clock.system,
    rng: seededRng(42),
    dns: tableResolver(opts.dns ?? {}),
    dnsTable: opts.dns ?? {},
    // POSTERN_TEST_LOG=debug shows Postern's own log lines while a test runs.
    log: opts.log ?? (process.env["POSTERN_TEST_LOG"] ? makeLogger(process.env["POSTERN_TEST_LOG"], 2) : silentLogger()),
    exit: opts.exit ?? ((code, reason) => {
      throw new Error(`postern escalated to the root (exit ${code}): ${String(reason)}`)
    }),
    ...(opts.deliveryFault !== undefined ? { deliveryFault: opts.deliveryFault } : {}),
    ...(opts.faultHooks !== undefined ? { faultHooks: opts.faultHooks } : {}),
    ...(opts.groupCommit !== undefined ? { groupCommit: opts.groupCommit } : {}),
  })
  return {
    port: system.listening[0]!.port,
    config,
    system,
    queue,
    dataDir,
    close: async () => {
      await system.stop(2000)
      queue.close()
      if (opts.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

export const waitFor = async (what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** A logger that keeps every line (parsed pino JSON) for a test to look at. */
export const captureLog = (level = "info"): { log: Logger; lines: Array<Record<string, unknown>> } => {
  const lines: Array<Record<string, unknown>> = []
  const log = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) })
  return { log, lines }
}
