// The Effect Schema of postern.yaml: every key optional with its Postfix default, unknown keys rejected
// (decode with `onExcessProperty: "error"`), each value parsed into the shape of `PosternConfig` (types.ts).
// Guarantees: every error message says what was wrong, shows the value and what is allowed. The only part
// left to the loader is resolving `dataDir` and `smtpTlsCaFile` against the config file's folder.
import { parseFeedback } from "../machines/feedback.js"
import os from "node:os"
import ipaddr from "ipaddr.js"
import { Effect, Option, Schema, SchemaGetter, SchemaIssue } from "effect"
import type { SchemaAST } from "effect"
import { DURATION_EXPECTED, PostfixDuration, formatDuration, parseDuration, showValue } from "./duration.js"
import { TLS_LEVELS, TLS_LEVEL_EXPECTED, TLS_POLICY_EXPECTED, formatTlsPolicy, parseTlsPolicy } from "../transport/tls-policy.js"
import type { ServiceConfig, ServiceType } from "./types.js"

// ---------------------------------------------------------------------------------------------------------
// Parsers shared by the schema and by other modules (delivery needs `parseNexthop`).

/** The result of a hand-written parser: the value, or a message saying what is wrong with the input. */
export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string }
const ok = <T>(value: T): Parsed<T> => ({ ok: true, value })
const err = <T = never>(error: string): Parsed<T> => ({ ok: false, error })

const DOMAIN_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i

/** An RFC 1035 host name (letters, digits, hyphens; dot-separated labels of 1–63; at most 253 chars). */
export function isDomainName(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false
  return text.split(".").every((label) => DOMAIN_LABEL.test(label))
}

const isIPv4 = (text: string): boolean => ipaddr.IPv4.isValidFourPartDecimal(text)
const isIPv6 = (text: string): boolean => ipaddr.IPv6.isValid(text)

function parsePort(text: string, minimum: number): Parsed<number> {
  if (!/^\d{1,5}$/.test(text)) return err(`port ${showValue(text)} is not a number`)
  const port = Number(text)
  return port >= minimum && port <= 65535 ? ok(port) : err(`port ${port} is out of range`)
}

/** A `listen` address: `"host:port"`, IPv6 as `"[::1]:2525"`; port 0 means any free port. */
export function parseListenAddress(text: string): Parsed<{ readonly host: string; readonly port: number }> {
  const s = text.trim()
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(s)
  let host: string
  let portText: string | undefined
  if (bracketed !== null) {
    host = bracketed[1]!
    portText = bracketed[2]
    if (!isIPv6(host)) return err(`${showValue(host)} in brackets is not an IPv6 address`)
  } else {
    const colon = s.lastIndexOf(":")
    if (colon !== -1 && s.indexOf(":") !== colon) {
      return err(`an IPv6 address must be written in brackets, e.g. "[::1]:2525"`)
    }
    host = colon === -1 ? s : s.slice(0, colon)
    portText = colon === -1 ? undefined : s.slice(colon + 1)
    if (!isIPv4(host) && !isDomainName(host)) return err(`${showValue(host)} is not an IPv4 address or host name`)
  }
  if (portText === undefined) return err("the port is missing")
  const port = parsePort(portText, 0)
  return port.ok ? ok({ host, port: port.value }) : port
}

export const LISTEN_EXPECTED =
  '"host:port" such as "127.0.0.1:2525" (IPv6 as "[::1]:2525"; port 1-65535, 0 = any free port)'

/** A next hop: `[host]:port` / `[host]` (no MX lookup) or `host` / `host:port` (MX lookup of host). */
export interface Nexthop {
  readonly host: string
  /** null = the service's default port. */
  readonly port: number | null
  /** true for the unbracketed form: look up the MX records of `host` (never for LMTP). */
  readonly mx: boolean
  /** LMTP over a UNIX-domain socket (`unix:/path`): the socket's path (and `host` is that path too). */
  readonly socketPath?: string
}

/** Which service type reads the nexthop: LMTP adds `unix:/path` and `inet:` and never looks up MX (lmtp(8)). */
export type NexthopProtocol = "smtp" | "lmtp"

/**
 * Parses a `relayhost` or a `transports` next hop (`"[host]:port"`, `"[host]"`, `"host"`, `"host:port"`);
 * for an lmtp service also `"unix:/path/to/socket"` and the `inet:` prefix, as Postfix's lmtp(8) writes them.
 */
export function parseNexthop(text: string, protocol: NexthopProtocol = "smtp"): Parsed<Nexthop> {
  const s = text.trim()
  const scheme = /^(unix|inet):/i.exec(s)?.[1]?.toLowerCase()
  if (protocol === "smtp") {
    return scheme === undefined ? parseInetNexthop(s) : err(`"${scheme}:" next hops are for lmtp services (write "lmtp:${s}")`)
  }
  if (scheme === "unix") {
    const socketPath = s.slice(5).trim()
    if (!socketPath.startsWith("/")) return err(`the socket path must be absolute, e.g. "unix:/run/dovecot/lmtp"`)
    return ok({ host: socketPath, port: null, mx: false, socketPath })
  }
  const rest = scheme === "inet" ? s.slice(5).trim() : s
  // With no MX lookup, a bare IPv4 address is unambiguous: "127.0.0.1:24" is "[127.0.0.1]:24"
  const bareIp = /^([^:[\]]+)(:.*)?$/.exec(rest)
  const inet = parseInetNexthop(bareIp !== null && isIPv4(bareIp[1]!) ? `[${bareIp[1]}]${bareIp[2] ?? ""}` : rest)
  // LMTP delivers to the host itself: no MX lookup (Postfix's smtp_connect.c, LMTP mode)
  return inet.ok ? ok({ ...inet.value, mx: false }) : inet
}

function parseInetNexthop(s: string): Parsed<Nexthop> {
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(s)
  if (bracketed !== null) {
    const inner = bracketed[1]!
    const host = inner.toLowerCase().startsWith("ipv6:") ? inner.slice(5) : inner
    if (!isIPv4(host) && !isIPv6(host) && !isDomainName(host)) {
      return err(`${showValue(inner)} in brackets is not an IP address or host name`)
    }
    if (bracketed[2] === undefined) return ok({ host, port: null, mx: false })
    const port = parsePort(bracketed[2], 1)
    return port.ok ? ok({ host, port: port.value, mx: false }) : port
  }
  if (s.includes("[") || s.includes("]")) return err("unbalanced brackets")
  const colon = s.indexOf(":")
  if (colon !== s.lastIndexOf(":") || isIPv6(s)) {
    return err('an IPv6 address must be written in brackets, e.g. "[2001:db8::1]:25"')
  }
  const host = colon === -1 ? s : s.slice(0, colon)
  if (isIPv4(host)) {
    return err(`an IP address must be written in brackets (there is no MX lookup for it): "[${host}]${colon === -1 ? "" : s.slice(colon)}"`)
  }
  if (!isDomainName(host)) return err(`${showValue(host)} is not a host name`)
  if (colon === -1) return ok({ host, port: null, mx: true })
  const port = parsePort(s.slice(colon + 1), 1)
  return port.ok ? ok({ host, port: port.value, mx: true }) : port
}

export const NEXTHOP_EXPECTED = '"[host]:port", "[host]" (no MX lookup), "host" or "host:port" (MX lookup)'

export const LMTP_NEXTHOP_EXPECTED = '"[host]:port", "host" (port 24, no MX lookup) or "unix:/path/to/socket"'

/** A `mynetworks` entry: CIDR (`"10.0.0.0/8"`, `"::1/128"`, `"[::1]/128"`) or a bare IP (→ /32 or /128). */
export function parseNetwork(text: string): Parsed<string> {
  const s = text.trim().replace(/^\[([^\]]*)\]/, "$1")
  const slash = s.indexOf("/")
  if (slash === -1) {
    if (isIPv4(s)) return ok(`${s}/32`)
    if (isIPv6(s)) return ok(`${ipaddr.IPv6.parse(s).toString()}/128`)
    return err(`${showValue(s)} is not an IP address`)
  }
  const address = s.slice(0, slash)
  const bitsText = s.slice(slash + 1)
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : 0
  if (family === 0) return err(`${showValue(address)} is not an IP address`)
  const maxBits = family === 4 ? 32 : 128
  if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > maxBits) {
    return err(`the prefix length must be a number from 0 to ${maxBits}`)
  }
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number]
  try {
    parsed = ipaddr.parseCIDR(`${address}/${bitsText}`)
  } catch (e) {
    return err((e as Error).message)
  }
  const [addr, bits] = parsed
  const network =
    addr.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(`${address}/${bits}`) : ipaddr.IPv6.networkAddressFromCIDR(`${address}/${bits}`)
  if (network.toString() !== addr.toString()) {
    return err(`host bits are set (did you mean "${network.toString()}/${bits}"?)`)
  }
  return ok(`${addr.toString()}/${bits}`)
}

export const NETWORK_EXPECTED = 'a network such as "10.0.0.0/8" or "::1/128", or a single IP address'

/** A `relayDomains` entry or a `transports` key: a domain, or `.domain` (subdomains); lowercased. */
function parseDomainPattern(text: string): Parsed<string> {
  const s = text.trim().toLowerCase()
  const name = s.startsWith(".") ? s.slice(1) : s
  return isDomainName(name) ? ok(s) : err(`${showValue(text)} is not a domain name`)
}

export const DOMAIN_EXPECTED = 'a domain such as "example.com" (or ".example.com" for its subdomains)'

/** A `transports` value `"service:nexthop"`, split at the first colon; an empty part is null. */
export function parseTransport(text: string): Parsed<{ readonly service: string | null; readonly nexthop: string | null }> {
  const colon = text.indexOf(":")
  if (colon === -1) return err(`there is no ":" (write "${text.trim()}:" for the service with its default next hop)`)
  const service = text.slice(0, colon).trim()
  const nexthop = text.slice(colon + 1).trim()
  if (service !== "" && !SERVICE_NAME.test(service)) return err(`${showValue(service)} is not a service name`)
  return ok({ service: service === "" ? null : service, nexthop: nexthop === "" ? null : nexthop })
}

export const TRANSPORT_EXPECTED =
  '"service:nexthop" such as "smtp:[10.0.0.5]:25", "relay:", "discard:" or ":[10.0.0.5]" (an empty part keeps the default)'

const SERVICE_NAME = /^[a-z0-9][a-z0-9_.-]*$/i

/** A name usable in master.cf terms and in `transports` values (letters, digits, '.', '_', '-'). */
export const isServiceName = (name: string): boolean => SERVICE_NAME.test(name)

// ---------------------------------------------------------------------------------------------------------
// Schema building blocks.

const invalid = (message: string, input: unknown, options: SchemaAST.ParseOptions) =>
  Effect.fail(new SchemaIssue.InvalidValue({ message }, input, options))

/** A string run through `parse` into the plain schema `to` (whose encoded and decoded forms are the same). */
function parsedString<T, S extends Schema.Codec<T, T>>(
  to: S,
  expected: string,
  parse: (text: string) => Parsed<T>,
  encode: (value: T) => string,
) {
  return Schema.String.annotate({ expected }).pipe(
    Schema.decodeTo(to, {
      decode: SchemaGetter.transformEffect((text: string, options) => {
        const result = parse(text)
        return result.ok
          ? Effect.succeed(result.value)
          : invalid(`${result.error}; expected ${expected}, got ${showValue(text)}`, text, options)
      }),
      encode: SchemaGetter.transform(encode),
    }),
  )
}

/** A list written as a YAML list or, Postfix style, as one string separated by commas and/or spaces. */
function listOf<S extends Schema.Codec<unknown, string>>(item: S, items: string) {
  const list = Schema.Array(item)
  return Schema.Union([
    list,
    Schema.String.pipe(
      Schema.decodeTo(list, {
        decode: SchemaGetter.transform((text: string) => text.split(/[\s,]+/).filter((part) => part !== "")),
        encode: SchemaGetter.transform((items: ReadonlyArray<string>) => items.join(", ")),
      }),
    ),
  ]).annotate({ expected: `a list of ${items} (or one string of them separated by commas or spaces)` })
}

/** A whole number ≥ `minimum`. */
function count(minimum: number) {
  const expected = `a whole number ≥ ${minimum}`
  return Schema.Number.annotate({ expected }).check(
    Schema.makeFilter((n: number) => (Number.isSafeInteger(n) && n >= minimum ? undefined : `expected ${expected}, got ${showValue(n)}`)),
  )
}

/** A fraction in [0, 1): the spread of the retry jitter. */
const Fraction = Schema.Number.annotate({ expected: "a number from 0 up to (not including) 1" }).check(
  Schema.makeFilter((n: number) => (n >= 0 && n < 1 ? undefined : `expected a number from 0 up to (not including) 1, got ${showValue(n)}`)),
)

/** Concurrency feedback as Postfix writes it (qmgr_feedback.c): `1`, `1/2`, `1/concurrency`, `1/sqrt_concurrency`. */
const FEEDBACK_EXPECTED = 'a feedback such as "1", "1/2", "1/concurrency" or "1/sqrt_concurrency" (at most 1)'
const Feedback = Schema.String.annotate({ expected: FEEDBACK_EXPECTED }).check(
  Schema.makeFilter((s: string) => (parseFeedback(s) !== undefined ? undefined : `expected ${FEEDBACK_EXPECTED}, got ${showValue(s)}`)),
)

/** A duration that must be more than zero (timeouts, backoff times). */
const PositiveDuration = PostfixDuration.check(
  Schema.makeFilter((ms: number) => (ms > 0 ? undefined : `expected a duration greater than 0 (${DURATION_EXPECTED}), got 0`)),
)

/**
 * Optional key with a default written as in YAML. Not `withDecodingDefaultKey`: that one first checks the
 * value against the schema's *encoded* shape, so a wrong type in one list item hides every parse error of
 * the others. This decodes the value once, and the default (decoded once here) only when the key is absent.
 */
const withDefault =
  <S extends Schema.Codec<unknown, unknown>>(value: S["Encoded"]) =>
  (schema: S) =>
    schema.pipe(Schema.withDecodingDefaultTypeKey(Schema.decodeUnknownEffect(schema)(value)))

const Hostname = Schema.String.annotate({ expected: 'a host name such as "mail.example.com"' }).check(
  Schema.makeFilter((s: string) =>
    isDomainName(s) ? undefined : `expected a host name (letters, digits, hyphens and dots) such as "mail.example.com", got ${showValue(s)}`,
  ),
)

/** `hostname`, defaulting to os.hostname() (the default is not validated: it is the machine's own name). */
const HostnameOrDefault = Schema.optionalKey(Hostname).pipe(
  Schema.decodeTo(Schema.String, {
    decode: SchemaGetter.transformOptional((name: Option.Option<string>) => Option.some(Option.getOrElse(name, () => os.hostname()))),
    encode: SchemaGetter.passthrough(),
  }),
)

const DataDir = Schema.String.annotate({ expected: "a directory path" }).check(
  Schema.makeFilter((s: string) => (s.trim() !== "" ? undefined : `expected a directory path, got ""`)),
)

const HostPort = parsedString(
  Schema.Struct({ host: Schema.String, port: Schema.Number }),
  LISTEN_EXPECTED,
  parseListenAddress,
  ({ host, port }) => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`),
)

export const DEFAULT_GREET_WAIT = "100ms"
const DEFAULT_GREET_WAIT_MS = parseDuration(DEFAULT_GREET_WAIT)!

const Listener = Schema.Struct({ host: Schema.String, port: Schema.Number, greetWait: Schema.Number })

/** A `listen` entry: `"host:port"` or `{ address: "host:port", greetWait: duration }`. */
const ListenEntry = Schema.Union([
  Schema.Struct({
    address: HostPort,
    greetWait: PostfixDuration.pipe(withDefault(DEFAULT_GREET_WAIT)),
  }).pipe(
    Schema.decodeTo(Listener, {
      decode: SchemaGetter.transform(({ address, greetWait }) => ({ host: address.host, port: address.port, greetWait })),
      encode: SchemaGetter.transform(({ host, port, greetWait }) => ({ address: { host, port }, greetWait })),
    }),
  ),
  HostPort.pipe(
    Schema.decodeTo(Listener, {
      decode: SchemaGetter.transform(({ host, port }: { readonly host: string; readonly port: number }) => ({
        host,
        port,
        greetWait: DEFAULT_GREET_WAIT_MS,
      })),
      encode: SchemaGetter.transform(({ host, port }) => ({ host, port })),
    }),
  ),
]).annotate({ expected: `${LISTEN_EXPECTED}, or { address: "host:port", greetWait: duration }` })

/** A list of entries, or a single one. */
const Listen = Schema.Union([
  Schema.Array(ListenEntry),
  ListenEntry.pipe(
    Schema.decodeTo(Schema.Array(Listener), {
      decode: SchemaGetter.transform((listener) => [listener]),
      encode: SchemaGetter.transform((listeners) => listeners[0]!),
    }),
  ),
]).annotate({ expected: 'a list of listen entries ("host:port" or { address: "host:port", greetWait: duration }), or one entry' })

const Network = parsedString(Schema.String, NETWORK_EXPECTED, parseNetwork, (s) => s)

const Domain = parsedString(Schema.String, DOMAIN_EXPECTED, parseDomainPattern, (s) => s)

const Relayhost = Schema.NullOr(
  Schema.String.annotate({ expected: NEXTHOP_EXPECTED }).pipe(
    Schema.decodeTo(Schema.NullOr(Schema.String), {
      decode: SchemaGetter.transformEffect((text: string, options) => {
        if (text.trim() === "") return Effect.succeed(null)
        const result = parseNexthop(text)
        return result.ok
          ? Effect.succeed(text.trim())
          : invalid(`${result.error}; expected ${NEXTHOP_EXPECTED}, got ${showValue(text)}`, text, options)
      }),
      encode: SchemaGetter.transform((s: string | null) => s ?? ""),
    }),
  ),
).annotate({ expected: `${NEXTHOP_EXPECTED}, or null for none` })

/** One nexthop, syntax-checked (smtpFallbackRelay entries). */
const NexthopText = Schema.String.annotate({ expected: NEXTHOP_EXPECTED }).check(
  Schema.makeFilter((text: string) => {
    const result = parseNexthop(text)
    return result.ok ? undefined : `${result.error}; expected ${NEXTHOP_EXPECTED}, got ${showValue(text)}`
  }),
)

export const TRANSPORT_KEY_EXPECTED = 'a domain ("example.com"), its subdomains (".example.com") or "*"'

const TransportKey = Schema.String.annotate({ expected: TRANSPORT_KEY_EXPECTED }).check(
  Schema.makeFilter((s: string) => (s === "*" || parseDomainPattern(s).ok ? undefined : `expected ${TRANSPORT_KEY_EXPECTED}, got ${showValue(s)}`)),
)

const TransportEntrySchema = Schema.Struct({ service: Schema.NullOr(Schema.String), nexthop: Schema.NullOr(Schema.String) })

const TransportValue = parsedString(TransportEntrySchema, TRANSPORT_EXPECTED, parseTransport, ({ service, nexthop }) => `${service ?? ""}:${nexthop ?? ""}`)

const Transports = Schema.Record(TransportKey, TransportValue)
  .annotate({
    expected: 'a mapping of domain to "service:nexthop"',
    messageUnexpectedKey: `invalid key; expected ${TRANSPORT_KEY_EXPECTED}`,
  })
  .pipe(
  Schema.decodeTo(Schema.Record(Schema.String, TransportEntrySchema), {
    decode: SchemaGetter.transform((map) => Object.fromEntries(Object.entries(map).map(([key, value]) => [key.toLowerCase(), value]))),
    encode: SchemaGetter.passthrough(),
  }),
)

const TlsLevelSchema = Schema.Literals(TLS_LEVELS).annotate({ expected: TLS_LEVEL_EXPECTED })

export const TLS_POLICY_KEY_EXPECTED = 'a nexthop as written in transports ("[mx.example.com]:25", "example.com") or ".example.com" for its subdomains'

const TlsPolicyKey = Schema.String.annotate({ expected: TLS_POLICY_KEY_EXPECTED }).check(
  Schema.makeFilter((s: string) =>
    parseNexthop(s).ok || parseDomainPattern(s).ok ? undefined : `expected ${TLS_POLICY_KEY_EXPECTED}, got ${showValue(s)}`,
  ),
)

const TlsPolicySchema = Schema.Struct({ level: TlsLevelSchema, match: Schema.NullOr(Schema.Array(Schema.String)) })

const TlsPolicyMaps = Schema.Record(TlsPolicyKey, parsedString(TlsPolicySchema, TLS_POLICY_EXPECTED, parseTlsPolicy, formatTlsPolicy))
  .annotate({
    expected: 'a mapping of nexthop or domain to a TLS policy ("verify", "encrypt", "may", "none")',
    messageUnexpectedKey: `invalid key; expected ${TLS_POLICY_KEY_EXPECTED}`,
  })
  .pipe(
    Schema.decodeTo(Schema.Record(Schema.String, TlsPolicySchema), {
      decode: SchemaGetter.transform((map) => Object.fromEntries(Object.entries(map).map(([key, value]) => [key.trim().toLowerCase(), value]))),
      encode: SchemaGetter.passthrough(),
    }),
  )

const CaFile = Schema.NullOr(
  Schema.String.annotate({ expected: "the path of a PEM file of CA certificates" }).check(
    Schema.makeFilter((s: string) => (s.trim() !== "" ? undefined : `expected the path of a PEM file of CA certificates, got ""`)),
  ),
)

export const SERVICE_TYPES = ["smtp", "lmtp", "discard", "error"] as const satisfies ReadonlyArray<ServiceType>

/** master.cf's services Postern always has; a user entry of the same name is merged over it. */
export const BUILTIN_SERVICES: Readonly<Record<string, ServiceConfig>> = {
  smtp: { type: "smtp" },
  relay: { type: "smtp" },
  lmtp: { type: "lmtp" },
  discard: { type: "discard" },
  error: { type: "error" },
}

const ServiceTypeSchema = Schema.Literals(SERVICE_TYPES).annotate({ expected: `one of ${SERVICE_TYPES.join(", ")}` })

const ServiceEntry = Schema.Struct({
  type: Schema.optionalKey(ServiceTypeSchema),
  initialDestinationConcurrency: Schema.optionalKey(count(1)),
  destinationConcurrencyLimit: Schema.optionalKey(count(1)),
  destinationRecipientLimit: Schema.optionalKey(count(1)),
  destinationConcurrencyPositiveFeedback: Schema.optionalKey(Feedback),
  destinationConcurrencyNegativeFeedback: Schema.optionalKey(Feedback),
  destinationConcurrencyFailedCohortLimit: Schema.optionalKey(count(0)),
  destinationRateDelay: Schema.optionalKey(PostfixDuration),
  smtpTlsSecurityLevel: Schema.optionalKey(TlsLevelSchema),
})

const ServiceName = Schema.String.annotate({
  expected: "a service name of letters, digits, '.', '_' and '-' (no ':')",
}).check(Schema.makeFilter((s: string) => SERVICE_NAME.test(s)))

const ServiceConfigSchema = Schema.Struct({
  type: ServiceTypeSchema,
  initialDestinationConcurrency: Schema.optionalKey(Schema.Number),
  destinationConcurrencyLimit: Schema.optionalKey(Schema.Number),
  destinationRecipientLimit: Schema.optionalKey(Schema.Number),
  destinationConcurrencyPositiveFeedback: Schema.optionalKey(Schema.String),
  destinationConcurrencyNegativeFeedback: Schema.optionalKey(Schema.String),
  destinationConcurrencyFailedCohortLimit: Schema.optionalKey(Schema.Number),
  destinationRateDelay: Schema.optionalKey(Schema.Number),
  smtpTlsSecurityLevel: Schema.optionalKey(TlsLevelSchema),
})

const Services = Schema.Record(ServiceName, ServiceEntry)
  .annotate({
    expected: "a mapping of service name to { type, initialDestinationConcurrency, destinationConcurrencyLimit, destinationRecipientLimit }",
    messageUnexpectedKey: `invalid service name; use letters, digits, ".", "_" and "-" (no ":")`,
  })
  .check(Schema.makeFilter((services) => missingTypeIssues(services)))
  .pipe(
    Schema.decodeTo(Schema.Record(Schema.String, ServiceConfigSchema), {
      decode: SchemaGetter.transform((user) => {
        const merged: Record<string, ServiceConfig> = { ...BUILTIN_SERVICES }
        for (const [name, entry] of Object.entries(user)) {
          merged[name] = { ...BUILTIN_SERVICES[name], ...entry, type: entry.type ?? BUILTIN_SERVICES[name]?.type ?? "smtp" }
        }
        return merged
      }),
      encode: SchemaGetter.passthrough(),
    }),
  )

/** An MX host pattern of `sites`: an exact host name, or `*.domain` for every host under that domain. */
export function parseMxPattern(text: string): Parsed<string> {
  const s = text.trim().toLowerCase().replace(/\.$/, "")
  const name = s.startsWith("*.") ? s.slice(2) : s
  if (name.includes("*")) return err(`${showValue(text)} has a "*" that is not the leading "*." of a pattern`)
  return isDomainName(name) ? ok(s) : err(`${showValue(text)} is not a host name`)
}

export const MX_PATTERN_EXPECTED = 'an MX host name such as "mx1.example.com", or "*.example.com" for every host under example.com'

const MxPattern = parsedString(Schema.String, MX_PATTERN_EXPECTED, parseMxPattern, (s) => s)

/** A site: the MX hosts of one provider, and the limits of the one destination queue they share. */
const SiteEntry = Schema.Struct({
  mx: listOf(MxPattern, 'MX host patterns such as "*.mail.protection.outlook.com"'),
  initialDestinationConcurrency: Schema.optionalKey(count(1)),
  destinationConcurrencyLimit: Schema.optionalKey(count(1)),
  destinationRecipientLimit: Schema.optionalKey(count(1)),
  destinationConcurrencyPositiveFeedback: Schema.optionalKey(Feedback),
  destinationConcurrencyNegativeFeedback: Schema.optionalKey(Feedback),
  destinationConcurrencyFailedCohortLimit: Schema.optionalKey(count(0)),
  destinationRateDelay: Schema.optionalKey(PostfixDuration),
})

/** An MX pattern may belong to one site only (otherwise which site's limits apply would be a guess). */
export function sitePatternIssues(sites: Readonly<Record<string, { readonly mx: ReadonlyArray<string> }>>): Issues {
  const owner = new Map<string, string>()
  const issues: Issues = []
  for (const [name, site] of Object.entries(sites)) {
    if (site.mx.length === 0) issues.push({ path: [name, "mx"], issue: 'a site needs at least one MX host pattern, e.g. mx: ["*.example.com"]' })
    for (const pattern of site.mx) {
      const first = owner.get(pattern)
      if (first !== undefined && first !== name) {
        issues.push({ path: [name, "mx"], issue: `MX pattern "${pattern}" is already in site "${first}"; list it in one site only` })
      }
      owner.set(pattern, first ?? name)
    }
  }
  return issues
}

const Sites = Schema.Record(ServiceName, SiteEntry)
  .annotate({
    expected: 'a mapping of site name to { mx: [MX host patterns], and the limits of its queue (as under services) }',
    messageUnexpectedKey: `invalid site name; use letters, digits, ".", "_" and "-" (no ":")`,
  })
  .check(Schema.makeFilter((sites) => sitePatternIssues(sites)))

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const

const LogLevel = Schema.Literals(LOG_LEVELS).annotate({ expected: `one of ${LOG_LEVELS.join(", ")}` })

export const DELIVERY_THREADS = ["auto", "worker", "main"] as const

const DeliveryThread = Schema.Literals(DELIVERY_THREADS).annotate({ expected: `one of ${DELIVERY_THREADS.join(", ")}` })

// ---------------------------------------------------------------------------------------------------------
// Checks across keys. They are part of the schema (below) and exported so the loader can still run them
// when some other key failed, and so report every problem at once.

type Issues = Array<{ readonly path: ReadonlyArray<PropertyKey>; readonly issue: string }>

/** A user service that is not a built-in must say its type. Takes decoded or raw `services` (paths relative to it). */
export function missingTypeIssues(services: Readonly<Record<string, unknown>>): Issues {
  return Object.entries(services)
    .filter(([name, entry]) => typeof entry === "object" && entry !== null && !("type" in entry) && BUILTIN_SERVICES[name] === undefined)
    .map(([name]) => ({
      path: [name, "type"],
      issue: `a new service needs a type: one of ${SERVICE_TYPES.join(", ")} (only the built-ins ${Object.keys(BUILTIN_SERVICES).join(", ")} may leave it out)`,
    }))
}

/** `maximalBackoffTime` must not be below `minimalBackoffTime` (both in ms). */
export function backoffIssues(c: { readonly minimalBackoffTime: number; readonly maximalBackoffTime: number }): Issues {
  if (c.maximalBackoffTime >= c.minimalBackoffTime) return []
  const min = formatDuration(c.minimalBackoffTime)
  return [
    {
      path: ["maximalBackoffTime"],
      issue: `maximalBackoffTime (${formatDuration(c.maximalBackoffTime)}) is less than minimalBackoffTime (${min}); set maximalBackoffTime to ${min} or more, or lower minimalBackoffTime`,
    },
  ]
}

/**
 * Every service named in `transports` must exist; an smtp- or lmtp-type service's next hop must parse.
 * A service without a `type` here is one whose entry is itself invalid: it exists, its next hops are not checked.
 */
export function transportIssues(c: {
  readonly transports: Readonly<Record<string, { readonly service: string | null; readonly nexthop: string | null }>>
  readonly services: Readonly<Record<string, { readonly type?: ServiceType }>>
}): Issues {
  const issues: Issues = []
  const known = Object.keys(c.services).sort()
  for (const [key, entry] of Object.entries(c.transports)) {
    const written = `${entry.service ?? ""}:${entry.nexthop ?? ""}`
    const service = entry.service === null ? undefined : c.services[entry.service]
    if (entry.service !== null && service === undefined) {
      issues.push({
        path: ["transports", key],
        issue: `service "${entry.service}" is not defined (in ${showValue(written)}); use one of ${known.join(", ")}, or define "${entry.service}" under services`,
      })
      continue
    }
    const type = entry.service === null ? "smtp" : service?.type
    if (entry.nexthop !== null && (type === "smtp" || type === "lmtp")) {
      const hop = parseNexthop(entry.nexthop, type)
      if (!hop.ok) {
        issues.push({
          path: ["transports", key],
          issue: `next hop ${showValue(entry.nexthop)} is invalid: ${hop.error}; expected ${type === "lmtp" ? LMTP_NEXTHOP_EXPECTED : NEXTHOP_EXPECTED} after "${entry.service ?? ""}:"`,
        })
      }
    }
  }
  return issues
}

// ---------------------------------------------------------------------------------------------------------
// The document.

/** Every key's default, as it would be written in postern.yaml (`hostname`: os.hostname()). */
export const DEFAULTS = {
  dataDir: "./postern-data",
  listen: ["127.0.0.1:2525"],
  mynetworks: ["127.0.0.0/8", "::1/128"],
  relayDomains: [],
  relayhost: null,
  smtpFallbackRelay: [],
  transports: {},
  services: {},
  sites: {},
  messageSizeLimit: 10_240_000,
  smtpdRecipientLimit: 1000,
  hopcountLimit: 50,
  minimalBackoffTime: "300s",
  maximalBackoffTime: "4000s",
  maximalQueueLifetime: "5d",
  bounceQueueLifetime: "5d",
  initialDestinationConcurrency: 5,
  defaultDestinationConcurrencyLimit: 20,
  defaultDestinationRecipientLimit: 50,
  defaultDestinationConcurrencyPositiveFeedback: "1",
  defaultDestinationConcurrencyNegativeFeedback: "1",
  defaultDestinationConcurrencyFailedCohortLimit: 1,
  defaultDestinationRateDelay: "0s",
  qmgrMessageActiveLimit: 20_000,
  qmgrMessageRecipientLimit: 20_000,
  qmgrMessageRecipientMinimum: 10,
  smtpConnectTimeout: "30s",
  smtpHeloTimeout: "300s",
  smtpDataDoneTimeout: "600s",
  smtpTlsSecurityLevel: "may",
  smtpTlsCaFile: null,
  smtpTlsPolicyMaps: {},
  smtpdTimeout: "300s",
  logLevel: "info",
  deliveryThread: "auto",
  backoffJitter: 0.1,
  attemptLogRetention: "7d",
} as const

const fields = {
  hostname: HostnameOrDefault,
  dataDir: DataDir.pipe(withDefault(DEFAULTS.dataDir)),
  listen: Listen.pipe(withDefault(DEFAULTS.listen)),
  mynetworks: listOf(Network, 'networks such as "10.0.0.0/8"').pipe(withDefault(DEFAULTS.mynetworks)),
  relayDomains: listOf(Domain, 'domains such as "example.com"').pipe(withDefault(DEFAULTS.relayDomains)),
  relayhost: Relayhost.pipe(withDefault(DEFAULTS.relayhost)),
  smtpFallbackRelay: listOf(NexthopText, 'nexthops such as "[10.0.0.9]:25"').pipe(withDefault(DEFAULTS.smtpFallbackRelay)),
  transports: Transports.pipe(withDefault(DEFAULTS.transports)),
  services: Services.pipe(withDefault(DEFAULTS.services)),
  sites: Sites.pipe(withDefault(DEFAULTS.sites)),
  messageSizeLimit: count(0).pipe(withDefault(DEFAULTS.messageSizeLimit)),
  smtpdRecipientLimit: count(1).pipe(withDefault(DEFAULTS.smtpdRecipientLimit)),
  hopcountLimit: count(1).pipe(withDefault(DEFAULTS.hopcountLimit)),
  minimalBackoffTime: PositiveDuration.pipe(withDefault(DEFAULTS.minimalBackoffTime)),
  maximalBackoffTime: PositiveDuration.pipe(withDefault(DEFAULTS.maximalBackoffTime)),
  maximalQueueLifetime: PostfixDuration.pipe(withDefault(DEFAULTS.maximalQueueLifetime)),
  bounceQueueLifetime: PostfixDuration.pipe(withDefault(DEFAULTS.bounceQueueLifetime)),
  initialDestinationConcurrency: count(1).pipe(withDefault(DEFAULTS.initialDestinationConcurrency)),
  defaultDestinationConcurrencyLimit: count(1).pipe(withDefault(DEFAULTS.defaultDestinationConcurrencyLimit)),
  defaultDestinationRecipientLimit: count(1).pipe(withDefault(DEFAULTS.defaultDestinationRecipientLimit)),
  defaultDestinationConcurrencyPositiveFeedback: Feedback.pipe(withDefault(DEFAULTS.defaultDestinationConcurrencyPositiveFeedback)),
  defaultDestinationConcurrencyNegativeFeedback: Feedback.pipe(withDefault(DEFAULTS.defaultDestinationConcurrencyNegativeFeedback)),
  defaultDestinationConcurrencyFailedCohortLimit: count(0).pipe(withDefault(DEFAULTS.defaultDestinationConcurrencyFailedCohortLimit)),
  defaultDestinationRateDelay: PostfixDuration.pipe(withDefault(DEFAULTS.defaultDestinationRateDelay)),
  qmgrMessageActiveLimit: count(1).pipe(withDefault(DEFAULTS.qmgrMessageActiveLimit)),
  qmgrMessageRecipientLimit: count(1).pipe(withDefault(DEFAULTS.qmgrMessageRecipientLimit)),
  qmgrMessageRecipientMinimum: count(1).pipe(withDefault(DEFAULTS.qmgrMessageRecipientMinimum)),
  smtpConnectTimeout: PositiveDuration.pipe(withDefault(DEFAULTS.smtpConnectTimeout)),
  smtpHeloTimeout: PositiveDuration.pipe(withDefault(DEFAULTS.smtpHeloTimeout)),
  smtpDataDoneTimeout: PositiveDuration.pipe(withDefault(DEFAULTS.smtpDataDoneTimeout)),
  smtpTlsSecurityLevel: TlsLevelSchema.pipe(withDefault(DEFAULTS.smtpTlsSecurityLevel)),
  smtpTlsCaFile: CaFile.pipe(withDefault(DEFAULTS.smtpTlsCaFile)),
  smtpTlsPolicyMaps: TlsPolicyMaps.pipe(withDefault(DEFAULTS.smtpTlsPolicyMaps)),
  smtpdTimeout: PositiveDuration.pipe(withDefault(DEFAULTS.smtpdTimeout)),
  logLevel: LogLevel.pipe(withDefault(DEFAULTS.logLevel)),
  deliveryThread: DeliveryThread.pipe(withDefault(DEFAULTS.deliveryThread)),
  backoffJitter: Fraction.pipe(withDefault(DEFAULTS.backoffJitter)),
  attemptLogRetention: PostfixDuration.pipe(withDefault(DEFAULTS.attemptLogRetention)),
}

/** Our keys, in document order. */
export const CONFIG_KEYS = Object.keys(fields) as ReadonlyArray<keyof typeof fields>

/**
 * The postern.yaml document. Decode with `{ onExcessProperty: "error", errors: "all" }` (see load.ts).
 * Its decoded type is `PosternConfig` except that `dataDir` is still as written (relative paths unresolved).
 */
export const PosternConfigSchema = Schema.Struct(fields).check(
  Schema.makeFilter((config) => [...backoffIssues(config), ...transportIssues(config)]),
)

/** The fields, for decoding a subset of keys (the loader's cross-key checks). */
export const PosternConfigFields = fields

/** postern.yaml as written (all keys optional). */
export type PosternConfigDocument = typeof PosternConfigSchema.Encoded
