// Nexthop syntax as transport(5) and relayhost write it: `[host]:port` and `[host]` skip the MX lookup,
// `host` and `host:port` look up MX records of host. IPv6 literals go in brackets: `[::1]:2526`.

export interface Nexthop {
  /** Host name or IP literal, without brackets. */
  readonly host: string
  readonly port: number
  /** True when MX records of `host` are to be looked up (no brackets). */
  readonly mxLookup: boolean
}

export const parseNexthop = (text: string, defaultPort = 25): Nexthop | undefined => {
  const t = text.trim()
  if (t.length === 0) return undefined
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(t)
  if (bracketed !== null) {
    const port = bracketed[2] === undefined ? defaultPort : Number(bracketed[2])
    if (!(port >= 1 && port <= 65535)) return undefined
    return { host: bracketed[1]!.toLowerCase(), port, mxLookup: false }
  }
  const plain = /^([A-Za-z0-9._-]+)(?::(\d+))?$/.exec(t)
  if (plain === null) return undefined
  const port = plain[2] === undefined ? defaultPort : Number(plain[2])
  if (!(port >= 1 && port <= 65535)) return undefined
  return { host: plain[1]!.toLowerCase(), port, mxLookup: true }
}

export const formatNexthop = (n: Nexthop): string =>
  n.mxLookup ? (n.port === 25 ? n.host : `${n.host}:${n.port}`) : `[${n.host}]${n.port === 25 ? "" : `:${n.port}`}`
