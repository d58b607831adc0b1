// The decoded, validated configuration every part of Postern reads.
// Produced only by src/config/load.ts (YAML → Effect Schema → this shape); durations are milliseconds,
// defaults are filled in, and built-in services are merged with the user's `services`.

/** A listener: one `listen` entry. */
export interface ListenerConfig {
  readonly host: string
  readonly port: number
  /** Early-talker wait before the 220 greeting for clients outside `mynetworks` (ms); trusted clients never wait. */
  readonly greetWait: number
}

/** The kinds of delivery service Postern implements (master.cf's service types). */
export type ServiceType = "smtp" | "lmtp" | "discard" | "error"

/** Outbound TLS (Postfix's smtp_tls_security_level): none, may (opportunistic), encrypt, verify. */
export type TlsLevel = "none" | "may" | "encrypt" | "verify"

/** A TLS policy: a level and, for verify, the names the certificate must match (null = `hostname`). */
export interface TlsPolicy {
  readonly level: TlsLevel
  readonly match: ReadonlyArray<string> | null
}

/** Per-service overrides of the scheduling keys (Postfix's `<service>_*` parameters); absent = global default. */
export interface ServiceConfig {
  readonly type: ServiceType
  /** This service's TLS level (Postfix's `-o smtp_tls_security_level`); LMTP services default to none. */
  readonly smtpTlsSecurityLevel?: TlsLevel
  readonly initialDestinationConcurrency?: number
  readonly destinationConcurrencyLimit?: number
  readonly destinationRecipientLimit?: number
  readonly destinationConcurrencyPositiveFeedback?: string
  readonly destinationConcurrencyNegativeFeedback?: string
  readonly destinationConcurrencyFailedCohortLimit?: number
  readonly destinationRateDelay?: number
}

/**
 * A site (KumoMTA's MX roll-up, per provider): destinations whose MX hosts all match `mx` share one
 * destination queue with these limits (each absent one falls back to the service's, then the global one).
 */
export interface SiteConfig extends Omit<ServiceConfig, "type"> {
  /** Host names, or `*.domain` for every host under the domain; lowercase. */
  readonly mx: ReadonlyArray<string>
}

/** A `transports` value `"service:nexthop"`; an empty part keeps the default (transport(5)). */
export interface TransportEntry {
  readonly service: string | null
  readonly nexthop: string | null
}

export interface PosternConfig {
  readonly hostname: string
  readonly dataDir: string
  readonly listen: ReadonlyArray<ListenerConfig>
  readonly mynetworks: ReadonlyArray<string>
  readonly relayDomains: ReadonlyArray<string>
  /** `"[host]:port"` (no MX lookup) or `"host"` (MX); null = MX of the recipient domain. */
  readonly relayhost: string | null
  /** Tried after the nexthop's own servers (Postfix's smtp_fallback_relay): a "graveyard" relay. */
  readonly smtpFallbackRelay: ReadonlyArray<string>
  /** Keys: `domain`, `.domain` (subdomains) or `*`; see transport(5). */
  readonly transports: Readonly<Record<string, TransportEntry>>
  /** Built-ins `smtp`, `relay`, `lmtp`, `discard`, `error`, plus the user's; user entries override built-ins. */
  readonly services: Readonly<Record<string, ServiceConfig>>
  /** MX roll-up per provider: site name → its MX host patterns and limits. */
  readonly sites: Readonly<Record<string, SiteConfig>>
  readonly messageSizeLimit: number
  readonly smtpdRecipientLimit: number
  readonly hopcountLimit: number
  readonly minimalBackoffTime: number
  readonly maximalBackoffTime: number
  readonly maximalQueueLifetime: number
  readonly bounceQueueLifetime: number
  readonly initialDestinationConcurrency: number
  readonly defaultDestinationConcurrencyLimit: number
  readonly defaultDestinationRecipientLimit: number
  /** Feedback per completed delivery: `1`, `1/2`, `1/concurrency`, `1/sqrt_concurrency` (qmgr_feedback.c). */
  readonly defaultDestinationConcurrencyPositiveFeedback: string
  readonly defaultDestinationConcurrencyNegativeFeedback: string
  /** Failed pseudo-cohorts before a destination is dead; 0 = never. */
  readonly defaultDestinationConcurrencyFailedCohortLimit: number
  /** At most one delivery per this delay to a destination (ms); 0 = off. Forces concurrency 1. */
  readonly defaultDestinationRateDelay: number
  /** Postfix's qmgr_message_active_limit. */
  readonly qmgrMessageActiveLimit: number
  /**
   * Postfix's qmgr_message_recipient_limit: recipients the queue manager holds in memory, over all active
   * messages; a message with more is read from the store in batches.
   */
  readonly qmgrMessageRecipientLimit: number
  /** Postfix's qmgr_message_recipient_minimum: the batch any message may read, even when the limit is reached. */
  readonly qmgrMessageRecipientMinimum: number
  readonly smtpConnectTimeout: number
  readonly smtpHeloTimeout: number
  readonly smtpDataDoneTimeout: number
  /** Outbound TLS level for SMTP services (Postfix's smtp_tls_security_level). */
  readonly smtpTlsSecurityLevel: TlsLevel
  /** PEM file of the CAs trusted at `verify` (smtp_tls_CAfile); null = Node's bundled Mozilla roots. */
  readonly smtpTlsCaFile: string | null
  /** Nexthop (as written), domain or `.parent` domain → TLS policy (smtp_tls_policy_maps); keys lowercased. */
  readonly smtpTlsPolicyMaps: Readonly<Record<string, TlsPolicy>>
  /** Idle time of the SMTP session for a client (smtpd_timeout). */
  readonly smtpdTimeout: number
  readonly logLevel: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent"
  /** Spread of the retry delay: the next attempt comes at delay × (1 ± backoffJitter), drawn from the seeded Rng. */
  readonly backoffJitter: number
  /** Where the delivery agents run: a worker thread on the second core, or the main thread. */
  readonly deliveryThread: "auto" | "worker" | "main"
  /** Rows of the attempts log older than this are deleted (ms); 0 = keep them forever. */
  readonly attemptLogRetention: number
}
