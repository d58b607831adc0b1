// Postern's supervision tree, read like Postfix's master.cf: every kind of actor, who supervises it,
// how it is restarted, how often it may fail, and what happens past that. `startSystem` builds the tree
// from this table. Crash-only at the root: an escalation there exits the process non-zero, and the next
// start recovers from the database.
import type Database from "better-sqlite3"
import type { DurableSync } from "../store/wal-sync.js"
import type { PosternConfig } from "../config/types.js"
import type { RestartPolicy } from "../machines/supervisor.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import type { RngShape } from "../runtime/rng.js"
import { GroupCommitter, type GroupCommitOptions } from "../store/group-commit.js"
import { makeQueueIdGenerator } from "../store/queue-id.js"
import { recover, type RecoveryReport } from "../store/recovery.js"
import type { DnsTable, ResolverShape } from "../transport/dns.js"
import { readBody } from "../store/queue-store.js"
import { AttemptPruner } from "./attempt-pruner.js"
import { DeliveryPool, deliveryThreadOf } from "./delivery-pool.js"
import type { Connector } from "../transport/smtp-session.js"
import type { DeliveryOutput } from "../machines/delivery.js"
import { DeliveryAgent, type DeliveryRequest } from "./delivery.js"
import type { FaultHooks } from "./fault-hooks.js"
import { QueueManager } from "./qmgr.js"
import { Smtpd } from "./smtpd.js"
import { startControlServer } from "../control/server.js"

/** What the queue manager needs of its delivery agents, in this thread or on another core. */
export interface DeliveryAgents {
  deliver(request: DeliveryRequest): Promise<DeliveryOutput>
  cancel(requestId: string, reason: string): void
  abortAll(): void | Promise<void>
  inFlight(): number
}

export type Restart = "permanent" | "temporary"
export type Strategy = "one-for-one" | "one-for-all" | "rest-for-one"

export interface ServiceRow {
  readonly service: string
  readonly parent: string
  readonly restart: Restart
  readonly strategy: Strategy
  readonly policy: RestartPolicy
  /** What happens past the restart intensity. */
  readonly onLimit: "escalate" | "exit"
  readonly note: string
}

const s = (ms: number) => ms * 1000
//                                                   max restarts   within    backoff   max backoff
const policy = (maxRestarts: number, withinMs: number, backoffMs: number, maxBackoffMs: number): RestartPolicy => ({
  maxRestarts,
  withinMs,
  backoffMs,
  maxBackoffMs,
})

/** The table. Order matters for rest-for-one: a row depends on the rows above it. */
export const SYSTEM: ReadonlyArray<ServiceRow> = [
  { service: "store",       parent: "root",        restart: "permanent", strategy: "one-for-all",  policy: policy(0, s(60), 0, 0),        onLimit: "exit",     note: "the one writer (group commit); a failure here exits: recovery rebuilds from the database" },
  { service: "qmgr",        parent: "root",        restart: "permanent", strategy: "rest-for-one", policy: policy(0, s(60), 0, 0),        onLimit: "exit",     note: "active window and due timer; its state is the store's, so a restart is a process restart" },
  { service: "destination", parent: "qmgr",        restart: "permanent", strategy: "one-for-one",  policy: policy(5, s(60), 100, s(5)),   onLimit: "escalate", note: "one per (service, nexthop); restarted with the initial window, queued requests kept" },
  { service: "delivery-thread", parent: "qmgr",    restart: "permanent", strategy: "one-for-one",  policy: policy(5, s(60), 200, s(10)), onLimit: "escalate", note: "the thread running the delivery agents; on death its deliveries in flight are deferred, it is restarted" },
  { service: "delivery",    parent: "destination", restart: "temporary", strategy: "one-for-one",  policy: policy(0, s(60), 0, 0),        onLimit: "escalate", note: "one per attempt; never restarted: its recipients are deferred and retried (predecessor backs off)" },
  { service: "message",     parent: "qmgr",        restart: "temporary", strategy: "one-for-one",  policy: policy(0, s(60), 0, 0),        onLimit: "escalate", note: "one per active message (its machine hosted by qmgr, hosted-machine.ts; none when its destinations are dead); on failure its recipients return to the queue (recovery on next scan)" },
  { service: "smtpd",       parent: "root",        restart: "permanent", strategy: "one-for-one",  policy: policy(5, s(60), s(1), s(30)), onLimit: "exit",     note: "one listener per listen entry" },
  { service: "session",     parent: "smtpd",       restart: "temporary", strategy: "one-for-one",  policy: policy(0, s(60), 0, 0),        onLimit: "escalate", note: "one per connection; a failed session is dropped, the client retries (nothing was acknowledged)" },
]

export const row = (service: string): ServiceRow => {
  const r = SYSTEM.find((x) => x.service === service)
  if (r === undefined) throw new Error(`no supervision row for ${service}`)
  return r
}

export interface SystemDeps {
  readonly config: () => PosternConfig
  readonly db: Database.Database
  /** Makes commits durable before anyone hears of them (the WAL's fsync, src/store/wal-sync.ts). */
  readonly durable?: DurableSync
  readonly clock: ClockShape
  readonly rng: RngShape
  readonly dns: ResolverShape
  readonly log: Logger
  /** The root's answer to an escalation: Postern exits non-zero (crash-only). */
  readonly exit: (code: number, reason: unknown) => void
  /** Test-only fault hook for delivery agents. */
  readonly deliveryFault?: (request: DeliveryRequest) => void | Promise<void>
  /** Test-only: exceptions thrown inside the session, message, destination or delivery actors (fault-hooks.ts). */
  readonly faultHooks?: FaultHooks
  /** How outbound sessions are opened (default: real SMTP); the simulator models destinations here. */
  readonly connector?: Connector
  /** The DNS table behind `dns`, when it is one: the delivery thread cannot be handed functions. */
  readonly dnsTable?: DnsTable
  /** The data folder, where the control socket for `postern queue flush|list` listens; none when absent. */
  readonly controlDir?: string
  /** Group-commit timing (default DEFAULT_GROUP_COMMIT); the simulator flushes by hand on virtual time. */
  readonly groupCommit?: GroupCommitOptions
}

export interface RunningSystem {
  readonly committer: GroupCommitter
  readonly qmgr: QueueManager
  readonly smtpd: Smtpd
  readonly agent: DeliveryAgents
  readonly recovery: RecoveryReport
  readonly listening: ReadonlyArray<{ host: string; port: number }>
  /** Graceful stop: no new mail, in-flight deliveries get up to `graceMs`, then everything closes. */
  readonly stop: (graceMs: number) => Promise<void>
}

/** The queue engine without the SMTP server: what `postern start` and `postern simulate` both run. */
export interface Engine {
  readonly committer: GroupCommitter
  readonly qmgr: QueueManager
  readonly agent: DeliveryAgents
  readonly newQueueId: () => string
  readonly recovery: RecoveryReport
  /** Deletes attempts-log rows past attemptLogRetention once started (`postern start` starts it; the simulator never does). */
  readonly pruner: AttemptPruner
}

export type EngineDeps = Omit<SystemDeps, "controlDir">

/** Recovers the queue and builds the committer, the delivery agents and the queue manager (not started). */
export const startEngine = (deps: EngineDeps): Engine => {
  const recovery = recover(deps.db)
  deps.log.info({ actor: "store", ...recovery }, "queue recovered")
  const committer = new GroupCommitter(deps.db, deps.groupCommit, deps.durable)
  const newQueueId = makeQueueIdGenerator(deps.clock, deps.rng)
  // Delivery agents run on a second core when there is one to spare (see deliveryThreadOf), or where
  // told; never when something only this thread can give them is needed (a test's fault hook, the
  // simulator's modelled connector).
  const inWorker =
    deliveryThreadOf(deps.config().deliveryThread) === "worker" &&
    deps.deliveryFault === undefined &&
    deps.faultHooks?.delivery === undefined &&
    deps.connector === undefined
  const agent: DeliveryAgents = inWorker
    ? new DeliveryPool({
        config: deps.config,
        clock: deps.clock,
        log: deps.log,
        seed: Math.floor(deps.rng.next() * 2 ** 32),
        dnsTable: deps.dnsTable ?? null,
        policy: row("delivery-thread").policy,
        escalate: (err) => deps.exit(70, err),
        bodyBytes: (r) => readBody(deps.db, r.message.id),
      })
    : new DeliveryAgent({
        config: deps.config,
        clock: deps.clock,
        rng: deps.rng,
        dns: deps.dns,
        log: deps.log,
        ...(deps.deliveryFault !== undefined ? { faultHook: deps.deliveryFault } : {}),
        actorFault: deps.faultHooks?.delivery,
        ...(deps.connector !== undefined ? { connector: deps.connector } : {}),
      })
  const qmgr = new QueueManager({
    config: deps.config,
    db: deps.db,
    committer,
    clock: deps.clock,
    rng: deps.rng,
    dns: deps.dns,
    log: deps.log,
    newQueueId,
    deliver: (r) => agent.deliver(r),
    cancel: (id, reason) => agent.cancel(id, reason),
    destinationPolicy: row("destination").policy,
    escalate: (err) => deps.exit(70, err),
    faultHooks: deps.faultHooks,
  })
  const pruner = new AttemptPruner({ config: deps.config, committer, clock: deps.clock, log: deps.log })
  return { committer, qmgr, agent, newQueueId, recovery, pruner }
}

export const startSystem = async (deps: SystemDeps): Promise<RunningSystem> => {
  const { committer, qmgr, agent, newQueueId, recovery, pruner } = startEngine(deps)
  const smtpd = new Smtpd({
    config: deps.config,
    committer,
    clock: deps.clock,
    log: deps.log,
    dns: deps.dns,
    newQueueId,
    qmgr,
    faultHook: deps.faultHooks?.session,
  })
  // Group commit waits for company only when another client is connected: a lone client gets its commit
  // on the next turn, a crowd shares fsyncs. (Waiting only for clients in the middle of DATA was tried:
  // with 20 busy clients the smaller batches cost more CPU than the shorter wait gave back.)
  committer.expectCompany = () => smtpd.sessionCount() > 1
  // Listen first: every second down is mail turned away. The due scan runs right after.
  const listening = await smtpd.listen()
  // The delivery thread boots while the listener already takes mail; the queue starts once it can deliver.
  if (agent instanceof DeliveryPool) await agent.ready()
  qmgr.start()
  pruner.start()
  const control =
    deps.controlDir === undefined
      ? null
      : await startControlServer(
          deps.controlDir,
          {
            flush: (destination) => qmgr.flush(destination),
            status: () => ({
              ok: true,
              destinations: qmgr.destinationStates().map((d) => ({
                key: d.key,
                state: d.state,
                queued: d.queued,
                ...(d.state === "dead"
                  ? { deadUntil: d.deadUntil, ...(d.reason !== null ? { reason: d.reason } : {}) }
                  : d.state === "rate-delayed"
                    ? { rateDelayedUntil: d.until }
                    : { window: d.window, busy: d.busy }),
              })),
            }),
          },
          deps.log,
        ).catch((err: unknown) => {
          // Mail flows without it; only `postern queue flush` and live destination states need it.
          deps.log.error({ actor: "control", err }, "control socket unavailable (is the dataDir path too long for a Unix socket?)")
          return null
        })
  deps.log.info({ actor: "system", listening, deliveryThread: agent instanceof DeliveryPool ? "worker" : "main" }, "postern is running")
  return {
    committer,
    qmgr,
    smtpd,
    agent,
    recovery,
    listening,
    stop: async (graceMs) => {
      pruner.stop()
      control?.close()
      const closing = smtpd.close()
      await qmgr.stop(graceMs)
      await agent.abortAll()
      committer.close()
      deps.log.warn({ actor: "store", ...committer.stats() }, "group commit totals since start")
      await Promise.race([closing, new Promise((r) => setTimeout(r, 1000))])
    },
  }
}
