// A simulation scenario (scenarios/*.yaml, documented in docs/simulation.md): the traffic, the modelled
// destinations and their behaviours, and the policy variants to compare. Guarantees: returns a complete,
// validated Scenario, or throws one ScenarioError listing every problem with its key path; each policy's
// overrides are decoded by the production config loader (decodeConfig), so a policy is a real config.
import { readFileSync } from "node:fs"
import path from "node:path"
import YAML from "yaml"
import { ConfigError, decodeConfig } from "../config/index.js"
import { isDomainName } from "../config/schema.js"
import type { PosternConfig } from "../config/types.js"
import type { Distribution } from "./random.js"
import { Reader, show, type Path, type ScenarioIssue } from "./reader.js"

export type { ScenarioIssue } from "./reader.js"

// ------------------------------------------------------------------------------------------------ types

export interface Scenario {
  readonly name: string
  readonly description: string
  /** Virtual epoch of the run's time 0 (ms). */
  readonly start: number
  /** Stop this long after time 0 (ms); null = run until no work is left. */
  readonly until: number | null
  readonly traffic: TrafficSpec
  readonly destinations: ReadonlyArray<DestinationSpec>
  readonly groups: ReadonlyArray<GroupSpec>
  readonly policies: ReadonlyArray<PolicySpec>
}

export interface TrafficSpec {
  readonly messages: number
  readonly arrival: ArrivalSpec
  /** Recipients per message. */
  readonly recipients: Distribution
  /** Message size in bytes. */
  readonly size: Distribution
  readonly sender: string
  /** Domain mix: a domain (of a destination) or a group name, with its weight. */
  readonly domains: ReadonlyArray<{ readonly target: string; readonly weight: number }>
}

export type ArrivalSpec =
  | { readonly process: "burst"; readonly at: number; readonly spread: number }
  | { readonly process: "poisson"; readonly start: number; readonly perSecond: number }
  /** `curve`: 24 hourly weights; arrivals spread over `days` days by those weights. */
  | { readonly process: "daily"; readonly start: number; readonly days: number; readonly curve: ReadonlyArray<number> }

export interface Greylist {
  readonly delay: number
  readonly retryWindow: number
  readonly reply: string
}
export interface RateLimit {
  readonly limit: number
  readonly window: number
  readonly per: "recipient" | "message" | "connection"
  readonly reply: string
}
export type OutageMode = "refuse" | "hang" | "421"
export interface Outage {
  readonly start: number
  readonly duration: number
  readonly mode: OutageMode
  /** Only these MX hosts are down (default: all of the destination's). */
  readonly hosts: ReadonlyArray<string> | null
}
export interface Tempfail {
  readonly probability: number
  readonly stage: "mail" | "rcpt" | "data"
  readonly reply: string
}
export interface UnknownRecipients {
  readonly share: number
  readonly reply: string
}
export interface SlowData {
  readonly delay: number
  /** 0 = no per-byte cost. */
  readonly bytesPerSecond: number
}
export interface MaxConnections {
  readonly limit: number
  readonly reply: string
}

export interface Behaviours {
  readonly latency: Distribution
  readonly connectLatency: Distribution
  readonly greylist: Greylist | null
  readonly rateLimit: RateLimit | null
  readonly outages: ReadonlyArray<Outage>
  readonly tempfail: Tempfail | null
  readonly unknownRecipients: UnknownRecipients | null
  readonly slowData: SlowData | null
  readonly maxConnections: MaxConnections | null
}

export interface DestinationSpec extends Behaviours {
  /** The first domain: the destination's name in reports. */
  readonly name: string
  /** Every domain whose MX is this destination (they share its hosts, limits and state). */
  readonly domains: ReadonlyArray<string>
  readonly mx: ReadonlyArray<{ readonly host: string; readonly priority: number }>
}

/** A behaviour of a generated group that only a share of its domains has. */
export interface Shared<T> {
  readonly value: T
  readonly ofDomains: number
}

export interface GroupSpec {
  readonly name: string
  readonly count: number
  /** Domain name with `{n}` for 1..count, zero-padded to the width of count. */
  readonly pattern: string
  readonly split: { readonly kind: "uniform" } | { readonly kind: "zipf"; readonly exponent: number }
  readonly latency: Distribution
  readonly connectLatency: Distribution
  readonly greylist: Shared<Greylist> | null
  readonly rateLimit: Shared<RateLimit> | null
  readonly outages: ReadonlyArray<Shared<Outage>>
  readonly tempfail: Shared<Tempfail> | null
  readonly unknownRecipients: Shared<UnknownRecipients> | null
  readonly slowData: Shared<SlowData> | null
  readonly maxConnections: Shared<MaxConnections> | null
}

/** The domains of a generated group, in order: `{n}` is 1..count, zero-padded to the width of count. */
export const groupDomains = (g: GroupSpec): Array<string> => {
  const width = String(g.count).length
  return Array.from({ length: g.count }, (_, i) => g.pattern.replace("{n}", String(i + 1).padStart(width, "0")))
}

export interface PolicySpec {
  readonly name: string
  /** The overrides as written in the scenario (shown in the summary). */
  readonly overrides: Readonly<Record<string, unknown>>
  readonly config: PosternConfig
}

export class ScenarioError extends Error {
  override readonly name = "ScenarioError"
  constructor(
    readonly issues: ReadonlyArray<ScenarioIssue>,
    label?: string,
  ) {
    super(
      [
        `invalid scenario${label === undefined ? "" : ` ${label}`} (${issues.length} ${issues.length === 1 ? "problem" : "problems"})`,
        ...issues.map((i) => `  ${i.key === "" ? "" : `${i.key}: `}${i.message}`),
      ].join("\n"),
    )
  }
}

// ------------------------------------------------------------------------------------------ defaults

/** The host name every policy runs with unless it sets one (never the machine's: outputs are portable). */
export const SIM_HOSTNAME = "postern.sim.example"
const DEFAULT_START = Date.UTC(2025, 0, 6) // a Monday, 00:00 UTC
const DEFAULT_LATENCY: Distribution = { kind: "fixed", value: 200 }
export const DEFAULT_REPLIES = {
  greylist: "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html",
  rateLimit: "421 4.7.0 {host} Error: too many messages from your IP, try again later",
  tempfail: "451 4.3.0 <{rcpt}>: Temporary lookup failure",
  unknownRecipients: "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
  maxConnections: "421 4.7.0 {host} Error: too many connections from your IP",
} as const

// ------------------------------------------------------------------------------------------ decoding

const BEHAVIOUR_KEYS = ["latency", "connectLatency", "greylist", "rateLimit", "outages", "tempfail", "unknownRecipients", "slowData", "maxConnections"] as const

/** The behaviour keys of one destination (or group: then each may carry `ofDomains`). */
const readBehaviours = (r: Reader, m: Record<string, unknown>, path: Path, grouped: boolean) => {
  const share = (v: Record<string, unknown>, p: Path): number =>
    v["ofDomains"] === undefined ? 1 : (r.number(v["ofDomains"], [...p, "ofDomains"], 0, 1) ?? 1)
  const extra = grouped ? ["ofDomains"] : []
  const latency = m["latency"] === undefined ? DEFAULT_LATENCY : r.distribution(m["latency"], [...path, "latency"], (v, p) => r.duration(v, p))
  const connectLatency = m["connectLatency"] === undefined ? latency : r.distribution(m["connectLatency"], [...path, "connectLatency"], (v, p) => r.duration(v, p))

  const optional = <T>(key: string, keys: ReadonlyArray<string>, read: (v: Record<string, unknown>, p: Path) => T | undefined): Shared<T> | null | undefined => {
    if (m[key] === undefined || m[key] === null) return null
    const p = [...path, key]
    const v = r.map(m[key], p, [...keys, ...extra])
    if (v === undefined) return undefined
    const value = read(v, p)
    return value === undefined ? undefined : { value, ofDomains: share(v, p) }
  }
  const greylist = optional("greylist", ["delay", "retryWindow", "reply"], (v, p) => {
    const delay = v["delay"] === undefined ? 300_000 : r.duration(v["delay"], [...p, "delay"])
    const retryWindow = v["retryWindow"] === undefined ? 2 * 86_400_000 : r.duration(v["retryWindow"], [...p, "retryWindow"])
    const reply = v["reply"] === undefined ? DEFAULT_REPLIES.greylist : replyText(r, v["reply"], [...p, "reply"], 4)
    return delay === undefined || retryWindow === undefined || reply === undefined ? undefined : { delay, retryWindow, reply }
  })
  const rateLimit = optional("rateLimit", ["limit", "window", "per", "reply"], (v, p) => {
    const limit = r.count(v["limit"], [...p, "limit"], 1)
    const window = r.duration(v["window"], [...p, "window"])
    const per = v["per"] === undefined ? "message" : r.oneOf(v["per"], [...p, "per"], ["recipient", "message", "connection"] as const)
    const reply = v["reply"] === undefined ? DEFAULT_REPLIES.rateLimit : replyText(r, v["reply"], [...p, "reply"], 4)
    if (window === 0) return r.fail([...p, "window"], "must be more than 0")
    return limit === undefined || window === undefined || per === undefined || reply === undefined ? undefined : { limit, window, per, reply }
  })
  const outages: Array<Shared<Outage>> = []
  if (m["outages"] !== undefined) {
    if (!Array.isArray(m["outages"])) r.fail([...path, "outages"], `expected a list of outages, got ${show(m["outages"])}`)
    else
      m["outages"].forEach((o, i) => {
        const p = [...path, "outages", i]
        const v = r.map(o, p, ["start", "duration", "mode", "hosts", ...extra])
        if (v === undefined) return
        const start = r.duration(v["start"], [...p, "start"])
        const duration = r.duration(v["duration"], [...p, "duration"])
        const mode = v["mode"] === undefined ? "refuse" : r.oneOf(v["mode"], [...p, "mode"], ["refuse", "hang", "421"] as const)
        let hosts: Array<string> | null = null
        if (v["hosts"] !== undefined) {
          if (!Array.isArray(v["hosts"])) r.fail([...p, "hosts"], "expected a list of MX host names")
          else hosts = v["hosts"].map((h, j) => r.domain(h, [...p, "hosts", j]) ?? "")
        }
        if (start !== undefined && duration !== undefined && mode !== undefined) outages.push({ value: { start, duration, mode, hosts }, ofDomains: share(v, p) })
      })
  }
  const tempfail = optional("tempfail", ["probability", "stage", "reply"], (v, p) => {
    const probability = r.number(v["probability"], [...p, "probability"], 0, 1)
    const stage = v["stage"] === undefined ? "rcpt" : r.oneOf(v["stage"], [...p, "stage"], ["mail", "rcpt", "data"] as const)
    const reply = v["reply"] === undefined ? DEFAULT_REPLIES.tempfail : replyText(r, v["reply"], [...p, "reply"], 4)
    return probability === undefined || stage === undefined || reply === undefined ? undefined : { probability, stage, reply }
  })
  const unknownRecipients = optional("unknownRecipients", ["share", "reply"], (v, p) => {
    const s = r.number(v["share"], [...p, "share"], 0, 1)
    const reply = v["reply"] === undefined ? DEFAULT_REPLIES.unknownRecipients : replyText(r, v["reply"], [...p, "reply"], 5)
    return s === undefined || reply === undefined ? undefined : { share: s, reply }
  })
  const slowData = optional("slowData", ["delay", "bytesPerSecond"], (v, p) => {
    const delay = v["delay"] === undefined ? 0 : r.duration(v["delay"], [...p, "delay"])
    const bytesPerSecond = v["bytesPerSecond"] === undefined ? 0 : r.size(v["bytesPerSecond"], [...p, "bytesPerSecond"])
    return delay === undefined || bytesPerSecond === undefined ? undefined : { delay, bytesPerSecond }
  })
  const maxConnections = optional("maxConnections", ["limit", "reply"], (v, p) => {
    const limit = r.count(v["limit"], [...p, "limit"], 1)
    const reply = v["reply"] === undefined ? DEFAULT_REPLIES.maxConnections : replyText(r, v["reply"], [...p, "reply"], 4)
    return limit === undefined || reply === undefined ? undefined : { limit, reply }
  })
  return { latency, connectLatency, greylist, rateLimit, outages, tempfail, unknownRecipients, slowData, maxConnections }
}

/** An SMTP reply text whose code is of the given class (4 = temporary, 5 = permanent). */
const replyText = (r: Reader, v: unknown, path: Path, klass: 4 | 5): string | undefined => {
  const s = r.string(v, path)
  if (s === undefined) return undefined
  return new RegExp(`^${klass}\\d\\d[ -]`).test(s) ? s : r.fail(path, `expected an SMTP reply starting with a ${klass}xx code, e.g. "${klass === 4 ? "451 4.3.0 try later" : "550 5.1.1 unknown"}", got ${show(v)}`)
}

const plain = <T>(s: Shared<T> | null | undefined): T | null | undefined => (s === null || s === undefined ? s : s.value)

const readMx = (r: Reader, v: unknown, path: Path, firstDomain: string): Array<{ host: string; priority: number }> | undefined => {
  if (v === undefined) return [{ host: `mx.${firstDomain}`, priority: 10 }]
  if (!Array.isArray(v) || v.length === 0) return r.fail(path, `expected a list of MX hosts ("mx1.example.net" or {host, priority}), got ${show(v)}`)
  const out: Array<{ host: string; priority: number }> = []
  v.forEach((e, i) => {
    if (typeof e === "string") {
      const host = r.domain(e, [...path, i])
      if (host !== undefined) out.push({ host, priority: 10 })
      return
    }
    const m = r.map(e, [...path, i], ["host", "priority"])
    if (m === undefined) return
    const host = r.domain(m["host"], [...path, i, "host"])
    const priority = m["priority"] === undefined ? 10 : r.count(m["priority"], [...path, i, "priority"])
    if (host !== undefined && priority !== undefined) out.push({ host, priority })
  })
  return out
}

const readArrival = (r: Reader, v: unknown, path: Path): ArrivalSpec | undefined => {
  const m = r.map(v, path, ["process", "at", "spread", "start", "rate", "days", "curve"])
  if (m === undefined) return undefined
  const process = r.oneOf(m["process"], [...path, "process"], ["burst", "poisson", "daily"] as const)
  const start = m["start"] === undefined ? 0 : r.duration(m["start"], [...path, "start"])
  switch (process) {
    case "burst": {
      const at = m["at"] === undefined ? 0 : r.duration(m["at"], [...path, "at"])
      const spread = m["spread"] === undefined ? 0 : r.duration(m["spread"], [...path, "spread"])
      return at === undefined || spread === undefined ? undefined : { process, at, spread }
    }
    case "poisson": {
      const perSecond = r.rate(m["rate"], [...path, "rate"])
      return perSecond === undefined || start === undefined ? undefined : { process, start, perSecond }
    }
    case "daily": {
      const days = m["days"] === undefined ? 1 : r.count(m["days"], [...path, "days"], 1)
      const c = m["curve"]
      let curve: Array<number> | undefined
      if (c === undefined) curve = FLAT_DAY
      else if (!Array.isArray(c) || c.length !== 24 || c.some((x) => typeof x !== "number" || !(x >= 0)) || c.every((x) => x === 0)) {
        r.fail([...path, "curve"], "expected 24 non-negative hourly weights (00:00 to 23:00 UTC), not all 0")
      } else curve = c as Array<number>
      return days === undefined || curve === undefined || start === undefined ? undefined : { process, start, days, curve }
    }
    default:
      return undefined
  }
}

const FLAT_DAY: Array<number> = Array.from({ length: 24 }, () => 1)

const readPolicies = (r: Reader, v: unknown): Array<PolicySpec> => {
  // With no policies named, Postfix's own schedule: its defaults, and no jitter (Postfix has none).
  if (v === undefined) return [{ name: "postfix-defaults", overrides: { backoffJitter: 0 }, config: decodeConfig({ hostname: SIM_HOSTNAME, backoffJitter: 0 }, "/") }]
  const m = r.map(v, ["policies"], Object.keys(v ?? {}))
  if (m === undefined) return []
  const out: Array<PolicySpec> = []
  for (const [name, raw] of Object.entries(m)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
      r.fail(["policies", name], "a policy name is letters, digits, '.', '_' and '-' (it names files in the output)")
      continue
    }
    const overrides = raw === null ? {} : raw
    if (typeof overrides !== "object" || Array.isArray(overrides)) {
      r.fail(["policies", name], `expected a mapping of config keys (as in postern.yaml) to values, got ${show(raw)}`)
      continue
    }
    try {
      const config = decodeConfig({ hostname: SIM_HOSTNAME, ...(overrides as Record<string, unknown>) }, "/")
      out.push({ name, overrides: overrides as Record<string, unknown>, config })
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      for (const i of e.issues) r.issues.push({ key: `policies.${name}${i.key === "" ? "" : `.${i.key}`}`, message: i.message })
    }
  }
  if (out.length === 0 && r.issues.length === 0) r.fail(["policies"], "name at least one policy (an empty mapping {} means Postern's defaults; { backoffJitter: 0 } is Postfix's exact schedule)")
  return out
}

/** Decodes an already-parsed scenario document. `fallbackName` names it when it has no `name`. */
export const decodeScenario = (doc: unknown, fallbackName: string, label?: string): Scenario => {
  const r = new Reader()
  const top = r.map(doc, [], ["name", "description", "start", "until", "traffic", "destinations", "policies"])
  if (top === undefined) throw new ScenarioError(r.issues, label)
  const name = top["name"] === undefined ? fallbackName : (r.string(top["name"], ["name"]) ?? fallbackName)
  const description = top["description"] === undefined ? "" : (r.string(top["description"], ["description"]) ?? "")
  let start = DEFAULT_START
  if (top["start"] !== undefined) {
    const t = typeof top["start"] === "string" ? Date.parse(top["start"]) : top["start"] instanceof Date ? top["start"].getTime() : NaN
    if (Number.isNaN(t)) r.fail(["start"], `expected an ISO 8601 time such as "2025-01-06T00:00:00Z", got ${show(top["start"])}`)
    else start = t
  }
  const until = top["until"] === undefined ? null : (r.duration(top["until"], ["until"]) ?? null)

  // destinations and groups
  const destinations: Array<DestinationSpec> = []
  const groups: Array<GroupSpec> = []
  if (!Array.isArray(top["destinations"]) || top["destinations"].length === 0) {
    r.fail(["destinations"], "expected a list of destinations (each a domain with its MX hosts and behaviours)")
  } else {
    top["destinations"].forEach((d, i) => {
      const p = ["destinations", i]
      if (typeof d === "object" && d !== null && "generate" in d) {
        const m = r.map(d, p, ["generate", "name", "domain", "split", "zipf", ...BEHAVIOUR_KEYS])
        if (m === undefined) return
        const count = r.count(m["generate"], [...p, "generate"], 1)
        const gname = r.string(m["name"], [...p, "name"])
        const pattern = r.string(m["domain"], [...p, "domain"])
        if (pattern !== undefined && (!pattern.includes("{n}") || !isDomainName(pattern.replace("{n}", "1")))) {
          r.fail([...p, "domain"], `expected a domain name with {n} in it, e.g. "shop{n}.example", got ${show(pattern)}`)
        }
        const splitKind = m["split"] === undefined ? "uniform" : r.oneOf(m["split"], [...p, "split"], ["uniform", "zipf"] as const)
        const exponent = m["zipf"] === undefined ? 1 : r.number(m["zipf"], [...p, "zipf"], 0)
        const b = readBehaviours(r, m, p, true)
        if (count === undefined || gname === undefined || pattern === undefined || splitKind === undefined || exponent === undefined) return
        if (b.latency === undefined || b.connectLatency === undefined) return
        if ([b.greylist, b.rateLimit, b.tempfail, b.unknownRecipients, b.slowData, b.maxConnections].some((x) => x === undefined)) return
        groups.push({
          name: gname.toLowerCase(),
          count,
          pattern: pattern.toLowerCase(),
          split: splitKind === "zipf" ? { kind: "zipf", exponent } : { kind: "uniform" },
          latency: b.latency,
          connectLatency: b.connectLatency,
          greylist: b.greylist ?? null,
          rateLimit: b.rateLimit ?? null,
          outages: b.outages,
          tempfail: b.tempfail ?? null,
          unknownRecipients: b.unknownRecipients ?? null,
          slowData: b.slowData ?? null,
          maxConnections: b.maxConnections ?? null,
        })
        return
      }
      const m = r.map(d, p, ["domain", "aliases", "mx", ...BEHAVIOUR_KEYS])
      if (m === undefined) return
      const domain = r.domain(m["domain"], [...p, "domain"])
      const aliases: Array<string> = []
      if (m["aliases"] !== undefined) {
        if (!Array.isArray(m["aliases"])) r.fail([...p, "aliases"], "expected a list of domains that share this destination's MX hosts")
        else m["aliases"].forEach((a, j) => aliases.push(r.domain(a, [...p, "aliases", j]) ?? ""))
      }
      const b = readBehaviours(r, m, p, false)
      if (domain === undefined) return
      const mx = readMx(r, m["mx"], [...p, "mx"], domain)
      const greylist = plain(b.greylist)
      const rateLimit = plain(b.rateLimit)
      const tempfail = plain(b.tempfail)
      const unknownRecipients = plain(b.unknownRecipients)
      const slowData = plain(b.slowData)
      const maxConnections = plain(b.maxConnections)
      if (mx === undefined || b.latency === undefined || b.connectLatency === undefined) return
      if (greylist === undefined || rateLimit === undefined || tempfail === undefined || unknownRecipients === undefined || slowData === undefined || maxConnections === undefined) return
      destinations.push({
        name: domain,
        domains: [domain, ...aliases],
        mx,
        latency: b.latency,
        connectLatency: b.connectLatency,
        greylist,
        rateLimit,
        outages: b.outages.map((o) => o.value),
        tempfail,
        unknownRecipients,
        slowData,
        maxConnections,
      })
    })
  }

  // traffic
  let traffic: TrafficSpec | undefined
  const t = r.map(top["traffic"], ["traffic"], ["messages", "arrival", "recipients", "size", "sender", "domains"])
  if (t !== undefined) {
    const messages = r.count(t["messages"], ["traffic", "messages"], 1)
    const arrival = t["arrival"] === undefined ? ({ process: "burst", at: 0, spread: 0 } as const) : readArrival(r, t["arrival"], ["traffic", "arrival"])
    const recipients = t["recipients"] === undefined ? ({ kind: "fixed", value: 1 } as const) : r.distribution(t["recipients"], ["traffic", "recipients"], (v, p) => r.count(v, p, 1))
    const size = t["size"] === undefined ? ({ kind: "fixed", value: 4000 } as const) : r.distribution(t["size"], ["traffic", "size"], (v, p) => r.size(v, p))
    const sender = t["sender"] === undefined ? "sender@sender.example" : r.string(t["sender"], ["traffic", "sender"])
    if (sender !== undefined && !/^[^@\s]+@[^@\s]+$/.test(sender)) r.fail(["traffic", "sender"], `expected an address such as "news@sender.example", got ${show(sender)}`)
    const mix: Array<{ target: string; weight: number }> = []
    const dm = r.map(t["domains"], ["traffic", "domains"], Object.keys((t["domains"] as object | null) ?? {}))
    if (dm !== undefined) {
      const known = new Set([...destinations.flatMap((d) => d.domains), ...groups.map((g) => g.name)])
      for (const [target, w] of Object.entries(dm)) {
        const weight = r.number(w, ["traffic", "domains", target], 0)
        if (!known.has(target.toLowerCase())) r.fail(["traffic", "domains", target], "not a domain of any destination, nor the name of a generated group")
        else if (weight !== undefined && weight > 0) mix.push({ target: target.toLowerCase(), weight })
      }
      if (mix.length === 0) r.fail(["traffic", "domains"], "give at least one domain a weight above 0")
    }
    if (messages !== undefined && arrival !== undefined && recipients !== undefined && size !== undefined && sender !== undefined) {
      traffic = { messages, arrival, recipients, size, sender, domains: mix }
    }
  }

  const seen = new Set<string>()
  const hosts = new Map<string, string>()
  for (const d of destinations) {
    for (const dom of d.domains) {
      if (seen.has(dom)) r.fail(["destinations"], `domain ${dom} is listed twice`)
      seen.add(dom)
    }
    for (const { host } of d.mx) {
      const owner = hosts.get(host)
      if (owner !== undefined && owner !== d.name) r.fail(["destinations"], `MX host ${host} belongs to both ${owner} and ${d.name}; list shared domains as aliases of one destination`)
      hosts.set(host, d.name)
    }
  }
  for (const g of groups) if (seen.has(g.name)) r.fail(["destinations"], `group name ${g.name} is also a domain`)

  const policies = readPolicies(r, top["policies"])
  if (r.issues.length > 0 || traffic === undefined) throw new ScenarioError(r.issues.length > 0 ? r.issues : [{ key: "traffic", message: "missing" }], label)
  return { name, description, start, until, traffic, destinations, groups, policies }
}

/** Parses scenario YAML; `label` names it in error messages only. */
export const parseScenario = (text: string, fallbackName: string, label?: string): Scenario => {
  const document = YAML.parseDocument(text)
  if (document.errors.length > 0) {
    throw new ScenarioError(document.errors.map((e) => ({ key: "", message: e.message.split("\n")[0] ?? e.message })), label)
  }
  return decodeScenario(document.toJS(), fallbackName, label)
}

/** Reads a scenario file; without a `name` it is named after the file. */
export const loadScenario = (file: string): Scenario =>
  parseScenario(readFileSync(file, "utf8"), path.basename(file).replace(/\.ya?ml$/i, ""), path.basename(file))
