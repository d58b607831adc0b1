// The delivery agents (Postfix's smtp, lmtp, discard, error): one delivery actor per attempt. For smtp
// and lmtp this hosts the delivery machine and does the I/O it asks for in its entry actions (resolve,
// open a session or take one from the connection cache, transfer), answering each with an event. A
// delivery actor that fails is not restarted: its recipients are deferred and the queue manager (its
// predecessor) retries them later.
import { isIP } from "node:net"
import { Readable } from "node:stream"
import type { PosternConfig, TlsPolicy } from "../config/types.js"
import { currentTarget, deliveryMachine, verdictTable, type DeliveryEvent, type DeliveryOutput } from "../machines/delivery.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import type { RngShape } from "../runtime/rng.js"
import type { ActiveMessage, QueuedRecipient } from "../store/types.js"
import { ConnectionCache } from "../transport/connection-cache.js"
import type { ResolverShape } from "../transport/dns.js"
import { describeTarget, resolveTargets, type Target, type TargetsResult } from "../transport/mx.js"
import { parseNexthop } from "../transport/nexthop.js"
import type { Route } from "../transport/route.js"
import type { AttemptResult, RecipientVerdict } from "../transport/smtp-outcome.js"
import { isSession, SmtpSession, type Connector, type OutboundSession, type SessionTls } from "../transport/smtp-session.js"
import { readCaFile, type TlsInfo } from "../transport/tls-check.js"
import { expectedNames, formatTlsPolicy, isTlsRequired, tlsPolicyFor } from "../transport/tls-policy.js"
import { logActorFailure } from "./failure-log.js"
import { withFaultHook, type FaultHooks } from "./fault-hooks.js"
import { HostedMachine } from "./hosted-machine.js"

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
  /** Test-only: runs inside the delivery actor's transitions (see fault-hooks.ts). */
  readonly actorFault?: FaultHooks["delivery"] | undefined
  /** How sessions are opened: real SMTP over sockets by default; the simulator models them. */
  readonly connector?: Connector
}

/** The same verdict for every recipient of a request (a local decision, a cancellation, a failure). */
export const outcomeForAll = (request: DeliveryRequest, v: RecipientVerdict, siteFailure = false): DeliveryOutput => {
  // A plain loop: Object.fromEntries over a mapped array costs several times more, once per deferral.
  const verdicts = verdictTable()
  for (const r of request.recipients) verdicts[r.address] = v
  return { verdicts, siteFailure, relay: null }
}

/** Every recipient deferred with this status: nothing was said to a remote server. */
export const deferredForAll = (request: DeliveryRequest, dsn: string, reply: string, siteFailure = false): DeliveryOutput =>
  outcomeForAll(request, { verdict: "deferred", dsn, reply, remote: false }, siteFailure)

/** The discard and error services decide without any I/O: their outcome, or null for smtp/lmtp. */
export const localOutcome = (request: DeliveryRequest): DeliveryOutput | null => {
  const everyone = (v: RecipientVerdict): DeliveryOutput => outcomeForAll(request, v)
  switch (request.route.serviceConfig.type) {
    case "discard":
      return everyone({ verdict: "sent", dsn: "2.0.0", reply: `discarded (${request.route.nexthop || "discard"})`, remote: false })
    case "error":
      return everyone({ verdict: "bounced", dsn: "5.0.0", reply: request.route.nexthop || "mail delivery is disabled for this destination", remote: false })
    default:
      return null
  }
}

const isLmtp = (route: Route | undefined): boolean => route?.serviceConfig.type === "lmtp"

/** The port a nexthop without one means: 24 for LMTP (Postfix's lmtp(8)), 25 for SMTP. */
const defaultPortOf = (route: Route | undefined): number => (isLmtp(route) ? 24 : 25)

/** A nexthop as its route's service reads it (LMTP adds `unix:/path` and never looks up MX). */
const nexthopOf = (route: Route | undefined, text: string) => parseNexthop(text, defaultPortOf(route), isLmtp(route) ? "lmtp" : "smtp")

/**
 * A bracketed IP nexthop (`[127.0.0.1]:2526`) is its own and only server: no lookup to make. So is an LMTP
 * UNIX socket, named after us as Postfix names it (`relay=ourhost[/path]`).
 */
const literalCache = new Map<string, Target | null>()
const literalTarget = (route: Route, ourHostname: string): Target | null => {
  const key = `${route.serviceConfig.type} ${ourHostname} ${route.nexthop}`
  let t = literalCache.get(key)
  if (t === undefined) {
    const n = nexthopOf(route, route.nexthop)
    t =
      n === undefined
        ? null
        : n.socketPath !== undefined
          ? { address: n.socketPath, port: 0, hostname: ourHostname, socketPath: n.socketPath }
          : !n.mxLookup && isIP(n.host) !== 0
            ? { address: n.host, port: n.port, hostname: n.host }
            : null
    if (literalCache.size > 10_000) literalCache.clear()
    literalCache.set(key, t)
  }
  return t
}

/**
 * Sessions are cached per destination queue and server, and per TLS policy. Postfix keys them per
 * nexthop; a site or MX roll-up queue shares them across its domains instead, so the connections a
 * provider sees stay within the queue's one window (idle cached ones included). A delivery that requires
 * TLS is never handed a plaintext session, nor one checked less strictly.
 */
const cacheKeyFor = (route: Route, target: Target, tls: TlsPolicy): string =>
  // A verified session was checked against names that may come from this domain's nexthop: under a roll-up
  // queue it must not serve another domain, so the nexthop joins the key.
  `${route.key}|${target.address}:${target.port}|${formatTlsPolicy(tls)}${tls.level === "verify" ? `|${route.nexthop}` : ""}`

const needsSmtpUtf8 = (m: ActiveMessage, recipients: ReadonlyArray<QueuedRecipient>): boolean =>
  m.mailParams["SMTPUTF8"] !== undefined &&
  (/[^\x00-\x7f]/.test(m.sender) || recipients.some((r) => /[^\x00-\x7f]/.test(r.address)))

export class DeliveryAgent {
  readonly cache: ConnectionCache
  private readonly sessions = new Map<string, OutboundSession>()
  private readonly requests = new Map<string, DeliveryRequest>()
  /** The TLS policy of each delivery in flight, fixed when it starts (a config reload cannot mix levels). */
  private readonly tlsPolicies = new Map<string, TlsPolicy>()
  /** The TLS of the last session each delivery spoke over, for its log line. */
  private readonly tlsUsed = new Map<string, TlsInfo | null>()
  private readonly running = new Set<{ stop(): void }>()
  /** How to end each delivery in flight early (lease expiry, shutdown), by request id. */
  private readonly cancellers = new Map<string, (reason: string) => void>()
  private readonly machine

  constructor(private readonly deps: DeliveryAgentDeps) {
    this.cache = new ConnectionCache(deps.clock)
    // Each effect runs outside the machine and reports back with an event; an attempt that was stopped
    // meanwhile (lease expiry, shutdown) hears nothing more.
    const answer = (self: { getSnapshot(): { status: string }; send(e: DeliveryEvent): void }, work: Promise<DeliveryEvent>, onError: (error: unknown) => DeliveryEvent) => {
      work.then(
        (event) => {
          if (self.getSnapshot().status === "active") self.send(event)
        },
        (error: unknown) => {
          if (self.getSnapshot().status === "active") self.send(onError(error))
        },
      )
    }
    this.machine = withFaultHook(deliveryMachine.provide({
      actions: {
        lookUpServers: ({ context, self }) =>
          answer(self, this.lookUpServers(context.deliveryId, context.nexthop).then((result) => ({ type: "lookup.done", result })), (error) => ({ type: "lookup.error", error })),
        openSession: ({ context, self }) =>
          answer(
            self,
            this.openSession(context.deliveryId, currentTarget(context)).then((r) => (r === "ready" ? { type: "session.opened" } : { type: "session.refused", result: r })),
            (error) => ({ type: "session.error", error }),
          ),
        transferMail: ({ context, self }) =>
          answer(self, this.transfer(context.deliveryId, context.pending).then((result) => ({ type: "transfer.done", result })), (error) => ({ type: "transfer.error", error })),
      },
    }), deps.actorFault)
  }

  private async lookUpServers(deliveryId: string, text: string): Promise<TargetsResult> {
    const route = this.requests.get(deliveryId)?.route
    const nexthop = nexthopOf(route, text)
    if (nexthop === undefined) {
      return { kind: "failed" as const, permanent: true, dsn: "5.3.5", reason: `bad nexthop syntax: ${text}` }
    }
    if (nexthop.socketPath !== undefined) {
      const hostname = this.deps.config().hostname
      return { kind: "targets" as const, targets: [{ address: nexthop.socketPath, port: 0, hostname, socketPath: nexthop.socketPath }] }
    }
    const resolved = await resolveTargets(nexthop, this.deps.dns, this.deps.rng)
    const primary = nexthop.mxLookup ? this.withoutOurselves(resolved, nexthop.host) : resolved
    // smtpFallbackRelay is Postfix's smtp_fallback_relay: SMTP only (lmtp(8) has its own, unset)
    return isLmtp(route) ? primary : this.withFallbackRelays(primary)
  }

  /** Runs one delivery to its end. Never rejects: a failing agent defers its recipients. */
  deliver(request: DeliveryRequest): Promise<DeliveryOutput> {
    const local = localOutcome(request)
    if (local !== null) return Promise.resolve(local)
    return new Promise((resolve) => {
      this.requests.set(request.id, request)
      const config = this.deps.config()
      const tlsPolicy = tlsPolicyFor(config, request.route.serviceConfig, request.route.nexthop)
      this.tlsPolicies.set(request.id, tlsPolicy)
      const literal = config.smtpFallbackRelay.length > 0 && !isLmtp(request.route) ? null : literalTarget(request.route, config.hostname)
      let finished = false
      const finish = (output: DeliveryOutput) => {
        if (finished) return
        finished = true
        this.running.delete(actor)
        this.requests.delete(request.id)
        this.cancellers.delete(request.id)
        const session = this.sessions.get(request.id)
        this.sessions.delete(request.id)
        if (session !== undefined) this.cache.put(cacheKeyFor(request.route, session.target, tlsPolicy), session)
        this.tlsPolicies.delete(request.id)
        const tls = this.tlsUsed.get(request.id)
        this.tlsUsed.delete(request.id)
        resolve(tls != null && output.relay !== null ? { ...output, tls: tls.protocol } : output)
      }
      const actor: HostedMachine<typeof this.machine> = new HostedMachine(this.machine, {
        done: (output) => finish(output),
        failed: (error) => {
          logActorFailure(
            this.deps.log,
            { actor: `delivery/${request.id}`, parent: `destination/${request.route.key}`, queueIds: [request.message.queueId], restarts: 0, err: error },
            "its recipients are deferred and retried (not restarted)",
          )
          this.sessions.get(request.id)?.close()
          this.sessions.delete(request.id)
          // Counted against the destination (negative feedback): a destination whose delivery actors keep
          // dying goes dead and its mail is deferred without new attempts, instead of failing again and again.
          finish(deferredForAll(request, "4.3.0", "delivery agent failure", true))
        },
      })
      this.cancellers.set(request.id, (reason) => {
        // The session may be mid-transaction: it is closed, never reused.
        this.sessions.get(request.id)?.close()
        this.sessions.delete(request.id)
        finish(deferredForAll(request, "4.4.7", reason))
        actor.stop()
      })
      this.running.add(actor)
      actor.start({
        deliveryId: request.id,
        nexthop: request.route.nexthop,
        recipients: request.recipients.map((r) => r.address),
        ...(literal !== null ? { targets: [literal] } : {}),
      })
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

  private async openSession(deliveryId: string, target: Target): Promise<"ready" | AttemptResult> {
    const request = this.requests.get(deliveryId)
    const policy = this.tlsPolicies.get(deliveryId)
    if (request === undefined || policy === undefined) return { stage: "connect", reason: "delivery was cancelled" }
    const key = cacheKeyFor(request.route, target, policy)
    const cached = await this.cache.take(key)
    // Cancelled meanwhile (lease expiry, shutdown): nothing of this attempt may stay open.
    const cancelled = () => !this.requests.has(deliveryId)
    if (cached !== null && cancelled()) {
      this.cache.put(key, cached)
      return { stage: "connect", reason: "delivery was cancelled" }
    }
    if (cached !== null && cached.tls === null && isTlsRequired(policy.level)) {
      cached.close() // never reached through the per-policy key; a guard against a plaintext session here
    } else if (cached !== null) {
      this.sessions.set(deliveryId, cached)
      return "ready"
    }
    const config = this.deps.config()
    let tls: SessionTls
    try {
      const nexthopHost = nexthopOf(request.route, request.route.nexthop)?.host ?? request.route.nexthop
      tls = {
        level: policy.level,
        expectedNames: expectedNames(policy, target.hostname, nexthopHost),
        ca: policy.level === "verify" && config.smtpTlsCaFile !== null ? readCaFile(config.smtpTlsCaFile) : null,
      }
    } catch (e) {
      return { stage: "local", permanent: false, dsn: "4.7.5", reason: `cannot read smtpTlsCaFile ${config.smtpTlsCaFile}: ${(e as Error).message}` }
    }
    const connect = this.deps.connector ?? SmtpSession.open
    const options = {
      target,
      heloName: config.hostname,
      lmtp: isLmtp(request.route),
      connectTimeout: config.smtpConnectTimeout,
      heloTimeout: config.smtpHeloTimeout,
      dataTimeout: config.smtpDataDoneTimeout,
      tls,
    }
    let opened = await connect(options, this.deps.clock.now())
    if (!isSession(opened) && opened.stage === "tls" && opened.handshake && policy.level === "may") {
      // Postfix at `may`: a failed handshake is retried with the same server in plaintext.
      this.deps.log.warn(
        { queue_id: request.message.queueId, relay: describeTarget(target), reason: opened.reason },
        `${opened.reason}; trying ${describeTarget(target)} again without TLS`,
      )
      if (!cancelled()) opened = await connect({ ...options, tls: { ...tls, level: "none" } }, this.deps.clock.now())
    }
    if (!isSession(opened)) return opened
    if (cancelled()) {
      opened.close()
      return { stage: "connect", reason: "delivery was cancelled" }
    }
    if (opened.tls != null) {
      const t = opened.tls
      this.deps.log.info(
        { relay: opened.relay, tls: t.protocol, cipher: t.cipher, trust: t.trust },
        `${t.trust} TLS connection established to ${opened.relay}: ${t.protocol} with cipher ${t.cipher}`,
      )
    }
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
    if (this.requests.has(deliveryId)) this.tlsUsed.set(deliveryId, session.tls ?? null)
    const policy = this.tlsPolicies.get(deliveryId)
    if (policy !== undefined) this.cache.put(cacheKeyFor(request.route, session.target, policy), session)
    else session.close()
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
