// Nexthop syntax as transport(5) and relayhost write it: `[host]:port` and `[host]` skip the MX lookup,
// `host` and `host:port` look up MX records of host. IPv6 literals go in brackets: `[::1]:2526`.
// The grammar and its checks live with the config schema (one parser); this resolves the default port.
import { parseNexthop as parseNexthopSyntax } from "../config/schema.js"

export interface Nexthop {
  /** Host name or IP literal, without brackets. */
  readonly host: string
  readonly port: number
  /** True when MX records of `host` are to be looked up (no brackets). */
  readonly mxLookup: boolean
}

/** Parsed nexthops, by text and default port: every delivery names one, and parsing validates addresses. */
const parsedCache = new Map<string, Nexthop | undefined>()

export const parseNexthop = (text: string, defaultPort = 25): Nexthop | undefined => {
  const key = `${defaultPort} ${text}`
  if (parsedCache.has(key)) return parsedCache.get(key)
  const parsed = parseNexthopSyntax(text)
  const result = parsed.ok
    ? { host: parsed.value.host.toLowerCase(), port: parsed.value.port ?? defaultPort, mxLookup: parsed.value.mx }
    : undefined
  if (parsedCache.size >= 10_000) parsedCache.clear()
  parsedCache.set(key, result)
  return result
}
