// The configuration loader: postern.yaml → YAML → PosternConfigSchema → PosternConfig.
// Guarantees: returns a complete, validated PosternConfig, or throws one ConfigError that lists every problem
// (one per line: the key path, what is wrong with the value, what is allowed). No output, no process.exit.
import { readFileSync } from "node:fs"
import path from "node:path"
import { Result, Schema, SchemaAST, SchemaIssue } from "effect"
import YAML from "yaml"
import { showValue } from "./duration.js"
import {
  BUILTIN_SERVICES,
  PosternConfigFields,
  PosternConfigSchema,
  backoffIssues,
  isServiceName,
  missingTypeIssues,
  sitePatternIssues,
  transportIssues,
} from "./schema.js"
import type { PosternConfig, ServiceType } from "./types.js"

/** One problem: `key` is a path such as `listen[1]`, `services.bulk.type` or `transports["example.com"]`
 * (empty for problems with the file as a whole); `message` says what is wrong and what is allowed. */
export interface ConfigIssue {
  readonly key: string
  readonly message: string
}

/** Why the configuration was refused. */
export type ConfigErrorReason = "file-not-found" | "file-unreadable" | "yaml-syntax" | "invalid"

/** The configuration could not be loaded; `message` lists every issue, one per line. */
export class ConfigError extends Error {
  override readonly name = "ConfigError"
  readonly issues: ReadonlyArray<ConfigIssue>
  readonly reason: ConfigErrorReason
  /** The file, when loaded from one. */
  readonly file: string | undefined

  constructor(reason: ConfigErrorReason, issues: ReadonlyArray<ConfigIssue>, file?: string) {
    super(formatMessage(reason, issues, file))
    this.reason = reason
    this.issues = issues
    this.file = file
  }
}

function formatMessage(reason: ConfigErrorReason, issues: ReadonlyArray<ConfigIssue>, file: string | undefined): string {
  const where = file === undefined ? "" : ` ${file}`
  const head =
    reason === "file-not-found"
      ? `configuration file not found:${where}`
      : reason === "file-unreadable"
        ? `cannot read configuration file${where}`
        : reason === "yaml-syntax"
          ? `configuration file${where} is not valid YAML`
          : `invalid configuration${file === undefined ? "" : ` in ${file}`} (${issues.length} ${issues.length === 1 ? "problem" : "problems"})`
  return [head, ...issues.map((i) => `  ${i.key === "" ? "" : `${i.key}: `}${i.message}`)].join("\n")
}

const DECODE_OPTIONS = { onExcessProperty: "error", errors: "all", reportInput: true } as const

/**
 * Loads and validates a postern.yaml. Without a path, returns the defaults (relative paths against the
 * current directory). Relative paths inside the file (`dataDir`) are resolved against the file's folder.
 * An empty file means all defaults. Throws ConfigError.
 */
export function loadConfig(file?: string): PosternConfig {
  if (file === undefined) return decodeConfig(undefined, process.cwd())
  const absolute = path.resolve(file)
  let text: string
  try {
    text = readFileSync(absolute, "utf8")
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === "ENOENT") {
      throw new ConfigError(
        "file-not-found",
        [{ key: "", message: "no such file; create it (docs/configuration.md has a full example) or give the path of an existing one" }],
        absolute,
      )
    }
    throw new ConfigError("file-unreadable", [{ key: "", message: `${code ?? "error"}: ${(e as Error).message}` }], absolute)
  }
  return parseConfigText(text, path.dirname(absolute), absolute)
}

/** Parses YAML text and validates it like `loadConfig`; `file` only labels the messages. */
export function parseConfigText(text: string, baseDir: string, file?: string): PosternConfig {
  const document = YAML.parseDocument(text)
  if (document.errors.length > 0) {
    throw new ConfigError(
      "yaml-syntax",
      document.errors.map((e) => {
        const at = e.linePos?.[0]
        const summary = (e.message.split("\n")[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, "")
        return { key: "", message: at === undefined ? summary : `line ${at.line}, column ${at.col}: ${summary}` }
      }),
      file,
    )
  }
  let doc: unknown
  try {
    doc = document.toJS({ maxAliasCount: 1000 })
  } catch (e) {
    throw new ConfigError("yaml-syntax", [{ key: "", message: (e as Error).message }], file)
  }
  return decodeConfig(doc, baseDir, file)
}

/**
 * Validates an already-parsed document (`undefined`/`null` = empty = all defaults) and fills in the
 * defaults; `dataDir` and `smtpTlsCaFile` are resolved against `baseDir`. Throws ConfigError listing every problem.
 */
export function decodeConfig(doc: unknown, baseDir: string, file?: string): PosternConfig {
  const input = doc ?? {}
  if (typeof input !== "object" || Array.isArray(input)) {
    throw new ConfigError(
      "invalid",
      [{ key: "", message: `the configuration must be a mapping of keys to values (key: value), got ${Array.isArray(input) ? "a list" : showValue(input)}` }],
      file,
    )
  }
  const result = Schema.decodeUnknownResult(PosternConfigSchema, DECODE_OPTIONS)(input)
  if (Result.isSuccess(result)) {
    const config = result.success
    const smtpTlsCaFile = config.smtpTlsCaFile === null ? null : path.resolve(baseDir, config.smtpTlsCaFile)
    return { ...config, dataDir: path.resolve(baseDir, config.dataDir), smtpTlsCaFile }
  }
  const found = [...problemsOf(result.failure.issue), ...crossKeyProblems(input as Record<string, unknown>)]
  throw new ConfigError("invalid", report(found, Object.keys(input)), file)
}

/** A problem before formatting: where (as a path) and what. */
interface Problem {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

/**
 * The checks across keys run inside the schema only when every key decoded. Run them again here, each on
 * just what it needs (entry by entry for transports × services), so that no problem hides another; the
 * duplicates this makes when they did run are dropped by `report`.
 */
function crossKeyProblems(raw: Record<string, unknown>): Array<Problem> {
  const out: Array<Problem> = []
  const add = (prefix: ReadonlyArray<PropertyKey>, issues: ReadonlyArray<{ readonly path: ReadonlyArray<PropertyKey>; readonly issue: string }>) => {
    for (const i of issues) out.push({ path: [...prefix, ...i.path], message: i.issue })
  }
  const backoff = Schema.decodeUnknownResult(
    Schema.Struct({ minimalBackoffTime: PosternConfigFields.minimalBackoffTime, maximalBackoffTime: PosternConfigFields.maximalBackoffTime }),
  )(raw)
  if (Result.isSuccess(backoff)) add([], backoffIssues(backoff.success))

  const rawServices = Object.fromEntries(entriesOf(raw["services"]))
  add(["services"], missingTypeIssues(rawServices))
  const services: Record<string, { readonly type?: ServiceType }> = { ...BUILTIN_SERVICES }
  for (const [name, entry] of Object.entries(rawServices)) {
    const one = Schema.decodeUnknownResult(PosternConfigFields.services)({ [name]: entry })
    if (Result.isSuccess(one)) Object.assign(services, one.success)
    else if (isServiceName(name)) services[name] ??= {} // it exists; its own entry is invalid (reported already)
  }
  const transports: Record<string, { readonly service: string | null; readonly nexthop: string | null }> = {}
  for (const [key, entry] of entriesOf(raw["transports"])) {
    const one = Schema.decodeUnknownResult(PosternConfigFields.transports)({ [key]: entry })
    if (Result.isSuccess(one)) Object.assign(transports, one.success)
  }
  add([], transportIssues({ transports, services }))

  // A pattern in two sites is reported even when some other site's entry is invalid.
  const sites: Record<string, { readonly mx: ReadonlyArray<string> }> = {}
  for (const [name, entry] of entriesOf(raw["sites"])) {
    const one = Schema.decodeUnknownResult(PosternConfigFields.sites)({ [name]: entry })
    if (Result.isSuccess(one)) Object.assign(sites, one.success)
  }
  add(["sites"], sitePatternIssues(sites))
  return out
}

const entriesOf = (value: unknown): Array<[string, unknown]> =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? Object.entries(value) : []

/** Drops duplicates and orders the problems as their top-level keys appear in the file (stable within a key). */
function report(problems: ReadonlyArray<Problem>, keyOrder: ReadonlyArray<string>): Array<ConfigIssue> {
  const seen = new Set<string>()
  const rank = (p: Problem) => {
    const index = p.path.length === 0 ? -1 : keyOrder.indexOf(String(p.path[0]))
    return index === -1 && p.path.length > 0 ? keyOrder.length : index
  }
  return problems
    .map((p, index) => ({ p, index, key: formatPath(p.path) }))
    .filter(({ p, key }) => {
      const id = `${key}\n${p.message}`
      if (seen.has(id)) return false
      seen.add(id)
      return true
    })
    .sort((a, b) => rank(a.p) - rank(b.p) || a.index - b.index)
    .map(({ p, key }) => ({ key, message: p.message }))
}

/** `["listen", 1]` → `listen[1]`; `["services", "bulk", "type"]` → `services.bulk.type`;
 * `["transports", "example.com"]` → `transports["example.com"]`. */
export function formatPath(keys: ReadonlyArray<PropertyKey>): string {
  let out = ""
  for (const key of keys) {
    if (typeof key === "number") out += `[${key}]`
    else if (typeof key === "string" && /^[A-Za-z_$][\w$]*$/.test(key)) out += out === "" ? key : `.${key}`
    else out += `[${JSON.stringify(String(key))}]`
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Schema issue tree → one ConfigIssue per problem.

function problemsOf(root: SchemaIssue.Issue): Array<Problem> {
  const out: Array<Problem> = []
  const push = (keys: ReadonlyArray<PropertyKey>, message: string): void => {
    out.push({ path: keys, message })
  }
  const walk = (issue: SchemaIssue.Issue, keys: ReadonlyArray<PropertyKey>): void => {
    switch (issue._tag) {
      case "Pointer":
        return walk(issue.issue, [...keys, ...issue.path])
      case "Composite":
        for (const child of issue.issues) walk(child, keys)
        return
      case "Encoding":
        return walk(issue.issue, keys)
      case "Filter": {
        const message = issue.filter.annotations?.message
        return typeof message === "string" ? push(keys, message) : walk(issue.issue, keys)
      }
      case "AnyOf":
        if (issue.issues.length > 0) {
          for (const child of issue.issues) walk(child, keys)
          return
        }
        return push(keys, expectedGot(issue.ast, issue.input))
      case "UnexpectedKey": {
        const message = annotation(issue.ast, "messageUnexpectedKey")
        return push(keys, message ?? unexpectedKey(issue.ast, keys))
      }
      case "MissingKey":
        return push(keys, issue.annotations?.messageMissingKey ?? "this key is required")
      case "InvalidType":
        return push(keys, expectedGot(issue.ast, issue.input, issue))
      case "InvalidValue":
        return push(keys, issue.annotations?.message ?? lowerFirst(SchemaIssue.defaultLeafHook(issue)))
      default:
        return push(keys, lowerFirst(SchemaIssue.defaultLeafHook(issue)))
    }
  }
  walk(root, [])
  return out
}

const lowerFirst = (s: string): string => s.charAt(0).toLowerCase() + s.slice(1)

const EMPTY_HINT = " (a key with no value is null in YAML: remove the key to get the default)"

function expectedGot(ast: SchemaAST.AST, input: unknown, leaf?: SchemaIssue.Leaf): string {
  const expected = expectedOf(ast)
  const base =
    typeof expected === "string"
      ? `expected ${expected}, got ${showValue(input)}`
      : leaf !== undefined
        ? lowerFirst(SchemaIssue.defaultLeafHook(leaf))
        : `got ${showValue(input)}`
  return input === null ? base + EMPTY_HINT : base
}

/** A string annotation of the node itself or of its last check (`SchemaAST.resolve` reads only the latter
 * when there are checks, so an annotation made before `.check(...)` is found only on the node). */
function annotation(ast: SchemaAST.AST, key: string): string | undefined {
  const value = SchemaAST.resolve(ast)?.[key] ?? ast.annotations?.[key]
  return typeof value === "string" ? value : undefined
}

const expectedOf = (ast: SchemaAST.AST): string | undefined => annotation(ast, "expected")

/** Postfix parameter names someone may carry over from main.cf, and our key for each. */
const POSTFIX_NAMES: Readonly<Record<string, string>> = {
  myhostname: "hostname",
  queue_directory: "dataDir",
  relay_domains: "relayDomains",
  transport_maps: "transports",
  inet_interfaces: "listen",
  smtp_tls_CAfile: "smtpTlsCaFile",
  smtp_tls_policy_maps: "smtpTlsPolicyMaps",
}

function unexpectedKey(ast: SchemaAST.AST, keys: ReadonlyArray<PropertyKey>): string {
  const key = String(keys[keys.length - 1] ?? "")
  if (ast._tag !== "Objects" || ast.propertySignatures.length === 0) {
    const parameter = ast._tag === "Objects" ? ast.indexSignatures[0]?.parameter : undefined
    const expected = parameter === undefined ? undefined : expectedOf(parameter)
    return `${showValue(key)} is not a valid key here${expected === undefined ? "" : `; expected ${expected}`}`
  }
  const allowed = ast.propertySignatures.map((p) => String(p.name))
  const suggestion = suggest(key, allowed)
  if (suggestion !== undefined) {
    const postfix = POSTFIX_NAMES[key] === suggestion ? ` (Postfix's ${key})` : ""
    return `unknown key; did you mean "${suggestion}"${postfix}?`
  }
  return `unknown key; the keys allowed here are ${allowed.join(", ")}`
}

function suggest(key: string, allowed: ReadonlyArray<string>): string | undefined {
  const postfix = POSTFIX_NAMES[key]
  if (postfix !== undefined && allowed.includes(postfix)) return postfix
  const camel = key.replace(/[_-]+([a-z0-9])/gi, (_, c: string) => c.toUpperCase()).toLowerCase()
  const exact = allowed.find((a) => a.toLowerCase() === camel)
  if (exact !== undefined) return exact
  let best: string | undefined
  let bestDistance = Math.max(2, Math.floor(key.length / 4)) + 1
  for (const candidate of allowed) {
    const d = distance(camel, candidate.toLowerCase())
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}
