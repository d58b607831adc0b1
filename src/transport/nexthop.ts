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

export const parseNexthop = (text: string, defaultPort = 25): Nexthop | undefined => {
  const parsed = parseNexthopSyntax(text)
  if (!parsed.ok) return undefined
  return { host: parsed.value.host.toLowerCase(), port: parsed.value.port ?? defaultPort, mxLookup: parsed.value.mx }
}
