// Nexthop syntax as transport(5) and relayhost write it: `[host]:port` and `[host]` skip the MX lookup,
// `host` and `host:port` look up MX records of host. IPv6 literals go in brackets: `[::1]:2526`. For LMTP
// (lmtp(8)) also `unix:/path/to/socket`, and a host is never looked up as a mail domain.
// The grammar and its checks live with the config schema (one parser); this resolves the default port.
import { parseNexthop as parseNexthopSyntax, type NexthopProtocol } from "../config/schema.js"

export interface Nexthop {
  /** Host name or IP literal, without brackets (for a UNIX-domain socket: its path). */
  readonly host: string
  readonly port: number
  /** True when MX records of `host` are to be looked up (no brackets). */
  readonly mxLookup: boolean
  /** LMTP over a UNIX-domain socket: the socket's path. */
  readonly socketPath?: string
}

/** Parsed nexthops, by text and default port: every delivery names one, and parsing validates addresses. */
const parsedCache = new Map<string, Nexthop | undefined>()

export const parseNexthop = (text: string, defaultPort = 25, protocol: NexthopProtocol = "smtp"): Nexthop | undefined => {
  const key = `${protocol} ${defaultPort} ${text}`
  if (parsedCache.has(key)) return parsedCache.get(key)
  const parsed = parseNexthopSyntax(text, protocol)
  const result = !parsed.ok
    ? undefined
    : parsed.value.socketPath !== undefined
      ? { host: parsed.value.socketPath, port: 0, mxLookup: false, socketPath: parsed.value.socketPath }
      : { host: parsed.value.host.toLowerCase(), port: parsed.value.port ?? defaultPort, mxLookup: parsed.value.mx }
  if (parsedCache.size >= 10_000) parsedCache.clear()
  parsedCache.set(key, result)
  return result
}
