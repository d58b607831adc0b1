// Sites and MX roll-up (KumoMTA's terms): which destination queue a route's mail waits in, given the MX
// hosts of its nexthop. Destinations whose MX hosts all match one `sites` entry share that site's queue and
// limits; others share a queue with every destination of the same MX host set. Pure: the lookup is the
// caller's (src/actors/mx-rollup.ts). The delivery still goes to each recipient domain's own nexthop.
import type { PosternConfig, ServiceConfig, SiteConfig } from "../config/types.js"
import { parseNexthop, type Nexthop } from "./nexthop.js"
import type { Route } from "./route.js"

/** `*.example.com` matches every host under example.com (not example.com itself); other patterns match exactly. */
export const matchesMxPattern = (host: string, pattern: string): boolean =>
  pattern.startsWith("*.") ? host.length > pattern.length - 1 && host.endsWith(pattern.slice(1)) : host === pattern

/** The first site (in config order) that every one of `hosts` matches, or undefined. */
export const siteOf = (config: PosternConfig, hosts: ReadonlyArray<string>): [string, SiteConfig] | undefined => {
  if (hosts.length === 0) return undefined
  for (const [name, site] of Object.entries(config.sites)) {
    if (hosts.every((h) => site.mx.some((p) => matchesMxPattern(h, p)))) return [name, site]
  }
  return undefined
}

/**
 * The nexthop whose MX hosts decide the route's queue, or undefined when the route is never rolled up:
 * only smtp-type services with an unbracketed host name (an MX lookup) qualify. A bracketed nexthop and
 * the relayhost each name one host of their own; LMTP, discard and error have no MX.
 */
export const rollableNexthop = (config: PosternConfig, route: Route): Nexthop | undefined => {
  if (route.serviceConfig.type !== "smtp" || route.nexthop === config.relayhost) return undefined
  const hop = parseNexthop(route.nexthop)
  return hop !== undefined && hop.mxLookup ? hop : undefined
}

/** The queue key of a site: one per (service, site), whatever the domains and ports. */
export const siteKey = (service: string, site: string): string => `${service}:site:${site}`

/** The queue key of an MX host set: the hosts in order, and the port when it is not 25. */
export const mxSetKey = (service: string, hosts: ReadonlyArray<string>, port: number): string =>
  `${service}:mx:${[...hosts].sort().join(",")}${port === 25 ? "" : `:${port}`}`

const LIMIT_KEYS = [
  "initialDestinationConcurrency",
  "destinationConcurrencyLimit",
  "destinationRecipientLimit",
  "destinationConcurrencyPositiveFeedback",
  "destinationConcurrencyNegativeFeedback",
  "destinationConcurrencyFailedCohortLimit",
  "destinationRateDelay",
] as const satisfies ReadonlyArray<keyof ServiceConfig>

/** The service's overrides with the site's own on top (absent ones fall back as usual). */
const withSiteLimits = (service: ServiceConfig, site: SiteConfig): ServiceConfig => {
  const merged: Record<string, unknown> = { ...service }
  for (const k of LIMIT_KEYS) if (site[k] !== undefined) merged[k] = site[k]
  return merged as unknown as ServiceConfig
}

/**
 * The route rolled up by the MX hosts of its nexthop: same service and nexthop (delivery is unchanged),
 * but the key of the shared queue, and for a site the site's limits. `hosts` are lowercase names.
 */
export const rollUp = (config: PosternConfig, route: Route, hop: Nexthop, hosts: ReadonlyArray<string>): Route => {
  const site = siteOf(config, hosts)
  if (site !== undefined) {
    return { ...route, key: siteKey(route.service, site[0]), serviceConfig: withSiteLimits(route.serviceConfig, site[1]) }
  }
  return { ...route, key: mxSetKey(route.service, hosts, hop.port) }
}
