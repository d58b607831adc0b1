// Who may send where (Postfix's smtpd_relay_restrictions default: permit_mynetworks,
// reject_unauth_destination): a client in mynetworks may send anywhere; any other client only to
// relayDomains and to domains that have a transports entry. Addresses that hide a route in the local
// part (%, !) are never relayed for an outside client; a source route (@hop:user@domain) is stripped by
// smtp-server as RFC 5321 appendix C says, so only the final address is ever checked and used.
import ipaddr from "ipaddr.js"
import type { PosternConfig } from "../config/types.js"
import { domainOf, isRelayDomain } from "../transport/route.js"

type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number]

export const parseNetworks = (networks: ReadonlyArray<string>): ReadonlyArray<Cidr> =>
  networks.map((n) => (n.includes("/") ? ipaddr.parseCIDR(n) : ((a) => [a, a.kind() === "ipv4" ? 32 : 128] as Cidr)(ipaddr.parse(n))))

export const isInNetworks = (address: string, networks: ReadonlyArray<Cidr>): boolean => {
  let ip: ipaddr.IPv4 | ipaddr.IPv6
  try {
    ip = ipaddr.process(address)
  } catch {
    return false
  }
  return networks.some(([net, bits]) => {
    if (ip.kind() !== net.kind()) return false
    return ip.match([net, bits] as never)
  })
}

const hasRoutingLocalPart = (address: string): boolean => {
  const at = address.lastIndexOf("@")
  const local = at < 0 ? address : address.slice(0, at)
  return local.includes("%") || local.includes("!") || local.includes("@") || address.startsWith("@")
}

const hasTransportEntry = (config: PosternConfig, domain: string): boolean => {
  if (config.transports[domain] !== undefined) return true
  let rest = domain
  for (let dot = rest.indexOf("."); dot >= 0; dot = rest.indexOf(".")) {
    rest = rest.slice(dot + 1)
    if (config.transports[`.${rest}`] !== undefined) return true
  }
  return false
}

export type RelayDecision = { readonly ok: true } | { readonly ok: false; readonly reply: "RELAY_DENIED" }

export const checkRecipient = (config: PosternConfig, trusted: boolean, address: string): RelayDecision => {
  if (trusted) return { ok: true }
  const domain = domainOf(address)
  if (!hasRoutingLocalPart(address) && domain !== "" && (isRelayDomain(config, domain) || hasTransportEntry(config, domain))) {
    return { ok: true }
  }
  return { ok: false, reply: "RELAY_DENIED" }
}
