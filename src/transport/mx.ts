// From a nexthop to the list of addresses to try, as Postfix's smtp_addr.c does: MX records by
// preference with equal preferences shuffled (seeded), no MX → the host's own addresses, null MX →
// permanent failure, NXDOMAIN → permanent, a resolver failure → temporary. Bracketed nexthops skip MX.
import { isIP } from "node:net"
import type { RngShape } from "../runtime/rng.js"
import { DnsLookupError, type ResolverShape } from "./dns.js"
import type { Nexthop } from "./nexthop.js"

export interface Target {
  /** The IP address to connect to. */
  readonly address: string
  readonly port: number
  /** The host name it came from (the MX exchange, or the nexthop host). */
  readonly hostname: string
  /** LMTP over a UNIX-domain socket: its path (then `address` is the path and `port` 0). */
  readonly socketPath?: string
}

/** A server as logs name it (Postfix's relay=): `host[address]:port`, or `host[/path]` for a UNIX socket. */
export const describeTarget = (t: Target): string =>
  t.socketPath !== undefined ? `${t.hostname}[${t.socketPath}]` : `${t.hostname}[${t.address}]:${t.port}`

export type TargetsResult =
  | { readonly kind: "targets"; readonly targets: ReadonlyArray<Target> }
  | { readonly kind: "failed"; readonly permanent: boolean; readonly dsn: string; readonly reason: string }

export const DEFAULT_MX_ADDRESS_LIMIT = 5

const shuffle = <T>(items: Array<T>, rng: RngShape): Array<T> => {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}

const addressesOf = async (dns: ResolverShape, host: string): Promise<ReadonlyArray<string>> =>
  isIP(host) !== 0 ? [host] : dns.resolveAddresses(host)

const failure = (e: unknown, what: string): TargetsResult => {
  if (e instanceof DnsLookupError && e.kind === "not-found") {
    return { kind: "failed", permanent: true, dsn: "5.1.2", reason: `Host or domain name not found. Name service error for name=${what}` }
  }
  const detail = e instanceof Error ? e.message : String(e)
  return { kind: "failed", permanent: false, dsn: "4.4.3", reason: `Host or domain name lookup failed for ${what}: ${detail}` }
}

export const resolveTargets = async (
  nexthop: Nexthop,
  dns: ResolverShape,
  rng: RngShape,
  addressLimit = DEFAULT_MX_ADDRESS_LIMIT,
): Promise<TargetsResult> => {
  let hosts: Array<string>
  if (!nexthop.mxLookup || isIP(nexthop.host) !== 0) {
    hosts = [nexthop.host]
  } else {
    let records: ReadonlyArray<{ exchange: string; priority: number }>
    try {
      records = await dns.resolveMx(nexthop.host)
    } catch (e) {
      if (e instanceof DnsLookupError && e.kind === "no-data") records = []
      else return failure(e, nexthop.host)
    }
    if (records.length === 1 && (records[0]!.exchange === "" || records[0]!.exchange === ".")) {
      return { kind: "failed", permanent: true, dsn: "5.1.10", reason: `Domain ${nexthop.host} does not accept mail (nullMX)` }
    }
    if (records.length === 0) {
      hosts = [nexthop.host]
    } else {
      const byPref = new Map<number, Array<string>>()
      for (const r of records) byPref.set(r.priority, [...(byPref.get(r.priority) ?? []), r.exchange.toLowerCase()])
      hosts = [...byPref.keys()].sort((a, b) => a - b).flatMap((p) => shuffle(byPref.get(p)!, rng))
    }
  }
  const targets: Array<Target> = []
  let lastError: unknown
  for (const host of hosts) {
    if (targets.length >= addressLimit) break
    try {
      const addrs = shuffle([...(await addressesOf(dns, host))], rng)
      for (const address of addrs) {
        if (targets.length >= addressLimit) break
        targets.push({ address, port: nexthop.port, hostname: host })
      }
    } catch (e) {
      lastError = e
    }
  }
  if (targets.length === 0) return failure(lastError, hosts.length === 1 ? hosts[0]! : nexthop.host)
  return { kind: "targets", targets }
}
