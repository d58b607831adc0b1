// DNS as a service, so that nothing in tests ever does a real lookup. The default layer uses node's
// resolver; tests provide a table. Failures are typed: not-found (permanent) versus temporary.
import { promises as dnsPromises } from "node:dns"
import { Context, Layer } from "effect"

export interface MxRecord {
  readonly exchange: string
  readonly priority: number
}

export type DnsFailure = "not-found" | "no-data" | "temporary"

export class DnsLookupError extends Error {
  constructor(
    readonly kind: DnsFailure,
    readonly name_: string,
    detail: string,
  ) {
    super(`${name_}: ${detail}`)
  }
}

export interface ResolverShape {
  readonly resolveMx: (domain: string) => Promise<ReadonlyArray<MxRecord>>
  /** A and AAAA addresses of a host. */
  readonly resolveAddresses: (host: string) => Promise<ReadonlyArray<string>>
  /** PTR names of an address (smtpd's client hostname). */
  readonly reverse: (address: string) => Promise<ReadonlyArray<string>>
}

const classify = (error: unknown, name: string): DnsLookupError => {
  const code = (error as { code?: string }).code
  if (code === "ENOTFOUND" || code === "NXDOMAIN") return new DnsLookupError("not-found", name, "Host or domain name not found")
  if (code === "ENODATA") return new DnsLookupError("no-data", name, "no records of that type")
  return new DnsLookupError("temporary", name, `lookup failed: ${code ?? String(error)}`)
}

export const systemResolver: ResolverShape = {
  resolveMx: (domain) =>
    dnsPromises.resolveMx(domain).catch((e: unknown) => {
      throw classify(e, domain)
    }),
  resolveAddresses: async (host) => {
    const [v4, v6] = await Promise.allSettled([dnsPromises.resolve4(host), dnsPromises.resolve6(host)])
    const out = [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])]
    if (out.length > 0) return out
    const err = v4.status === "rejected" ? v4.reason : v6.status === "rejected" ? v6.reason : undefined
    throw classify(err ?? Object.assign(new Error("no address"), { code: "ENODATA" }), host)
  },
  reverse: (address) => dnsPromises.reverse(address),
}

export interface DnsTable {
  readonly mx?: Readonly<Record<string, ReadonlyArray<MxRecord>>>
  readonly addresses?: Readonly<Record<string, ReadonlyArray<string>>>
  readonly ptr?: Readonly<Record<string, ReadonlyArray<string>>>
  /** Names whose lookups fail temporarily. */
  readonly temporaryFailures?: ReadonlyArray<string>
}

/** A resolver answering from a table: unknown names are NXDOMAIN. For tests and the simulator. */
export const tableResolver = (table: DnsTable): ResolverShape => {
  const lookup = <T>(map: Readonly<Record<string, T>> | undefined, name: string): T => {
    const key = name.toLowerCase()
    if (table.temporaryFailures?.includes(key)) throw new DnsLookupError("temporary", key, "lookup failed: ESERVFAIL")
    const hit = map?.[key]
    if (hit === undefined) {
      const exists = table.mx?.[key] !== undefined || table.addresses?.[key] !== undefined
      throw new DnsLookupError(exists ? "no-data" : "not-found", key, exists ? "no records of that type" : "Host or domain name not found")
    }
    return hit
  }
  return {
    resolveMx: async (d) => lookup(table.mx, d),
    resolveAddresses: async (h) => lookup(table.addresses, h),
    reverse: async (a) => table.ptr?.[a] ?? [],
  }
}

export class Dns extends Context.Service<Dns, ResolverShape>()("postern/transport/Dns") {
  static readonly layer = Layer.succeed(Dns, Dns.of(systemResolver))
  static readonly layerTable = (table: DnsTable) => Layer.succeed(Dns, Dns.of(tableResolver(table)))
}
