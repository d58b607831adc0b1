// The queue manager's MX roll-up: before mail is queued for a destination, the MX hosts of its nexthop
// decide which destination queue it waits in (src/transport/sites.ts). Lookups go through the same
// injectable resolver as delivery, are shared while in flight and cached for a short while (the resolver
// gives no TTL), never hold up the routing of other mail, and a failed lookup falls back to the per-domain
// queue: the delivery agent then meets the same DNS answer and reports it as usual (5.1.2, 4.4.3, nullMX).
import type { PosternConfig } from "../config/types.js"
import type { ClockShape } from "../runtime/clock.js"
import { DnsLookupError, type ResolverShape } from "../transport/dns.js"
import type { Nexthop } from "../transport/nexthop.js"
import type { Route } from "../transport/route.js"
import { rollableNexthop, rollUp } from "../transport/sites.js"

/** How long an MX answer decides the queue of new mail for its domain. */
export const MX_CACHE_MS = 60_000
/** How long a failed lookup keeps the per-domain queue before it is tried again. */
export const MX_FAILURE_CACHE_MS = 10_000
const MAX_ENTRIES = 10_000

interface Answer {
  /** The MX host names (lowercase); null when the domain is queued on its own (the lookup failed, null MX). */
  readonly hosts: ReadonlyArray<string> | null
  readonly until: number
  /** Routes rolled up by this answer under one config, by route key (the same every time until either changes). */
  rolled?: { readonly config: PosternConfig; readonly byKey: Map<string, Route> }
}

export class MxRollup {
  private readonly answers = new Map<string, Answer>()
  private readonly lookups = new Map<string, Promise<Answer>>()

  constructor(private readonly deps: { readonly dns: ResolverShape; readonly clock: ClockShape }) {}

  /** The route with the key of its queue: at once when no lookup is needed, else once the lookup is done. Never rejects. */
  route(config: PosternConfig, route: Route): Route | Promise<Route> {
    const hop = rollableNexthop(config, route)
    if (hop === undefined) return route
    const cached = this.answers.get(hop.host)
    if (cached !== undefined && cached.until > this.deps.clock.now()) return this.rolledBy(cached, config, route, hop)
    return this.lookup(hop.host).then((a) => this.rolledBy(a, config, route, hop))
  }

  /** The route rolled up by an answer: worked out once per answer, config and route key. */
  private rolledBy(answer: Answer, config: PosternConfig, route: Route, hop: Nexthop): Route {
    if (answer.hosts === null) return route
    if (answer.rolled?.config !== config) answer.rolled = { config, byKey: new Map() }
    let rolled = answer.rolled.byKey.get(route.key)
    if (rolled === undefined) {
      rolled = rollUp(config, route, hop, answer.hosts)
      answer.rolled.byKey.set(route.key, rolled)
    }
    return rolled
  }

  /** The queue key the route has now, when known without a lookup (postern queue flush --destination). */
  peek(config: PosternConfig, route: Route): string | undefined {
    const hop = rollableNexthop(config, route)
    if (hop === undefined) return route.key
    const cached = this.answers.get(hop.host)
    return cached === undefined ? undefined : cached.hosts === null ? route.key : rollUp(config, route, hop, cached.hosts).key
  }

  private lookup(domain: string): Promise<Answer> {
    let pending = this.lookups.get(domain)
    if (pending === undefined) {
      pending = this.deps.dns.resolveMx(domain).then(
        (records) => {
          const hosts = [...new Set(records.map((r) => r.exchange.toLowerCase().replace(/\.$/, "")))]
          // A null MX (RFC 7505) has no host to share: the domain keeps its own queue, and bounces there.
          if (hosts.includes("")) return this.remember(domain, null)
          return this.remember(domain, hosts.length === 0 ? [domain] : hosts)
        },
        (e: unknown) =>
          // No MX records: mail goes to the domain's own addresses, so that host is its MX set.
          e instanceof DnsLookupError && e.kind === "no-data" ? this.remember(domain, [domain]) : this.remember(domain, null),
      )
      this.lookups.set(domain, pending)
    }
    return pending
  }

  private remember(domain: string, hosts: ReadonlyArray<string> | null): Answer {
    this.lookups.delete(domain)
    if (this.answers.size >= MAX_ENTRIES) this.answers.clear()
    const answer = { hosts, until: this.deps.clock.now() + (hosts === null ? MX_FAILURE_CACHE_MS : MX_CACHE_MS) }
    this.answers.set(domain, answer)
    return answer
  }
}
