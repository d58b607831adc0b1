// The queue manager (Postfix's qmgr): owns the active window. Fresh mail arrives from smtpd already
// committed and in memory; deferred mail comes back when its next attempt is due, driven by one timer
// armed at the earliest due time in the store (no periodic scan). Each message is a message actor; its
// recipients are routed from the current config, grouped into delivery requests per destination, and
// handed to one destination queue per (service, nexthop), or per site / MX host set when the nexthop's
// MX hosts roll it up with others (mx-rollup.ts). Outcomes are committed through the group committer;
// bounces become new messages in the same transaction. Memory is bounded by recipients, not only
// messages: at most qmgrMessageRecipientLimit recipients are held over all active messages (each may
// always hold qmgrMessageRecipientMinimum); the rest of a message is read in batches as it goes.
import type { PosternConfig } from "../config/types.js"
import type { DeliveryOutput } from "../machines/delivery.js"
import { parseFeedback } from "../machines/feedback.js"
import { decide, isExpired, messageMachine, type MessageDecision, type RetryPolicy } from "../machines/message.js"
import type { RestartPolicy } from "../machines/supervisor.js"
import type { ClockShape } from "../runtime/clock.js"
import type { RngShape } from "../runtime/rng.js"
import type { Logger } from "../runtime/log.js"
import type { GroupCommitter } from "../store/group-commit.js"
import * as q from "../store/queue-store.js"
import type Database from "better-sqlite3"
import type { ActiveMessage, QueuedRecipient, RecipientOutcomeKind } from "../store/types.js"
import { resolveRoute, type Route } from "../transport/route.js"
import type { ResolverShape } from "../transport/dns.js"
import type { RecipientVerdict } from "../transport/smtp-outcome.js"
import { makeBounce, type Failed } from "./bounce.js"
import { CheckedBodies } from "./checked-bodies.js"
import { readableFromChunks, type DeliveryRequest } from "./delivery.js"
import { DestinationQueue, type DestinationStatus } from "./destination.js"
import { logActorFailure } from "./failure-log.js"
import { HostedMachine } from "./hosted-machine.js"
import { withFaultHook, type FaultHooks } from "./fault-hooks.js"
import { MxRollup } from "./mx-rollup.js"

export interface QmgrDeps {
  readonly config: () => PosternConfig
  readonly db: Database.Database
  readonly committer: GroupCommitter
  readonly clock: ClockShape
  /** Seeded chance: the retry jitter. */
  readonly rng: RngShape
  /** The resolver the delivery agents use: MX answers decide which queue a destination's mail shares. */
  readonly dns: ResolverShape
  readonly log: Logger
  readonly newQueueId: () => string
  readonly deliver: (request: DeliveryRequest) => Promise<DeliveryOutput>
  /** Ends a delivery in flight now (its lease expired); its promise resolves with its recipients deferred. */
  readonly cancel: (requestId: string, reason: string) => void
  readonly destinationPolicy: RestartPolicy
  /** A destination past its restart intensity: the root decides. */
  readonly escalate: (error: unknown) => void
  /** Test-only: see fault-hooks.ts. */
  readonly faultHooks?: Pick<FaultHooks, "message" | "destination"> | undefined
}

/** Messages loaded per scan of the due index. */
const SCAN_BATCH = 1_000
const MAX_TIMER_MS = 2 ** 31 - 1
/** An idle destination queue is kept this long (its window and feedback with it) before it is dropped. */
const DESTINATION_KEEP_MS = 5 * 60_000
/** Past this many destination queues held, idle ones are dropped at once. */
const CROWDED_DESTINATIONS = 10_000

const retryPolicyOf = (config: PosternConfig): RetryPolicy => ({
  minimalBackoffTime: config.minimalBackoffTime,
  maximalBackoffTime: config.maximalBackoffTime,
  backoffJitter: config.backoffJitter,
  maximalQueueLifetime: config.maximalQueueLifetime,
  bounceQueueLifetime: config.bounceQueueLifetime,
})

/** Recipients of one message for one destination; its route, or its promise while the MX answer is looked up. */
interface RouteGroup {
  readonly route: Route | Promise<Route>
  readonly recipients: ReadonlyArray<QueuedRecipient>
}

/** A group whose route is known. */
type RoutedGroup = RouteGroup & { readonly route: Route }

interface ActiveEntry {
  /** The message, with the first batch of its recipients. */
  readonly message: ActiveMessage
  /** The message's machine; null for a message settled at once (every recipient's destination was suspended). */
  actor: HostedMachine<typeof messageMachine> | null
  /** Recipients read into memory whose outcome is not known yet. */
  readonly byId: Map<number, QueuedRecipient>
  readonly failed: Array<Failed>
  readonly deferred: Map<number, { recipient: QueuedRecipient; verdict: RecipientVerdict; destination: string; relay: string | null }>
  /** The highest recipient id read from the store: the next batch starts after it. */
  cursor: number
  /** A batch read is under way. */
  reading: boolean
  /** Outcome writes the store refused (disk full, I/O): replayed first in the message's settle commit. */
  readonly unwritten: Array<q.StoreWrite>
  released: boolean
}

export class QueueManager {
  private readonly active = new Map<number, ActiveEntry>()
  /** Messages deferred as they were read (deferOnRead) whose write is not committed yet: not read again. */
  private readonly deferring = new Set<number>()
  private readonly destinations = new Map<string, DestinationQueue>()
  private timer: unknown = null
  private timerAt: number | null = null
  private scanning = false
  private stopped = false
  private requestSeq = 0
  private pendingCompletions = 0
  private lastSweep = 0
  /** Set when mail was committed 'pending' because the window was full: it must be scanned in. */
  private backlogged = false
  /** Recipients held in memory over all active messages (read, outcome not known yet), and the most ever. */
  private held = 0
  private peakHeld = 0

  private readonly logsInfo: boolean
  private readonly messageLogic: typeof messageMachine
  private readonly rollup: MxRollup
  private readonly checkedBodies = new CheckedBodies()

  constructor(private readonly deps: QmgrDeps) {
    this.logsInfo = deps.log.isLevelEnabled("info")
    this.messageLogic = withFaultHook(messageMachine, deps.faultHooks?.message)
    this.rollup = new MxRollup({ dns: deps.dns, clock: deps.clock })
  }

  start(): void {
    this.stopped = false
    this.rearm()
  }

  /** Whether a freshly committed message may enter the active window directly. */
  hasRoom(): boolean {
    return this.active.size < this.deps.config().qmgrMessageActiveLimit
  }

  /** smtpd committed a message without admitting it (the window was full). */
  noteBacklog(): void {
    this.backlogged = true
  }

  /**
   * How long a delivery attempt may hold its recipients: twice the longest an attempt on one server can
   * take by its own timeouts. Past that the attempt counts as not done (its actor hung or was cut off):
   * the recipients are deferred, the attempt is stopped and anything it says later is discarded.
   */
  get leaseMs(): number {
    const c = this.deps.config()
    return 2 * (c.smtpConnectTimeout + c.smtpHeloTimeout + c.smtpDataDoneTimeout)
  }

  /** Runs a delivery under its lease. */
  private deliverLeased(request: DeliveryRequest): Promise<DeliveryOutput> {
    const ms = this.leaseMs
    const timer = this.deps.clock.setTimeout(() => {
      this.deps.log.warn(
        { actor: `delivery/${request.id}`, parent: `destination/${request.route.key}`, queue_id: request.message.queueId, lease_ms: ms },
        "delivery lease expired: its recipients are deferred and a late result will be discarded",
      )
      this.deps.cancel(request.id, `delivery attempt did not finish within its lease of ${Math.round(ms / 1000)}s`)
    }, ms)
    return this.deps.deliver(request).finally(() => this.deps.clock.clearTimeout(timer))
  }

  activeCount(): number {
    return this.active.size
  }

  /** Recipients held in memory now, and the most held at once since start (qmgrMessageRecipientLimit). */
  recipientsInMemory(): { readonly now: number; readonly peak: number } {
    return { now: this.held, peak: this.peakHeld }
  }

  /** How many recipients the next read of a message may bring into memory. */
  private batchSize(config: PosternConfig): number {
    return Math.max(config.qmgrMessageRecipientMinimum, config.qmgrMessageRecipientLimit - this.held)
  }

  private hold(n: number): void {
    this.held += n
    if (this.held > this.peakHeld) this.peakHeld = this.held
  }

  /**
   * A message committed with its recipients 'active' enters the window. Only a batch of its recipients is
   * kept in memory; with `moreInStore` (or when it brings more than a batch) the rest is read as it goes.
   */
  admit(incoming: ActiveMessage, moreInStore = false, routed?: Array<RouteGroup>): void {
    if (this.stopped || incoming.recipients.length === 0) return
    if (this.active.has(incoming.id)) {
      this.deps.log.error({ actor: "qmgr", queue_id: incoming.queueId }, "message is already in the active window; not admitted twice")
      return
    }
    const config = this.deps.config()
    const size = this.batchSize(config)
    const message = incoming.recipients.length > size ? { ...incoming, recipients: incoming.recipients.slice(0, size) } : incoming
    const moreToRead = moreInStore || message !== incoming
    const policy = retryPolicyOf(config)
    const entry: ActiveEntry = {
      message,
      actor: null,
      byId: new Map(message.recipients.map((r) => [r.id, r])),
      failed: [],
      deferred: new Map(),
      unwritten: [],
      released: false,
      cursor: message.recipients.reduce((max, r) => Math.max(max, r.id), 0),
      reading: false,
    }
    this.hold(message.recipients.length)
    this.active.set(message.id, entry)
    const damage = this.damageOf(message)
    if (damage !== null) return this.quarantine(entry, damage)
    // Routed by the scan that read it, unless only part of what it read is kept.
    const groups = routed !== undefined && message === incoming ? routed : this.routeGroups(message.recipients, config)
    if (!moreToRead) {
      // Postfix's qmgr_defer_todo: mail for a dead destination is deferred without a delivery agent. When
      // that is every recipient of the message, its fate is known now: no message actor is needed.
      if (this.allSuspended(groups)) return this.deferSuspended(entry, groups, policy, config)
      const only = groups.length === 1 ? groups[0]! : undefined
      if (only !== undefined && only.route instanceof Promise) {
        // One destination whose MX answer is being looked up: the same choice once it is known.
        void only.route.then((route) => {
          if (this.stopped || this.active.get(message.id) !== entry) return
          const known = [{ route, recipients: only.recipients }]
          if (this.allSuspended(known)) return this.deferSuspended(entry, known, policy, config)
          this.startActor(entry, false, policy, config)
          this.enqueue(entry, route, only.recipients, config)
        })
        return
      }
    }
    this.startActor(entry, moreToRead, policy, config)
    this.enqueueGroups(entry, groups, config)
  }

  /** The message's machine: it takes the outcomes of its recipients and decides its fate. */
  private startActor(entry: ActiveEntry, moreToRead: boolean, policy: RetryPolicy, config: PosternConfig): void {
    const message = entry.message
    const actor = new HostedMachine(this.messageLogic, {
      changed: (snapshot) => {
        if (snapshot.value !== "awaitingBatch" || entry.reading) return
        entry.reading = true
        queueMicrotask(() => this.readNextBatch(entry))
      },
      done: (decision) => this.settle(entry, decision),
      failed: (err) => {
        // The message actor is temporary (system.ts): it leaves the window at once (results of its
        // deliveries still in flight are discarded: at least once), its recipients go back to the queue,
        // due after the minimal backoff, and it is not restarted.
        logActorFailure(
          this.deps.log,
          { actor: `message/${message.queueId}`, parent: "qmgr", queueIds: [message.queueId], restarts: 0, err },
          `its recipients return to the queue, due in ${config.minimalBackoffTime} ms`,
        )
        const due = this.deps.clock.now() + config.minimalBackoffTime
        // Every recipient of the message leased to this window (read into memory or still in the store).
        const requeue: q.StoreWrite = (db) => {
          q.releaseActiveOfMessage(db, message.id, due)
          q.deleteMessageIfDone(db, message.id)
        }
        // Queued before the message leaves the window, so a scan that release() starts cannot activate
        // its recipients ahead of this write (which would then take them back from the next incarnation).
        const requeued = this.deps.committer.run(requeue)
        this.release(entry, false)
        void requeued.then(
          () => this.rearm(),
          () => this.writeUntilCommitted(message, requeue, 1000, () => this.rearm()),
        )
      },
    })
    entry.actor = actor
    actor.start({
      queueId: message.queueId,
      arrivalTime: message.arrivalTime,
      nullSender: message.sender === "",
      recipientIds: message.recipients.map((r) => r.id),
      moreToRead,
      policy,
    })
  }

  /** The message finished its batch and more of it waits in the store: read the next batch and route it. */
  private readNextBatch(entry: ActiveEntry): void {
    if (entry.released || this.stopped) return
    const config = this.deps.config()
    const m = entry.message
    const size = this.batchSize(config)
    let rows: Array<QueuedRecipient>
    try {
      rows = q.readActiveBatch(this.deps.db, m.id, entry.cursor, size + 1)
    } catch (err) {
      this.deps.log.error({ actor: "qmgr", queue_id: m.queueId, err }, "could not read the next batch of recipients; retrying in 1s")
      this.deps.clock.setTimeout(() => this.readNextBatch(entry), 1000)
      return
    }
    entry.reading = false
    const batch = rows.length > size ? rows.slice(0, size) : rows
    for (const r of batch) entry.byId.set(r.id, r)
    this.hold(batch.length)
    if (batch.length > 0) entry.cursor = batch[batch.length - 1]!.id
    entry.actor!.send({
      type: "recipients.read",
      recipientIds: batch.map((r) => r.id),
      last: rows.length <= size,
      now: this.deps.clock.now(),
      draw: this.deps.rng.next(),
    })
    // The message actor may have failed taking the batch: then its recipients are back in the queue.
    if (batch.length > 0 && !entry.released) this.enqueueGroups(entry, this.routeGroups(batch, config), config)
  }

  /**
   * postern queue flush (Postfix's postqueue -f / -s): clears dead marks and makes deferred mail due now,
   * for every destination or one (a nexthop, with or without its service, or a recipient domain).
   * Returns how many recipients were made due.
   */
  async flush(destination?: string): Promise<number> {
    // D names a destination (its nexthop, with or without the service) or a recipient domain, whose
    // destination is where the current config routes it.
    const config = this.deps.config()
    const route = destination === undefined ? undefined : resolveRoute(config, `postmaster@${destination.toLowerCase()}`)
    const routed = route === undefined ? [] : [route.key, this.rollup.peek(config, route)]
    const matches = (key: string) => {
      if (destination === undefined) return true
      const d = destination.toLowerCase()
      return key === d || key.endsWith(`:${d}`) || routed.includes(key)
    }
    for (const [key, d] of this.destinations) if (matches(key)) d.flush()
    const now = this.deps.clock.now()
    const n = await this.deps.committer.run((db) => q.flushDeferred(db, now, destination))
    if (this.timer !== null) this.deps.clock.clearTimeout(this.timer)
    this.timer = null
    this.timerAt = null
    void this.scan()
    return n
  }

  /** Every destination queue held now, for postern queue list. */
  destinationStates(): Array<{ key: string } & DestinationStatus> {
    return [...this.destinations].map(([key, d]) => ({ key, ...d.status() }))
  }

  /**
   * Stops admitting and scanning, starts no new delivery, and waits up to `graceMs` for the deliveries in
   * flight and their commits. What did not finish stays 'active' in the store: the next start recovers it.
   * The grace period is wall-clock time by nature (it bounds how long a process manager waits for us).
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true
    if (this.timer !== null) this.deps.clock.clearTimeout(this.timer)
    this.timer = null
    for (const d of this.destinations.values()) d.hold()
    const busy = () => [...this.destinations.values()].reduce((n, d) => n + d.busy(), 0) + this.pendingCompletions
    const deadline = performance.now() + graceMs
    while (busy() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    for (const d of this.destinations.values()) d.stop()
  }

  // ------------------------------------------------------------------------------------ the due timer

  /** Arms the one timer at the earliest due time in the store. */
  rearm(): void {
    if (this.stopped) return
    const at = q.nextDueTime(this.deps.db)
    if (at === null) return
    if (this.timerAt !== null && this.timerAt <= at && this.timer !== null) return
    if (this.timer !== null) this.deps.clock.clearTimeout(this.timer)
    this.timerAt = at
    const delay = Math.min(Math.max(0, at - this.deps.clock.now()), MAX_TIMER_MS)
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = null
      this.timerAt = null
      void this.scan()
    }, delay)
  }

  /** Brings due messages into the active window, as room allows. */
  private async scan(): Promise<void> {
    if (this.scanning || this.stopped) return
    this.scanning = true
    let full = false
    try {
      for (;;) {
        const room = this.deps.config().qmgrMessageActiveLimit - this.active.size
        if (room <= 0) {
          // The window is full: due mail waits for a message to leave (release() scans again), not for a
          // timer that would fire at once, again and again.
          this.backlogged = true
          full = true
          break
        }
        const now = this.deps.clock.now()
        const ids = q.dueMessageIds(this.deps.db, now, SCAN_BATCH)
          .filter((id) => !this.active.has(id) && !this.deferring.has(id))
          .slice(0, room)
        if (ids.length === 0) {
          this.backlogged = false
          break
        }
        // Each message brings one batch of its due recipients into memory; the rest are leased with it
        // and read as it goes. The batches share what is left of qmgrMessageRecipientLimit.
        const config = this.deps.config()
        let budget = config.qmgrMessageRecipientLimit - this.held
        const loaded: Array<{ message: ActiveMessage; more: boolean; groups: Array<RouteGroup> | null }> = []
        for (const id of ids) {
          const size = Math.max(config.qmgrMessageRecipientMinimum, budget)
          const m = q.loadDueMessage(this.deps.db, id, now, size + 1)
          if (m === null || m.recipients.length === 0) continue
          const more = m.recipients.length > size
          const message = more ? { ...m, recipients: m.recipients.slice(0, size) } : m
          budget -= message.recipients.length
          loaded.push({ message, more, groups: more ? null : this.routeGroups(message.recipients, config) })
        }
        // Mail whose every destination is dead is deferred as it is read, without a lease (Postfix's
        // qmgr_defer_todo); the rest is leased to the window.
        const policy = retryPolicyOf(config)
        const readAsDead = new Set(
          loaded.filter((l) => l.groups !== null && this.allSuspended(l.groups) && !isExpired(now, l.message.arrivalTime, l.message.sender === "", policy)),
        )
        const leased = loaded.filter((l) => !readAsDead.has(l))
        const leaseUntil = now + this.leaseMs
        if (leased.length > 0) {
          await this.deps.committer.run((db) => {
            for (const { message } of leased) q.activateDueOfMessage(db, message.id, now, leaseUntil)
          })
        }
        for (const l of loaded) {
          const groups = l.groups
          if (!readAsDead.has(l)) this.admit(l.message, l.more, groups ?? undefined)
          else if (groups !== null && this.allSuspended(groups)) this.deferOnRead(l.message, groups, config)
          // else: its destination came back while the others were leased; still due, the next scan reads it.
        }
        if (ids.length < SCAN_BATCH) break
      }
    } catch (err) {
      this.deps.log.error({ actor: "qmgr", err }, "scan of the deferred queue failed; retrying in 1s")
      this.timer = this.deps.clock.setTimeout(() => {
        this.timer = null
        void this.scan()
      }, 1000)
      return
    } finally {
      this.scanning = false
    }
    // While deferrals made here are not committed, their rows still read as due: their commit re-arms
    // the timer, not a timer armed now that would fire at once and find them again.
    if (!full && this.deferring.size === 0) this.rearm()
  }

  // ------------------------------------------------------------------------------ routing, dispatch

  /**
   * Groups recipients per destination: each group with its route, or the promise of it while the MX answer
   * that decides its queue is looked up.
   */
  private routeGroups(recipients: ReadonlyArray<QueuedRecipient>, config: PosternConfig): Array<RouteGroup> {
    const groups = new Map<string, { route: Route; recipients: Array<QueuedRecipient> }>()
    for (const r of recipients) {
      const route = resolveRoute(config, r.address)
      const g = groups.get(route.key)
      if (g === undefined) groups.set(route.key, { route, recipients: [r] })
      else g.recipients.push(r)
    }
    const out: Array<RouteGroup> = []
    for (const { route, recipients } of groups.values()) out.push({ route: this.rollup.route(config, route), recipients })
    return out
  }

  /** Hands each group to its destination queue; a group whose MX answer is still looked up follows when it is known. */
  private enqueueGroups(entry: ActiveEntry, groups: ReadonlyArray<RouteGroup>, config: PosternConfig): void {
    for (const { route, recipients } of groups) {
      // The MX answer decides the queue; while it is looked up, other mail is routed on.
      if (route instanceof Promise) {
        void route.then((r) => {
          if (!this.stopped && this.active.get(entry.message.id) === entry) this.enqueue(entry, r, recipients, config)
        })
      } else {
        this.enqueue(entry, route, recipients, config)
      }
    }
  }

  /** Whether every group's destination queue would defer its mail at once (dead, or given up on). */
  private allSuspended(groups: ReadonlyArray<RouteGroup>): groups is ReadonlyArray<RoutedGroup> {
    for (const { route } of groups) {
      if (route instanceof Promise || this.destinations.get(route.key)?.isSuspended() !== true) return false
    }
    return true
  }

  /**
   * Every recipient's destination is suspended: each request is deferred by its queue as if it had been
   * queued there, and the message is decided as its machine decides a message whose last outcome is a
   * deferral (`decide`), with the same random draws, writes and log lines, in the same order.
   */
  private deferSuspended(entry: ActiveEntry, groups: ReadonlyArray<RoutedGroup>, policy: RetryPolicy, config: PosternConfig): void {
    const m = entry.message
    let last: { now: number; draw: number } | undefined
    for (const { route, recipients } of groups) {
      const destination = this.destinations.get(route.key)!
      for (const request of this.requestsOf(entry.message, route, recipients, config)) {
        last = this.onDelivered(request, destination.deferSuspended(request), 0)
      }
    }
    const deferred = [...entry.deferred.keys()]
    this.settle(entry, decide({ deferred, arrivalTime: m.arrivalTime, nullSender: m.sender === "", policy }, last!.now, last!.draw))
  }

  /**
   * A due message read by the scan whose every recipient's destination is suspended (and that has not
   * expired) is deferred there and then, without a lease, an entry in the window or a message machine: the
   * same requests, replies, log lines, random draws and decision as deferSuspended(), in one write.
   */
  private deferOnRead(m: ActiveMessage, groups: ReadonlyArray<RoutedGroup>, config: PosternConfig): void {
    const damage = this.damageOf(m)
    if (damage !== null) {
      this.deferring.add(m.id)
      this.setAside(m, damage, () => {
        this.deferring.delete(m.id)
        this.rearm()
      })
      return
    }
    const now = this.deps.clock.now()
    const policy = retryPolicyOf(config)
    // Expired since the scan read it: still due, the next scan leases it and its report is sent.
    if (isExpired(now, m.arrivalTime, m.sender === "", policy)) return
    const rows: Array<{ recipient: QueuedRecipient; destination: string; reply: string; dsn: string }> = []
    let draw = 0
    for (const { route, recipients } of groups) {
      const destination = this.destinations.get(route.key)!
      for (const request of this.requestsOf(m, route, recipients, config)) {
        const output = destination.deferSuspended(request)
        for (const r of request.recipients) {
          const v = output.verdicts[r.address]!
          rows.push({ recipient: r, destination: route.key, reply: v.reply, dsn: v.dsn })
          this.logOutcome(m, r.address, route.nexthop, v, now)
        }
        draw = this.deps.rng.next()
      }
    }
    const decision = decide({ deferred: rows.map((x) => x.recipient.id), arrivalTime: m.arrivalTime, nullSender: m.sender === "", policy }, now, draw)
    if (decision.kind !== "deferred") return // not reached: not expired, and every recipient deferred
    const write: q.StoreWrite = (db) => {
      for (const { recipient: r, destination, reply, dsn } of rows) {
        q.appendAttempt(db, { at: now, queueId: m.queueId, recipient: r.address, attempt: r.attempts + 1, destination, relay: null, outcome: "deferred", dsn, reply, durationMs: 0 })
        q.deferRecipient(db, r.id, decision.nextAttemptAt, destination, reply)
      }
    }
    this.deferring.add(m.id)
    const committed = () => {
      this.deferring.delete(m.id)
      this.rearm()
    }
    this.pendingCompletions++
    void this.deps.committer
      .runLazily(write)
      .then(committed, (err: unknown) => {
        this.deps.log.error({ actor: "qmgr", queue_id: m.queueId, err }, "could not record the deferral of mail for a dead destination; it will be written again")
        this.writeUntilCommitted(m, write, 1000, committed)
      })
      .finally(() => this.pendingCompletions--)
    this.sweepIdleDestinations()
  }

  /** Hands one destination's recipients to its queue, in delivery requests of at most its recipient limit. */
  private enqueue(entry: ActiveEntry, route: Route, recipients: ReadonlyArray<QueuedRecipient>, config: PosternConfig): void {
    for (const request of this.requestsOf(entry.message, route, recipients, config)) this.destinationFor(route, config).enqueue(request)
  }

  /** One destination's recipients as delivery requests of at most its recipient limit each. */
  private *requestsOf(message: ActiveMessage, route: Route, recipients: ReadonlyArray<QueuedRecipient>, config: PosternConfig): Generator<DeliveryRequest> {
    const limit = route.serviceConfig.destinationRecipientLimit ?? config.defaultDestinationRecipientLimit
    for (let i = 0; i < recipients.length; i += limit) {
      yield {
        id: `${message.queueId}.${++this.requestSeq}`,
        route,
        message,
        recipients: recipients.slice(i, i + limit),
        body: () => this.bodyOf(message),
      }
    }
  }

  private bodyOf(m: ActiveMessage) {
    if (m.body !== null) return m.body
    return readableFromChunks(() => q.readBodyChunks(this.deps.db, m.id))
  }

  private destinationFor(route: Route, config: PosternConfig): DestinationQueue {
    let d = this.destinations.get(route.key)
    if (d === undefined) {
      const s = route.serviceConfig
      const rateDelay = s.destinationRateDelay ?? config.defaultDestinationRateDelay
      // A rate delay forces the destination's concurrency to 1, as Postfix's qmgr does.
      const limit = rateDelay > 0 ? 1 : (s.destinationConcurrencyLimit ?? config.defaultDestinationConcurrencyLimit)
      d = new DestinationQueue(
        route.key,
        {
          name: route.key,
          deadTime: config.minimalBackoffTime,
          limits: {
            initial: Math.min(s.initialDestinationConcurrency ?? config.initialDestinationConcurrency, limit),
            limit,
            positive: parseFeedback(s.destinationConcurrencyPositiveFeedback ?? config.defaultDestinationConcurrencyPositiveFeedback)!,
            negative: parseFeedback(s.destinationConcurrencyNegativeFeedback ?? config.defaultDestinationConcurrencyNegativeFeedback)!,
            cohortLimit: s.destinationConcurrencyFailedCohortLimit ?? config.defaultDestinationConcurrencyFailedCohortLimit,
          },
          rateDelay,
        },
        {
          clock: this.deps.clock,
          log: this.deps.log,
          deliver: (r) => this.deliverLeased(r),
          done: (request, output, durationMs) => this.onDelivered(request, output, durationMs),
          restartPolicy: this.deps.destinationPolicy,
          escalate: this.deps.escalate,
          faultHook: this.deps.faultHooks?.destination,
          isCurrent: (r) => this.active.get(r.message.id)?.message === r.message,
        },
      )
      this.destinations.set(route.key, d)
    }
    return d
  }

  // ---------------------------------------------------------------------------------- outcomes

  /** Records a request's outcomes and tells the message actor (if it has one); returns when and with what draw. */
  private onDelivered(request: DeliveryRequest, output: DeliveryOutput, durationMs: number): { now: number; draw: number } | undefined {
    const entry = this.active.get(request.message.id)
    // Gone, or admitted again since this request left (its message actor failed): the result is discarded.
    if (entry === undefined || entry.message !== request.message) return undefined
    const now = this.deps.clock.now()
    const m = request.message
    const attempts: Array<{ r: QueuedRecipient; v: RecipientVerdict; kind: RecipientOutcomeKind }> = []
    for (const r of request.recipients) {
      const v: RecipientVerdict = output.verdicts[r.address] ?? {
        verdict: "deferred",
        dsn: "4.3.0",
        reply: "delivery agent returned no status",
        remote: false,
      }
      attempts.push({ r, v, kind: v.verdict })
      if (entry.byId.delete(r.id)) this.held--
      if (v.verdict === "bounced") entry.failed.push({ recipient: r, verdict: v, relay: output.relay, at: now })
      if (v.verdict === "deferred") entry.deferred.set(r.id, { recipient: r, verdict: v, destination: request.route.key, relay: output.relay })
      this.logOutcome(m, r.address, output.relay ?? request.route.nexthop, v, now, output.tls)
    }
    // The outcomes are committed lazily: they ride with the next batch of accepted mail (or flush after
    // the lazy window), so delivery bookkeeping costs no fsync of its own under load. A crash before that
    // commit re-sends these recipients: at least once, never lost.
    const write: q.StoreWrite = (db) => {
        for (const a of attempts) {
          q.appendAttempt(db, {
            at: now,
            queueId: m.queueId,
            recipient: a.r.address,
            attempt: a.r.attempts + 1,
            destination: request.route.key,
            relay: output.relay,
            outcome: a.kind,
            dsn: a.v.dsn,
            reply: a.v.reply,
            durationMs: Math.round(durationMs),
          })
          if (a.kind === "deferred") q.noteDeferredAttempt(db, a.r.id, request.route.key, a.v.reply)
          else if (a.kind !== "bounced") q.completeRecipient(db, a.r.id)
          // bounced recipients are completed together with their report, in settle()
        }
    }
    this.pendingCompletions++
    void this.deps.committer
      .runLazily(write)
      .catch((err: unknown) => {
        // Never dropped: replayed by the message's settle commit, or alone if the message already left.
        this.deps.log.error({ actor: "qmgr", queue_id: m.queueId, err }, "could not record delivery outcomes; they will be written again")
        if (entry.released) this.writeUntilCommitted(m, (db) => (write(db), q.deleteMessageIfDone(db, m.id)))
        else entry.unwritten.push(write)
      })
      .finally(() => this.pendingCompletions--)
    // The message actor hears at once; if this settles the message, its decision is queued after the
    // outcomes above, so both land in the same transaction, in that order.
    const draw = this.deps.rng.next()
    entry.actor?.send({
      type: "recipients.reported",
      outcomes: attempts.map((a) => ({ recipientId: a.r.id, outcome: a.kind === "sent" ? "sent" : a.kind === "bounced" ? "bounced" : "deferred" })),
      now,
      draw,
    })
    return { now, draw }
  }

  /** A recipient's outcome in the log, as Postfix's "to=<...>, relay=..., delay=..., status=..." line. */
  private logOutcome(m: ActiveMessage, to: string, relay: string, v: RecipientVerdict, now: number, tls?: string): void {
    if (!this.logsInfo) return
    this.deps.log.info(
      {
        queue_id: m.queueId,
        to,
        relay,
        delay: Math.round((now - m.arrivalTime) / 10) / 100,
        dsn: v.dsn,
        status: v.verdict,
        reply: v.reply,
        ...(tls !== undefined ? { tls } : {}),
      },
      `${m.queueId}: to=<${to}>, ${tls !== undefined ? `tls=${tls}, ` : ""}status=${v.verdict} (${v.reply})`,
    )
  }

  /** The message actor decided: commit the decision, send any report, leave the window. */
  private settle(entry: ActiveEntry, decision: MessageDecision): void {
    const config = this.deps.config()
    const now = this.deps.clock.now()
    const m = entry.message
    const failed = [...entry.failed]
    if (decision.kind === "expired") {
      for (const d of entry.deferred.values()) {
        const r = d.recipient
        failed.push({
          recipient: r,
          // Postfix keeps the last temporary status (e.g. 4.4.1) in the report of an expired recipient.
          verdict: { ...d.verdict, verdict: "bounced" },
          relay: d.relay,
          at: now,
        })
        this.deps.log.info({ queue_id: m.queueId, to: r.address, status: "expired", dsn: d.verdict.dsn, reply: d.verdict.reply }, `${m.queueId}: to=<${r.address}>, status=expired, returned to sender`)
      }
    }
    const replay = [...entry.unwritten]
    this.pendingCompletions++
    void this.deps.committer
      .runLazily((db) => {
        for (const w of replay) w(db)
        let bounce: { message: ActiveMessage } | null = null
        if (failed.length > 0) {
          const original = m.body ?? q.readBody(db, m.id)
          const report = makeBounce(m, original, failed, { hostname: config.hostname, now, queueId: this.deps.newQueueId() })
          if (report === null) {
            this.deps.log.info({ queue_id: m.queueId, from: m.sender }, `${m.queueId}: no non-delivery report (null sender or NOTIFY)`)
          } else {
            const admit = this.hasRoom()
            const committed = q.commitMessage(db, report.message, [report.body], 0, null, admit, now + this.leaseMs)
            if (admit) {
              bounce = {
                message: {
                  id: committed.messageId,
                  queueId: report.message.queueId,
                  arrivalTime: now,
                  sender: "",
                  mailParams: {},
                  size: report.body.length,
                  recipients: committed.recipients,
                  body: report.body,
                },
              }
            }
            this.deps.log.info({ queue_id: m.queueId, bounce_queue_id: report.message.queueId }, `${m.queueId}: sender non-delivery notification: ${report.message.queueId}`)
          }
          for (const f of failed) q.completeRecipient(db, f.recipient.id)
          if (decision.kind === "expired") {
            for (const f of failed) {
              if (!entry.deferred.has(f.recipient.id)) continue
              q.appendAttempt(db, {
                at: now, queueId: m.queueId, recipient: f.recipient.address, attempt: f.recipient.attempts + 1,
                destination: entry.deferred.get(f.recipient.id)!.destination, relay: f.relay, outcome: "expired",
                dsn: f.verdict.dsn, reply: f.verdict.reply, durationMs: 0,
              })
            }
          }
        }
        // A deferred message keeps its deferred recipients: only a finished one can be deleted.
        if (decision.kind === "deferred") {
          for (const id of entry.deferred.keys()) q.rescheduleRecipient(db, id, decision.nextAttemptAt)
        } else {
          q.deleteMessageIfDone(db, m.id)
        }
        return bounce
      })
      .then(
        (bounce) => {
          entry.unwritten.splice(0, replay.length)
          this.pendingCompletions--
          this.release(entry, decision.kind === "deferred")
          // The report is committed: whatever happens admitting it, this settle is never repeated (a retry
          // would commit a second report). Not admitted, it is 'active' in the store and recovery's to run.
          if (bounce !== null) {
            try {
              this.admit(bounce.message)
            } catch (err) {
              this.deps.log.error({ actor: "qmgr", queue_id: bounce.message.queueId, err }, "could not admit a non-delivery report; it runs after the next start")
            }
          }
        },
        (err: unknown) => {
          // The store could not commit (disk full, I/O): keep the message active and try again.
          this.pendingCompletions--
          this.deps.log.error({ actor: "qmgr", queue_id: m.queueId, err }, "could not commit the message's outcome; retrying in 1s")
          this.deps.clock.setTimeout(() => this.settle(entry, decision), 1000)
        },
      )
  }

  /**
   * Idle destination queues are dropped (memory is bounded by active work, not by how many nexthops
   * were ever seen), but not at once: a destination that served the last message is likely to serve the
   * next, and rebuilding its actors per message would cost more than keeping them a while. A queue idle
   * for DESTINATION_KEEP_MS goes; past CROWDED_DESTINATIONS queues held, every idle one goes.
   */
  private sweepIdleDestinations(): void {
    const now = this.deps.clock.now()
    const crowded = this.destinations.size > CROWDED_DESTINATIONS
    if (now - this.lastSweep < 30_000 && !crowded) return
    this.lastSweep = now
    for (const [key, d] of this.destinations) {
      if (d.isIdle(crowded ? 0 : DESTINATION_KEEP_MS)) {
        d.stop()
        this.destinations.delete(key)
      }
    }
  }

  /** A message whose stored body is damaged goes to the corrupt queue; nothing else is held up. */
  private quarantine(entry: ActiveEntry, reason: string): void {
    const m = entry.message
    this.setAside(m, reason)
    entry.actor?.stop()
    this.forget(entry)
    this.active.delete(m.id)
    if (this.backlogged) void this.scan()
  }

  /** Why a message read from the store cannot be sent (its stored body is damaged), checked once per message; null when whole. */
  private damageOf(m: ActiveMessage): string | null {
    if (m.body !== null || this.checkedBodies.has(m.id)) return null
    const damage = q.bodyDamage(this.deps.db, m.id)
    if (damage === null) this.checkedBodies.add(m.id)
    return damage
  }

  /** Moves a message to the corrupt queue in the store (written until it commits). */
  private setAside(m: ActiveMessage, reason: string, committed?: () => void): void {
    this.deps.log.error({ actor: "qmgr", queue_id: m.queueId, reason }, `${m.queueId}: moved to the corrupt queue: ${reason}`)
    this.writeUntilCommitted(m, (db) => q.quarantineMessage(db, m.id, reason), 0, committed)
  }

  /** Retries a write the store refused until it commits (the disk fills, the disk empties). */
  private writeUntilCommitted(m: ActiveMessage, write: q.StoreWrite, delayMs = 1000, committed?: () => void): void {
    this.pendingCompletions++
    this.deps.clock.setTimeout(() => {
      void this.deps.committer
        .runLazily(write)
        .then(
          () => committed?.(),
          (err: unknown) => {
            this.deps.log.error({ actor: "qmgr", queue_id: m.queueId, err }, "could not write delivery outcomes; retrying")
            this.writeUntilCommitted(m, write, Math.min(delayMs * 2, 30_000), committed)
          },
        )
        .finally(() => this.pendingCompletions--)
    }, delayMs)
  }

  /** The entry no longer holds recipients in memory. */
  private forget(entry: ActiveEntry): void {
    entry.released = true
    this.held -= entry.byId.size
    entry.byId.clear()
  }

  /**
   * The message leaves the active window. Only a deferral changes the earliest due time in the store
   * (a finished message removes rows that were 'active', not 'pending'), so only then is the timer re-armed.
   */
  private release(entry: ActiveEntry, rescheduled: boolean): void {
    this.forget(entry)
    if (entry.unwritten.length > 0) {
      // Outcomes the store refused after the settle commit had been queued: written on their own.
      const writes = entry.unwritten.splice(0)
      const m = entry.message
      this.writeUntilCommitted(m, (db) => {
        for (const w of writes) w(db)
        q.deleteMessageIfDone(db, m.id)
      })
    }
    this.active.delete(entry.message.id)
    entry.actor?.stop()
    this.sweepIdleDestinations()
    if (this.backlogged) void this.scan()
    else if (rescheduled) this.rearm()
  }
}
