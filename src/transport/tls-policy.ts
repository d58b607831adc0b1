// Outbound TLS policy, as Postfix's smtp_tls_security_level and smtp_tls_policy_maps decide it: which
// level applies to a delivery (policy map entry for the nexthop, else the service's own level, else the
// global one) and which names a verified certificate must carry. Pure: no I/O, no sockets.
import type { PosternConfig, ServiceConfig, TlsLevel, TlsPolicy } from "../config/types.js"

export const TLS_LEVELS = ["none", "may", "encrypt", "verify"] as const satisfies ReadonlyArray<TlsLevel>

export const TLS_LEVEL_EXPECTED = `one of ${TLS_LEVELS.join(", ")}`

export const TLS_POLICY_EXPECTED = `a level (${TLS_LEVELS.join(", ")}), for verify optionally followed by "match=name:name…" (hostname, nexthop, dot-nexthop, a host name or ".domain")`

/** Whether the level refuses to send in plaintext. */
export const isTlsRequired = (level: TlsLevel): boolean => level === "encrypt" || level === "verify"

const isLevel = (s: string): s is TlsLevel => (TLS_LEVELS as ReadonlyArray<string>).includes(s)

const MATCH_KEYWORDS = ["hostname", "nexthop", "dot-nexthop"]
const NAME = /^\.?(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/

/** A policy map value as Postfix writes it: `verify match=hostname:.example.com`, or just a level. */
export function parseTlsPolicy(text: string): { readonly ok: true; readonly value: TlsPolicy } | { readonly ok: false; readonly error: string } {
  const [levelText = "", ...attributes] = text.trim().split(/\s+/)
  const level = levelText.toLowerCase()
  if (!isLevel(level)) return { ok: false, error: `"${levelText}" is not a TLS security level (${TLS_LEVELS.join(", ")})` }
  let match: Array<string> | null = null
  for (const attribute of attributes) {
    const eq = attribute.indexOf("=")
    const name = eq < 0 ? attribute : attribute.slice(0, eq).toLowerCase()
    if (name !== "match" || eq < 0) return { ok: false, error: `unknown attribute "${attribute}" (only match= is supported)` }
    if (level !== "verify") return { ok: false, error: "match= is only used with the verify level" }
    const names = attribute.slice(eq + 1).toLowerCase().split(/[:,]/).filter((n) => n !== "")
    const bad = names.find((n) => !MATCH_KEYWORDS.includes(n) && !NAME.test(n))
    if (names.length === 0 || bad !== undefined) return { ok: false, error: `match= needs names such as hostname, nexthop, dot-nexthop, mx.example.com or .example.com${bad !== undefined ? `, got "${bad}"` : ""}` }
    match = [...(match ?? []), ...names]
  }
  return { ok: true, value: { level, match } }
}

export const formatTlsPolicy = (p: TlsPolicy): string => (p.match === null ? p.level : `${p.level} match=${p.match.join(":")}`)

/**
 * smtp_tls_policy_maps lookup (Postfix's smtp_tls_policy.c): the nexthop exactly as written (`[mx.example.com]:25`,
 * `example.com`), then, for a domain, each parent domain with a leading dot (`.example.com`, `.com`).
 */
export const lookupTlsPolicy = (maps: Readonly<Record<string, TlsPolicy>>, nexthop: string): TlsPolicy | undefined => {
  let key = nexthop.trim().toLowerCase()
  const exact = maps[key]
  if (exact !== undefined) return exact
  if (!NAME.test(key)) return undefined
  for (let dot = key.indexOf(".", 1); dot >= 0; dot = key.indexOf(".", 1)) {
    key = key.slice(dot)
    const parent = maps[key]
    if (parent !== undefined) return parent
  }
  return undefined
}

/**
 * The policy of one delivery. LMTP services default to `none` (Postfix's lmtp_tls_security_level is empty)
 * and do not read smtpTlsPolicyMaps (Postfix has lmtp_tls_policy_maps for them); their own
 * `smtpTlsSecurityLevel` under `services` still applies.
 */
export const tlsPolicyFor = (config: PosternConfig, service: ServiceConfig, nexthop: string): TlsPolicy => {
  if (service.type === "lmtp") return { level: service.smtpTlsSecurityLevel ?? "none", match: null }
  return (
    lookupTlsPolicy(config.smtpTlsPolicyMaps, nexthop) ?? {
      level: service.smtpTlsSecurityLevel ?? config.smtpTlsSecurityLevel,
      match: null,
    }
  )
}

/**
 * The names a certificate must carry at `verify` (Postfix's smtp_tls_verify_cert_match, default `hostname`):
 * `hostname` is the server's name (MX host, or the nexthop host), `nexthop` the nexthop's host,
 * `dot-nexthop` any subdomain of it; `.example.com` any subdomain of example.com.
 */
export const expectedNames = (policy: TlsPolicy, serverHostname: string, nexthopHost: string): ReadonlyArray<string> => {
  const out: Array<string> = []
  for (const m of policy.match ?? ["hostname"]) {
    const name = m === "hostname" ? serverHostname : m === "nexthop" ? nexthopHost : m === "dot-nexthop" ? `.${nexthopHost}` : m
    if (!out.includes(name.toLowerCase())) out.push(name.toLowerCase())
  }
  return out
}
