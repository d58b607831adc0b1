// The delivery agents (Postfix's smtp, lmtp, discard, error): one delivery actor per attempt. For smtp
// and lmtp this hosts the delivery machine, providing its three I/O actors (resolve, open a session or
// take one from the connection cache, transfer). A delivery actor that fails is not restarted: its
// recipients are deferred and the queue manager (its predecessor) retries them later.
import { isIP } from "node:net"
import { Readable } from "node:stream"
import { createActor, fromPromise, type ActorRefFrom } from "xstate"
import type { PosternConfig } from "../config/types.js"
import { deliveryMachine, type DeliveryOutput } from "../machines/delivery.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import type { RngShape } from "../runtime/rng.js"
import type { ActiveMessage, QueuedRecipient } from "../store/types.js"
import { ConnectionCache } from "../transport/connection-cache.js"
import type { ResolverShape } from "../transport/dns.js"
import { resolveTargets, type Target, type TargetsResult } from "../transport/mx.js"
import { parseNexthop } from "../transport/nexthop.js"
import type { Route } from "../transport/route.js"
import type { AttemptResult, RecipientVerdict } from "../transport/smtp-outcome.js"
import { isSession, SmtpSession, type Connector, type OutboundSession } from "../transport/smtp-session.js"

/** One delivery request: recipients of one message for one destination (Postfix's qmgr entry). */
export interface DeliveryRequest {
  readonly id: string
  readonly route: Route
  readonly message: ActiveMessage
  readonly recipients: ReadonlyArray<QueuedRecipient>
  /** The message bytes: in memory, or streamed from the store. */
  readonly body: () => Buffer | Readable
}

export interface DeliveryAgentDeps {
  readonly config: () => PosternConfig
  readonly clock: ClockShape
  readonly rng: RngShape
  readonly dns: ResolverShape
  readonly log: Logger
  /** Test-only fault hook: called at the start of every transfer; may throw, or hang (a promise). */
  readonly faultHook?: (request: DeliveryRequest) => void | Promise<void>
  /** How sessions are opened: real SMTP over sockets by default; the simulator models them. */
  readonly connector?: Connector
}

/** The discard and error services decide without any I/O: their outcome, or null for smtp/lmtp. */
export const localOutcome = (request: DeliveryRequest): DeliveryOutput | null => {
  const everyone = (v: RecipientVerdict): DeliveryOutput => ({
    verdicts: Object.fromEntries(request.recipients.map((r) => [r.address, v])),
    siteFailure: false,
    relay: null,
  })
  switch (request.route.serviceConfig.type) {
    case "discard":
      return everyone({ verdict: "sent", dsn: "2.0.0", reply: `discarded (${request.route.nexthop || "discard"})`, remote: false })
    case "error":
      return everyone({ verdict: "bounced", dsn: "5.0.0", reply: request.route.nexthop || "mail delivery is disabled for this destination", remote: false })
    default:
      return null
  }
}

/** The port a nexthop without one means: 24 for LMTP (Postfix's lmtp(8)), 25 for SMTP. */
const defaultPortOf = (route: Route | undefined): number => (route?.serviceConfig.type === "lmtp" ? 24 : 25)

/** A bracketed IP nexthop (`[127.0.0.1]:2526`) is its own and only server: no lookup to make. */
const literalCache = new Map<string, Target | null>()
const literalTarget = (nexthop: string, defaultPort: number): Target | null => {
  const key = `${defaultPort} ${nexthop}`
  let t = literalCache.get(key)
  if (t === undefined) {
    const n = parseNexthop(nexthop, defaultPort)
    t = n !== undefined && !n.mxLookup && isIP(n.host) !== 0 ? { address: n.host, port: n.port, hostname: n.host } : null
    if (literalCache.size > 10_000) literalCache.clear()
    literalCache.set(key, t)
  }
  return t
}

/**
 * Sessions are cached per destination queue and server. Postfix keys them per nexthop; a site or MX
 * roll-up queue shares them across its domains instead, so the connections a provider sees stay within
 * the queue's one window (idle cached ones included). Anything that makes a session specific to one
 * domain (a per-destination TLS policy) must be part of this key.
 */
const cacheKeyFor = (route: Route, target: Target): string => `${route.key}|${target.address}:${target.port}`

const needsSmtpUtf8 = (m: ActiveMessage, recipients: ReadonlyArray<QueuedRecipient>): boolean =>
  m.mailParams["SMTPUTF8"] !== undefined &&
  (/[^\x00-\x7f]/.test(m.sender) || recipients.some((r) => /[^\x00-\x7f]/.test(r.address)))

export class DeliveryAgent {
  readonly cache: ConnectionCache
  private readonly sessions = new Map<string, OutboundSession>()
  private readonly requests = new Map<string, DeliveryRequest>()
  private readonly running = new Set<ActorRefFrom<typeof deliveryMachine>>()
  /** How to end each delivery in flight early (lease expiry, shutdown), by request id. */
  private readonly cancellers = new Map<string, (reason: string) => void>()
  private readonly machine

  constructor(private readonly deps: DeliveryAgentDeps) {
    this.cache = new ConnectionCache(deps.clock)
    this.machine = deliveryMachine.provide({
      actors: {
        resolveTargets: fromPromise(async ({ input }) => {
          const nexthop = parseNexthop(input.nexthop, defaultPortOf(this.requests.get(input.deliveryId)?.route))
          if (nexthop === undefined) {
            return { kind: "failed" as const, permanent: true, dsn: "5.3.5", reason: `bad nexthop syntax: ${input.nexthop}` }
          }
          const resolved = await resolveTargets(nexthop, this.deps.dns, this.deps.rng)
          const primary = nexthop.mxLookup ? this.withoutOurselves(resolved, nexthop.host) : resolved
          return this.withFallbackRelays(primary)
        }),
        openSession: fromPromise(async ({ input }) => this.openSession(input.deliveryId, input.target)),
        transfer: fromPromise(async ({ input }) => this.transfer(input.deliveryId, input.recipients)),
      },
    })
  }

  /** Runs one delivery to its end. Never rejects: a failing agent defers its recipients. */
  deliver(request: DeliveryRequest): Promise<DeliveryOutput> {
    const local = localOutcome(request)
    if (local !== null) return Promise.resolve(local)
    return new Promise((resolve) => {
      this.requests.set(request.id, request)
      const literal = this.deps.config().smtpFallbackRelay.length > 0 ? null : literalTarget(request.route.nexthop, defaultPortOf(request.route))
      const actor = createActor(this.machine, {
        clock: this.deps.clock,
        input: {
          deliveryId: request.id,
          nexthop: request.route.nexthop,
          recipients: request.recipients.map((r) => r.address),
          ...(literal !== null ? { targets: [literal] } : {}),
        },
      })
      let finished = false
      const finish = (output: DeliveryOutput) => {
        if (finished) return
        finished = true
        this.running.delete(actor)
        this.requests.delete(request.id)
        this.cancellers.delete(request.id)
        const session = this.sessions.get(request.id)
        this.sessions.delete(request.id)
        if (session !== undefined) this.cache.put(cacheKeyFor(request.route, session.target), session)
        resolve(output)
      }
      this.cancellers.set(request.id, (reason) => {
        // The session may be mid-transaction: it is closed, never reused.
        this.sessions.get(request.id)?.close()
        this.sessions.delete(request.id)
        finish(this.everyone(request, { verdict: "deferred", dsn: "4.4.7", reply: reason, remote: false }))
        actor.stop()
      })
      actor.subscribe({
        complete: () => {
          // A stopped actor completes too (cancel, shutdown); only a finished one has an output.
          const snapshot = actor.getSnapshot()
          if (snapshot.status === "done") finish(snapshot.output)
        },
        error: (error) => {
          this.deps.log.error(
            { actor: `delivery/${request.id}`, parent: `destination/${request.route.key}`, queue_id: request.message.queueId, err: error },
            "delivery actor failed; its recipients are deferred",
          )
          this.sessions.get(request.id)?.close()
          this.sessions.delete(request.id)
          // Counted against the destination (negative feedback): a destination whose delivery actors keep
          // dying goes dead and its mail is deferred without new attempts, instead of failing again and again.
          finish({ ...this.everyone(request, { verdict: "deferred", dsn: "4.3.0", reply: "delivery agent failure", remote: false }), siteFailure: true })
        },
      })
      this.running.add(actor)
      actor.start()
    })
  }

  /**
   * Ends one delivery now (its lease expired): its recipients are reported deferred with `reason`, its
   * session is closed, and whatever the stopped actor would have said later is never heard.
   */
  cancel(requestId: string, reason: string): void {
    this.cancellers.get(requestId)?.(reason)
  }

  /** Stops every delivery in flight (shutdown after the grace period); their recipients stay queued. */
  abortAll(): void {
    for (const actor of this.running) actor.stop()
    this.running.clear()
    for (const s of this.sessions.values()) s.close()
    this.sessions.clear()
    this.cache.closeAll()
  }

  inFlight(): number {
    return this.running.size
  }

  /**
   * Postfix's loop check on MX results: a server that is one of our own listeners would hand the mail
   * back to us. Such servers are dropped; when none is left, the mail loops back to ourselves (5.4.6).
   * A bracketed nexthop is never a loop by address alone (it was asked for explicitly).
   */
  private withoutOurselves(resolved: TargetsResult, domain: string): TargetsResult {
    if (resolved.kind !== "targets") return resolved
    const listeners = this.deps.config().listen
    const isUs = (t: Target) =>
      listeners.some((l) => l.port === t.port && (l.host === t.address || l.host === "0.0.0.0" || l.host === "::"))
    const others = resolved.targets.filter((t) => !isUs(t))
    if (others.length === resolved.targets.length) return resolved
    if (others.length > 0) return { kind: "targets", targets: others }
    return { kind: "failed", permanent: true, dsn: "5.4.6", reason: `mail for ${domain} loops back to myself` }
  }

  /**
   * Postfix's smtp_fallback_relay: its servers come after the nexthop's own, so a destination whose
   * servers cannot take the mail (or whose lookup failed for now) still gets it out. A name that does
   * not exist is a permanent failure and bounces as usual.
   */
  private async withFallbackRelays(primary: TargetsResult): Promise<TargetsResult> {
    const relays = this.deps.config().smtpFallbackRelay
    if (relays.length === 0 || (primary.kind === "failed" && primary.permanent)) return primary
    const extra: Array<Target> = []
    for (const relay of relays) {
      const hop = parseNexthop(relay)
      if (hop === undefined) continue
      const r = await resolveTargets(hop, this.deps.dns, this.deps.rng)
      if (r.kind === "targets") extra.push(...r.targets)
    }
    if (extra.length === 0) return primary
    return { kind: "targets", targets: [...(primary.kind === "targets" ? primary.targets : []), ...extra] }
  }

  private everyone(request: DeliveryRequest, v: RecipientVerdict): DeliveryOutput {
    return { verdicts: Object.fromEntries(request.recipients.map((r) => [r.address, v])), siteFailure: false, relay: null }
  }

  private async openSession(deliveryId: string, target: Target): Promise<"ready" | AttemptResult> {
    const request = this.requests.get(deliveryId)
    if (request === undefined) return { stage: "connect", reason: "delivery was cancelled" }
    const cached = await this.cache.take(cacheKeyFor(request.route, target))
    if (cached !== null) {
      this.sessions.set(deliveryId, cached)
      return "ready"
    }
    const config = this.deps.config()
    const opened = await (this.deps.connector ?? SmtpSession.open)(
      {
        target,
        heloName: config.hostname,
        lmtp: request.route.serviceConfig.type === "lmtp",
        connectTimeout: config.smtpConnectTimeout,
        heloTimeout: config.smtpHeloTimeout,
        dataTimeout: config.smtpDataDoneTimeout,
      },
      this.deps.clock.now(),
    )
    if (!isSession(opened)) return opened
    this.sessions.set(deliveryId, opened)
    return "ready"
  }

  private async transfer(deliveryId: string, recipients: ReadonlyArray<string>): Promise<AttemptResult> {
    const request = this.requests.get(deliveryId)
    const session = this.sessions.get(deliveryId)
    if (request === undefined || session === undefined) return { stage: "io", reason: "no session", sessionCompleted: false }
    await this.deps.faultHook?.(request)
    const m = request.message
    const rcpts = request.recipients.filter((r) => recipients.includes(r.address))
    if (needsSmtpUtf8(m, rcpts) && !session.supports("SMTPUTF8")) {
      return {
        stage: "local",
        permanent: true,
        dsn: "5.6.7",
        reason: `SMTPUTF8 is required, but was not offered by host ${session.relay}`,
      }
    }
    const result = await session.send(
      { from: m.sender, to: recipients, size: m.size, eightBit: m.mailParams["BODY"] === "8BITMIME" },
      request.body(),
    )
    // The transaction is over: the session goes back to the cache for the next delivery to this server.
    this.sessions.delete(deliveryId)
    this.cache.put(cacheKeyFor(request.route, session.target), session)
    return result
  }
}

/** A Readable over chunks pulled lazily, one store read per chunk. */
export const readableFromChunks = (chunks: () => Iterator<Buffer>): Readable => {
  let it: Iterator<Buffer> | null = null
  return new Readable({
    read() {
      try {
        it ??= chunks()
        const next = it.next()
        this.push(next.done === true ? null : next.value)
      } catch (e) {
        this.destroy(e as Error)
      }
    },
  })
}
