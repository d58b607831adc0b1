// Modelled destinations: the remote MTAs the simulator puts behind the production DeliveryAgent's
// `Connector` seam and a DNS table. Each destination answers connects and mail transactions as a real
// server would, on virtual time (every reply is a ManualClock timer): latency, greylisting (postgrey's
// triplet model), rate limits, outages (refuse, hang, 421), random 4xx, unknown users (5xx), slow DATA
// and a connection limit. It holds no Postern logic: which reply means what is decided by the production
// smtp-outcome rules, and retries by the production queue manager.
import type { ClockShape } from "../runtime/clock.js"
import type { RngShape } from "../runtime/rng.js"
import { tableResolver, type MxRecord, type ResolverShape } from "../transport/dns.js"
import type { Target } from "../transport/mx.js"
import type { AttemptResult, RcptRejection } from "../transport/smtp-outcome.js"
import type { Connector, OutboundEnvelope, OutboundSession, SessionOptions } from "../transport/smtp-session.js"
import { sample, stream, unitHash } from "./random.js"
import { groupDomains, type DestinationSpec, type Outage, type RateLimit, type Scenario, type Shared } from "./scenario.js"

/** What one destination saw, for the summary. */
export interface DestinationStats {
  /** Connection attempts (TCP connects) to any of its hosts. */
  connections: number
  /** Connections that reached a session (greeting and EHLO done). */
  sessions: number
  /** Mail transactions started on its sessions. */
  transactions: number
  recipientsAccepted: number
  recipientsRejected: number
  /** Most sessions open at once. */
  peakSessions: number
}

const EXTENSIONS = new Set(["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"])

/** `{rcpt}`, `{domain}` and `{host}` in a configured reply. */
const fill = (template: string, rcpt: string, host: string): string =>
  template.replaceAll("{rcpt}", rcpt).replaceAll("{domain}", rcpt.slice(rcpt.lastIndexOf("@") + 1)).replaceAll("{host}", host)

const isClosing = (reply: string): boolean => reply.startsWith("421")

/** Fixed windows of `window` ms from the run's time 0: at most `limit` counted events in each. */
class WindowCounter {
  private index = -1
  private used = 0
  constructor(
    private readonly rule: RateLimit,
    private readonly origin: number,
  ) {}

  /** Counts one event at `now` if the window has room; false when it is over the limit. */
  take(now: number): boolean {
    const index = Math.floor((now - this.origin) / this.rule.window)
    if (index !== this.index) {
      this.index = index
      this.used = 0
    }
    if (this.used >= this.rule.limit) return false
    this.used++
    return true
  }
}

/** Postgrey's triplet database: tempfail until `delay` after first seen, unless the retry came too late. */
class Greylist {
  private readonly triplets = new Map<string, { first: number; passed: boolean }>()
  constructor(private readonly delay: number, private readonly retryWindow: number) {}

  /** Whether the triplet passes at `now` (and records it). */
  passes(key: string, now: number): boolean {
    const t = this.triplets.get(key)
    if (t === undefined || (!t.passed && now - t.first > this.retryWindow)) {
      this.triplets.set(key, { first: now, passed: false })
      return false
    }
    if (t.passed) return true
    if (now - t.first < this.delay) return false
    t.passed = true
    return true
  }
}

class ModelledDestination {
  readonly stats: DestinationStats = { connections: 0, sessions: 0, transactions: 0, recipientsAccepted: 0, recipientsRejected: 0, peakSessions: 0 }
  open = 0
  private readonly greylist: Greylist | null
  private readonly rate: WindowCounter | null
  readonly rng: RngShape

  constructor(
    readonly spec: DestinationSpec,
    readonly seed: number,
    readonly origin: number,
  ) {
    this.rng = stream(seed, `destination/${spec.name}`)
    this.greylist = spec.greylist === null ? null : new Greylist(spec.greylist.delay, spec.greylist.retryWindow)
    this.rate = spec.rateLimit === null ? null : new WindowCounter(spec.rateLimit, origin)
  }

  outageAt(now: number, host: string): Outage | undefined {
    const t = now - this.origin
    return this.spec.outages.find((o) => t >= o.start && t < o.start + o.duration && (o.hosts === null || o.hosts.includes(host)))
  }

  /** A rate-limit reply when this event is over the limit, else null (and the event is counted). */
  overLimit(per: RateLimit["per"], now: number, rcpt: string, host: string): string | null {
    const rule = this.spec.rateLimit
    if (rule === null || rule.per !== per) return null
    return this.rate!.take(now) ? null : fill(rule.reply, rcpt, host)
  }

  greylisted(sender: string, rcpt: string, now: number): boolean {
    // The client part of the triplet is constant: the simulated Postern has one address.
    return this.greylist !== null && !this.greylist.passes(`${sender}\u0000${rcpt}`, now)
  }

  isUnknown(rcpt: string): boolean {
    const u = this.spec.unknownRecipients
    return u !== null && unitHash(this.seed, `unknown/${rcpt}`) < u.share
  }

  tempfails(stage: "mail" | "rcpt" | "data"): string | null {
    const t = this.spec.tempfail
    if (t === null || t.stage !== stage) return null
    return this.rng.next() < t.probability ? t.reply : null
  }
}

interface Host {
  readonly name: string
  readonly address: string
  readonly destination: ModelledDestination
}

/** Every destination of a scenario, expanded for one seed: the sender's domain accepts everything. */
export const expandDestinations = (scenario: Scenario, seed: number): Array<DestinationSpec> => {
  const out: Array<DestinationSpec> = [...scenario.destinations]
  for (const g of scenario.groups) {
    for (const domain of groupDomains(g)) {
      const has = <T>(s: Shared<T> | null, key: string): T | null =>
        s !== null && unitHash(seed, `group/${g.name}/${domain}/${key}`) < s.ofDomains ? s.value : null
      out.push({
        name: domain,
        domains: [domain],
        mx: [{ host: `mx.${domain}`, priority: 10 }],
        latency: g.latency,
        connectLatency: g.connectLatency,
        greylist: has(g.greylist, "greylist"),
        rateLimit: has(g.rateLimit, "rateLimit"),
        outages: g.outages.flatMap((o, i) => {
          const v = has(o, `outage${i}`)
          return v === null ? [] : [v]
        }),
        tempfail: has(g.tempfail, "tempfail"),
        unknownRecipients: has(g.unknownRecipients, "unknownRecipients"),
        slowData: has(g.slowData, "slowData"),
        maxConnections: has(g.maxConnections, "maxConnections"),
      })
    }
  }
  const senderDomain = scenario.traffic.sender.slice(scenario.traffic.sender.lastIndexOf("@") + 1).toLowerCase()
  if (!out.some((d) => d.domains.includes(senderDomain))) {
    out.push({
      name: senderDomain,
      domains: [senderDomain],
      mx: [{ host: `mx.${senderDomain}`, priority: 10 }],
      latency: { kind: "fixed", value: 200 },
      connectLatency: { kind: "fixed", value: 200 },
      greylist: null,
      rateLimit: null,
      outages: [],
      tempfail: null,
      unknownRecipients: null,
      slowData: null,
      maxConnections: null,
    })
  }
  return out
}

/** The modelled Internet of one run: DNS answers and a Connector for the DeliveryAgent. */
export class ModelledInternet {
  readonly dns: ResolverShape
  private readonly hosts = new Map<string, Host>()
  private readonly byName: Array<ModelledDestination> = []

  constructor(
    specs: ReadonlyArray<DestinationSpec>,
    seed: number,
    private readonly clock: ClockShape,
  ) {
    const origin = clock.now()
    const mx: Record<string, Array<MxRecord>> = {}
    const addresses: Record<string, Array<string>> = {}
    let n = 0
    for (const spec of specs) {
      const d = new ModelledDestination(spec, seed, origin)
      this.byName.push(d)
      for (const domain of spec.domains) mx[domain] = spec.mx.map((m) => ({ exchange: m.host, priority: m.priority }))
      for (const m of spec.mx) {
        n++
        const address = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`
        addresses[m.host] = [address]
        this.hosts.set(address, { name: m.host, address, destination: d })
      }
    }
    this.dns = tableResolver({ mx, addresses })
  }

  /** Per destination (by name, in scenario order). */
  stats(): Array<{ name: string; stats: DestinationStats }> {
    return this.byName.map((d) => ({ name: d.spec.name, stats: { ...d.stats } }))
  }

  readonly connector: Connector = (options: SessionOptions, now: number) => {
    const host = this.hosts.get(options.target.address)
    if (host === undefined) return this.after(0, { stage: "connect", reason: "No route to host" })
    const d = host.destination
    d.stats.connections++
    const latency = sample(d.spec.connectLatency, d.rng)
    const outage = d.outageAt(now, host.name)
    if (outage !== undefined) {
      if (outage.mode === "refuse") return this.after(latency, { stage: "connect", reason: "Connection refused" })
      if (outage.mode === "hang") return this.after(options.connectTimeout, { stage: "connect", reason: "Connection timed out" })
      return this.after(latency, { stage: "greeting", reply: `421 4.3.2 ${host.name} Service not available, closing transmission channel` })
    }
    if (d.spec.maxConnections !== null && d.open >= d.spec.maxConnections.limit) {
      return this.after(latency, { stage: "greeting", reply: fill(d.spec.maxConnections.reply, "", host.name) })
    }
    const limited = d.overLimit("connection", now, "", host.name)
    if (limited !== null) return this.after(latency, { stage: "greeting", reply: limited })
    d.open++
    d.stats.sessions++
    d.stats.peakSessions = Math.max(d.stats.peakSessions, d.open)
    return this.after<OutboundSession | AttemptResult>(latency, new ModelledSession(host, options, now, this))
  }

  /** Resolves with `value` after `ms` of virtual time (at once when `ms` is 0: a reply with no latency). */
  after<T>(ms: number, value: T): Promise<T> {
    if (ms <= 0) return Promise.resolve(value)
    return new Promise((resolve) => this.clock.setTimeout(() => resolve(value), ms))
  }

  now(): number {
    return this.clock.now()
  }
}

class ModelledSession implements OutboundSession {
  readonly target: Target
  lastClean = false
  private closed = false
  private transactions = 0

  constructor(
    private readonly host: Host,
    private readonly options: SessionOptions,
    readonly openedAt: number,
    private readonly net: ModelledInternet,
  ) {
    this.target = options.target
  }

  get usable(): boolean {
    return !this.closed
  }

  get relay(): string {
    return `${this.target.hostname}[${this.target.address}]:${this.target.port}`
  }

  supports(extension: string): boolean {
    return EXTENSIONS.has(extension.toUpperCase())
  }

  send(envelope: OutboundEnvelope, _body: unknown): Promise<AttemptResult> {
    const d = this.host.destination
    const now = this.net.now()
    this.lastClean = false
    const outage = d.outageAt(now, this.host.name)
    if (outage !== undefined) {
      // The server went away under an open session.
      this.close()
      return outage.mode === "hang"
        ? this.net.after(this.options.dataTimeout, { stage: "io", reason: "Connection timed out", sessionCompleted: this.transactions > 0 })
        : this.net.after(0, { stage: "io", reason: "Connection reset by peer", sessionCompleted: this.transactions > 0 })
    }
    d.stats.transactions++
    const latency = sample(d.spec.latency, d.rng)
    const name = this.host.name
    // MAIL FROM
    const mailReply = d.overLimit("message", now, "", name) ?? d.tempfails("mail")
    if (mailReply !== null) {
      if (isClosing(mailReply)) this.close()
      d.stats.recipientsRejected += envelope.to.length
      return this.net.after(latency, { stage: "mail", reply: fill(mailReply, "", name) })
    }
    // RCPT TO, each: unknown user, greylisting, random 4xx, then the per-recipient rate limit.
    const accepted: Array<string> = []
    const rejected: Array<RcptRejection> = []
    let closing: string | null = null
    for (const rcpt of envelope.to) {
      let reply: string | null = closing
      if (reply === null && d.isUnknown(rcpt)) reply = fill(d.spec.unknownRecipients!.reply, rcpt, name)
      if (reply === null && d.greylisted(envelope.from, rcpt, now)) reply = fill(d.spec.greylist!.reply, rcpt, name)
      if (reply === null) reply = d.tempfails("rcpt")
      if (reply === null) reply = d.overLimit("recipient", now, rcpt, name)
      if (reply === null) {
        accepted.push(rcpt)
        continue
      }
      reply = fill(reply, rcpt, name)
      if (isClosing(reply)) closing = reply
      rejected.push({ address: rcpt, reply })
    }
    d.stats.recipientsRejected += rejected.length
    if (closing !== null) this.close()
    if (accepted.length === 0) {
      this.transactions++
      return this.net.after(latency, { stage: "done", reply: rejected[0]?.reply ?? "", accepted: [], rejected })
    }
    // DATA
    const slow = d.spec.slowData
    const dataTime = slow === null ? 0 : slow.delay + (slow.bytesPerSecond > 0 ? Math.round((envelope.size * 1000) / slow.bytesPerSecond) : 0)
    if (dataTime > this.options.dataTimeout) {
      this.close()
      return this.net.after(latency + this.options.dataTimeout, { stage: "io", reason: "Connection timed out", sessionCompleted: this.transactions > 0 })
    }
    this.transactions++
    const dataReply = d.tempfails("data")
    if (dataReply !== null) {
      return this.net.after(latency + dataTime, { stage: "data", reply: fill(dataReply, "", name), accepted, rejected })
    }
    d.stats.recipientsAccepted += accepted.length
    this.lastClean = closing === null
    return this.net.after(latency + dataTime, { stage: "done", reply: "250 2.0.0 Ok: queued", accepted, rejected })
  }

  reset(): Promise<boolean> {
    const down = this.host.destination.outageAt(this.net.now(), this.host.name) !== undefined
    if (down) this.close()
    return Promise.resolve(!this.closed)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.host.destination.open--
  }
}
