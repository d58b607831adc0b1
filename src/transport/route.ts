// Routing (Postfix's trivial-rewrite resolve + transport_maps): which delivery service and nexthop a
// recipient goes to, decided from the CURRENT config each time a recipient enters the active window.
import type { PosternConfig, ServiceConfig } from "../config/types.js"

export interface Route {
  /** The service name (a key of `services`). */
  readonly service: string
  readonly serviceConfig: ServiceConfig
  /** For smtp/lmtp a nexthop (`[host]:port`, `host`); for error the reason; for discard free text. */
  readonly nexthop: string
  /** The destination queue key: one destination actor per key. */
  readonly key: string
}

export const domainOf = (address: string): string => {
  const at = address.lastIndexOf("@")
  return at < 0 ? "" : address.slice(at + 1).toLowerCase()
}

/** transport(5) lookup order: `domain`, then `.parent` for each parent domain, then `*`. */
export const lookupTransport = (config: PosternConfig, domain: string) => {
  const exact = config.transports[domain]
  if (exact !== undefined) return exact
  let rest = domain
  for (;;) {
    const dot = rest.indexOf(".")
    if (dot < 0) break
    rest = rest.slice(dot + 1)
    const parent = config.transports[`.${rest}`]
    if (parent !== undefined) return parent
  }
  return config.transports["*"]
}

export const isRelayDomain = (config: PosternConfig, domain: string): boolean =>
  config.relayDomains.some((d) => (d.startsWith(".") ? domain.endsWith(d) : domain === d))

export const resolveRoute = (config: PosternConfig, recipient: string): Route => {
  const domain = domainOf(recipient)
  const entry = lookupTransport(config, domain)
  const defaultService = isRelayDomain(config, domain) ? "relay" : "smtp"
  const service = entry?.service ?? defaultService
  const serviceConfig = config.services[service] ?? { type: "error" as const }
  const nexthop =
    entry?.nexthop ??
    (serviceConfig.type === "smtp" || serviceConfig.type === "lmtp" ? (config.relayhost ?? domain) : domain)
  return { service, serviceConfig, nexthop, key: `${service}:${nexthop}` }
}
