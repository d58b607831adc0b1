// The configuration loader: durations, defaults, every kind of error message, all errors at once, files.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { Result, Schema } from "effect"
import { afterAll, describe, expect, test } from "vitest"
import YAML from "yaml"
import {
  ConfigError,
  PostfixDuration,
  PosternConfigSchema,
  decodeConfig,
  formatDuration,
  loadConfig,
  parseConfigText,
  parseDuration,
  parseNexthop,
} from "../../src/config/index.js"
import { CONFIG_KEYS } from "../../src/config/schema.js"

const BASE = "/srv/postern"

/** The ConfigError thrown by decoding `doc`. */
function errorOf(doc: unknown): ConfigError {
  try {
    decodeConfig(doc, BASE)
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError)
    return e as ConfigError
  }
  throw new Error(`expected ${JSON.stringify(doc)} to be rejected`)
}

describe("parseDuration", () => {
  test.each([
    ["300s", 300_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["5d", 432_000_000],
    ["1w", 604_800_000],
    ["100ms", 100],
    ["0", 0],
    ["0s", 0],
    ["300", 300_000],
    [" 30s ", 30_000],
    [300, 300_000],
    [0, 0],
  ] as const)("%j → %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms)
  })

  test.each(["", " ", "-5s", "-1", "5 m", "5x", "1.5h", "5M", "1h30m", "s", "ms", "5 minutes", "PT5M", "1e3", "99999999999999999w"])(
    "rejects %j",
    (text) => {
      expect(parseDuration(text)).toBeUndefined()
    },
  )

  test.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])("rejects the number %d", (n) => {
    expect(parseDuration(n)).toBeUndefined()
  })

  test.each([
    [0, "0s"],
    [100, "100ms"],
    [1_500, "1500ms"],
    [300_000, "5m"],
    [4_000_000, "4000s"],
    [432_000_000, "5d"],
    [1_209_600_000, "2w"],
  ] as const)("formatDuration(%d) = %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text)
    expect(parseDuration(text)).toBe(ms)
  })

  test("PostfixDuration decodes to ms and says what is allowed", () => {
    expect(Schema.decodeUnknownSync(PostfixDuration)("5m")).toBe(300_000)
    expect(Schema.decodeUnknownSync(PostfixDuration)(30)).toBe(30_000)
    expect(Schema.encodeSync(PostfixDuration)(300_000)).toBe("5m")
    for (const bad of ["5 minutes", -1, true]) {
      const result = Schema.decodeUnknownResult(PostfixDuration)(bad)
      expect(Result.isFailure(result)).toBe(true)
      if (Result.isFailure(result)) {
        expect(result.failure.message).toContain('a duration such as "300s", "5m", "1h", "5d", "1w" or a number of seconds')
      }
    }
  })
})

describe("defaults", () => {
  test.each([undefined, null, {}])("%j gives every default", (doc) => {
    const config = decodeConfig(doc, BASE)
    expect(config).toEqual({
      hostname: os.hostname(),
      dataDir: path.join(BASE, "postern-data"),
      listen: [{ host: "127.0.0.1", port: 2525, greetWait: 100 }],
      mynetworks: ["127.0.0.0/8", "::1/128"],
      relayDomains: [],
      relayhost: null,
      transports: {},
      services: {
        smtp: { type: "smtp" },
        relay: { type: "smtp" },
        lmtp: { type: "lmtp" },
        discard: { type: "discard" },
        error: { type: "error" },
      },
      sites: {},
      messageSizeLimit: 10_240_000,
      smtpdRecipientLimit: 1000,
      hopcountLimit: 50,
      minimalBackoffTime: 300_000,
      maximalBackoffTime: 4_000_000,
      maximalQueueLifetime: 432_000_000,
      bounceQueueLifetime: 432_000_000,
      initialDestinationConcurrency: 5,
      defaultDestinationConcurrencyLimit: 20,
      defaultDestinationRecipientLimit: 50,
      defaultDestinationConcurrencyPositiveFeedback: "1",
      defaultDestinationConcurrencyNegativeFeedback: "1",
      defaultDestinationConcurrencyFailedCohortLimit: 1,
      defaultDestinationRateDelay: 0,
      qmgrMessageActiveLimit: 20_000,
      qmgrMessageRecipientLimit: 20_000,
      qmgrMessageRecipientMinimum: 10,
      smtpConnectTimeout: 30_000,
      smtpHeloTimeout: 300_000,
      smtpDataDoneTimeout: 600_000,
      smtpTlsSecurityLevel: "may",
      smtpTlsCaFile: null,
      smtpTlsPolicyMaps: {},
      smtpdTimeout: 300_000,
      logLevel: "info",
      deliveryThread: "auto",
      backoffJitter: 0.1,
      attemptLogRetention: 604_800_000,
      smtpFallbackRelay: [],
    })
  })

  test("an empty or comment-only file gives the defaults", () => {
    for (const text of ["", "\n", "# nothing here\n"]) {
      expect(parseConfigText(text, BASE).listen).toEqual([{ host: "127.0.0.1", port: 2525, greetWait: 100 }])
    }
  })
})

describe("values", () => {
  test.each<[string, unknown, unknown]>([
    ["listen", ["[::1]:2525", "0.0.0.0:25"], [{ host: "::1", port: 2525, greetWait: 100 }, { host: "0.0.0.0", port: 25, greetWait: 100 }]],
    ["listen", [{ address: "localhost:2526", greetWait: "0s" }], [{ host: "localhost", port: 2526, greetWait: 0 }]],
    ["listen", [{ address: "127.0.0.1:2527" }], [{ host: "127.0.0.1", port: 2527, greetWait: 100 }]],
    ["listen", "127.0.0.1:0", [{ host: "127.0.0.1", port: 0, greetWait: 100 }]],
    ["mynetworks", ["10.0.0.0/8", "192.168.1.5", "2001:db8::/32", "::1"], ["10.0.0.0/8", "192.168.1.5/32", "2001:db8::/32", "::1/128"]],
    ["mynetworks", "127.0.0.0/8, [::1]/128 10.1.0.0/16", ["127.0.0.0/8", "::1/128", "10.1.0.0/16"]],
    ["relayDomains", ["Example.COM", ".sub.example.org"], ["example.com", ".sub.example.org"]],
    ["relayDomains", "a.example, b.example", ["a.example", "b.example"]],
    ["relayhost", "[smtp.example.com]:587", "[smtp.example.com]:587"],
    ["relayhost", "[10.0.0.5]", "[10.0.0.5]"],
    ["relayhost", "smarthost.example.com", "smarthost.example.com"],
    ["relayhost", "smarthost.example.com:2525", "smarthost.example.com:2525"],
    ["relayhost", "", null],
    ["relayhost", null, null],
    ["maximalQueueLifetime", "0", 0],
    ["messageSizeLimit", 0, 0],
    ["logLevel", "debug", "debug"],
    ["hostname", "mx1.example.net", "mx1.example.net"],
  ])("%s: %j", (key, value, expected) => {
    expect(decodeConfig({ [key]: value }, BASE)[key as keyof ReturnType<typeof decodeConfig>]).toEqual(expected)
  })

  test("transports: split at the first colon; empty parts are null; keys lowercased", () => {
    const config = decodeConfig(
      {
        transports: {
          "example.com": "smtp:[127.0.0.1]:2526",
          ".Example.ORG": "discard:",
          "*": ":[10.0.0.9]:25",
          "bounce.example": "error:5.1.1 mailbox gone: no forwarding",
          "lmtp.example": "lmtp:",
        },
      },
      BASE,
    )
    expect(config.transports).toEqual({
      "example.com": { service: "smtp", nexthop: "[127.0.0.1]:2526" },
      ".example.org": { service: "discard", nexthop: null },
      "*": { service: null, nexthop: "[10.0.0.9]:25" },
      "bounce.example": { service: "error", nexthop: "5.1.1 mailbox gone: no forwarding" },
      "lmtp.example": { service: "lmtp", nexthop: null },
    })
  })

  test("services are merged over the built-ins; user entries override them", () => {
    const config = decodeConfig(
      {
        services: { smtp: { destinationConcurrencyLimit: 10 }, relay: { type: "lmtp" }, bulk: { type: "smtp", destinationRecipientLimit: 5 } },
        transports: { "bulk.example": "bulk:[10.0.0.7]:25" },
      },
      BASE,
    )
    expect(config.services).toEqual({
      smtp: { type: "smtp", destinationConcurrencyLimit: 10 },
      relay: { type: "lmtp" },
      lmtp: { type: "lmtp" },
      discard: { type: "discard" },
      error: { type: "error" },
      bulk: { type: "smtp", destinationRecipientLimit: 5 },
    })
    expect(config.transports["bulk.example"]).toEqual({ service: "bulk", nexthop: "[10.0.0.7]:25" })
  })

  test("dataDir is resolved against the base folder; absolute paths stay", () => {
    expect(decodeConfig({ dataDir: "spool" }, BASE).dataDir).toBe(path.join(BASE, "spool"))
    expect(decodeConfig({ dataDir: "/var/spool/postern" }, BASE).dataDir).toBe("/var/spool/postern")
  })

  test("the schema round-trips: decode ∘ encode ∘ decode = decode", () => {
    const doc = { listen: ["[::1]:25", { address: "1.2.3.4:26", greetWait: 0 }], transports: { "a.example": "smtp:[x.example]:25" }, relayhost: "[r.example]:587" }
    const once = Schema.decodeUnknownSync(PosternConfigSchema)(doc)
    expect(Schema.decodeUnknownSync(PosternConfigSchema)(Schema.encodeSync(PosternConfigSchema)(once))).toEqual(once)
  })
})

describe("parseNexthop", () => {
  test.each([
    ["[10.0.0.5]:2526", { host: "10.0.0.5", port: 2526, mx: false }],
    ["[mx.example.com]", { host: "mx.example.com", port: null, mx: false }],
    ["[2001:db8::1]:25", { host: "2001:db8::1", port: 25, mx: false }],
    ["[ipv6:2001:db8::1]", { host: "2001:db8::1", port: null, mx: false }],
    ["example.com", { host: "example.com", port: null, mx: true }],
    ["example.com:2525", { host: "example.com", port: 2525, mx: true }],
  ] as const)("%s", (text, value) => {
    expect(parseNexthop(text)).toEqual({ ok: true, value })
  })

  test.each(["", "[10.0.0.5", "10.0.0.5", "[x]:0", "[x]:65536", "host:port", "2001:db8::1", "bad host", "unix:/run/lmtp", "inet:mx.example"])("rejects %j", (text) => {
    expect(parseNexthop(text).ok).toBe(false)
  })

  test.each([
    ["[10.0.0.5]:2424", { host: "10.0.0.5", port: 2424, mx: false }],
    ["mailstore.example", { host: "mailstore.example", port: null, mx: false }],
    ["mailstore.example:2424", { host: "mailstore.example", port: 2424, mx: false }],
    ["inet:mailstore.example:2424", { host: "mailstore.example", port: 2424, mx: false }],
    ["127.0.0.1:24", { host: "127.0.0.1", port: 24, mx: false }],
    ["unix:/run/dovecot/lmtp", { host: "/run/dovecot/lmtp", port: null, mx: false, socketPath: "/run/dovecot/lmtp" }],
    ["unix:/Tmp/With Space/lmtp", { host: "/Tmp/With Space/lmtp", port: null, mx: false, socketPath: "/Tmp/With Space/lmtp" }],
  ] as const)("lmtp: %s (no MX lookup)", (text, value) => {
    expect(parseNexthop(text, "lmtp")).toEqual({ ok: true, value })
  })

  test.each(["unix:", "unix:relative/lmtp", "inet:", "[x", "bad host"])("lmtp: rejects %j", (text) => {
    expect(parseNexthop(text, "lmtp").ok).toBe(false)
  })

  test("an lmtp service's next hop is checked with the LMTP grammar, an smtp one's refuses unix:", () => {
    expect(decodeConfig({ transports: { "box.example": "lmtp:unix:/run/dovecot/lmtp" } }, BASE).transports["box.example"]).toEqual({
      service: "lmtp",
      nexthop: "unix:/run/dovecot/lmtp",
    })
    expect(errorOf({ transports: { "box.example": "lmtp:unix:run/lmtp" } }).message).toContain("the socket path must be absolute")
    expect(errorOf({ transports: { "box.example": "smtp:unix:/run/lmtp" } }).message).toContain('"unix:" next hops are for lmtp services')
  })
})

describe("outbound TLS keys", () => {
  test("levels, per-service override, CA file resolved against the base folder", () => {
    const config = decodeConfig(
      { smtpTlsSecurityLevel: "encrypt", smtpTlsCaFile: "ca.pem", services: { bulk: { type: "smtp", smtpTlsSecurityLevel: "none" } } },
      BASE,
    )
    expect(config.smtpTlsSecurityLevel).toBe("encrypt")
    expect(config.smtpTlsCaFile).toBe(path.join(BASE, "ca.pem"))
    expect(config.services["bulk"]).toEqual({ type: "smtp", smtpTlsSecurityLevel: "none" })
  })

  test("policy maps: nexthop or domain keys (lowercased) to a level with optional match=", () => {
    const config = decodeConfig(
      {
        smtpTlsPolicyMaps: {
          "[MX.Example.com]:25": "verify match=hostname:.example.com",
          "example.net": "encrypt",
          ".example.org": "none",
        },
      },
      BASE,
    )
    expect(config.smtpTlsPolicyMaps).toEqual({
      "[mx.example.com]:25": { level: "verify", match: ["hostname", ".example.com"] },
      "example.net": { level: "encrypt", match: null },
      ".example.org": { level: "none", match: null },
    })
  })

  test.each<[string, unknown, string, string]>([
    ["unknown level", { smtpTlsSecurityLevel: "secure" }, "smtpTlsSecurityLevel", "expected one of none, may, encrypt, verify"],
    ["bad policy level", { smtpTlsPolicyMaps: { "example.com": "dane" } }, "smtpTlsPolicyMaps", '"dane" is not a TLS security level'],
    ["match on encrypt", { smtpTlsPolicyMaps: { "example.com": "encrypt match=hostname" } }, "smtpTlsPolicyMaps", "match= is only used with the verify level"],
    ["unknown attribute", { smtpTlsPolicyMaps: { "example.com": "verify ciphers=high" } }, "smtpTlsPolicyMaps", 'unknown attribute "ciphers=high"'],
    ["bad key", { smtpTlsPolicyMaps: { "not a host": "may" } }, "smtpTlsPolicyMaps", "expected a nexthop as written in transports"],
    ["service level", { services: { smtp: { smtpTlsSecurityLevel: "maybe" } } }, "services.smtp.smtpTlsSecurityLevel", "expected one of none, may, encrypt, verify"],
  ])("%s", (_what, doc, key, text) => {
    const e = errorOf(doc)
    expect(e.issues.some((i) => i.key.startsWith(key) && i.message.includes(text))).toBe(true)
  })
})

describe("error messages name the key, show the value and say what is allowed", () => {
  test.each<[string, unknown, string, ReadonlyArray<string>]>([
    ["misspelled key", { relayhosts: "[x.example]" }, "relayhosts", ['unknown key; did you mean "relayhost"?']],
    ["Postfix name", { myhostname: "mx.example" }, "myhostname", ['did you mean "hostname"', "Postfix's myhostname"]],
    ["snake_case Postfix name", { message_size_limit: 1 }, "message_size_limit", ['did you mean "messageSizeLimit"']],
    ["unknown key, nothing close", { zzz: 1 }, "zzz", ["unknown key; the keys allowed here are hostname, dataDir, listen"]],
    ["bad CIDR prefix", { mynetworks: ["10.0.0.0/8", "10.0.0.0/33"] }, "mynetworks[1]", ["prefix length", '"10.0.0.0/33"', 'expected a network such as "10.0.0.0/8"']],
    ["CIDR host bits", { mynetworks: ["10.0.0.1/8"] }, "mynetworks[0]", ['did you mean "10.0.0.0/8"?']],
    ["not an IP", { mynetworks: "127.0.0.1 localhost" }, "mynetworks[1]", ['"localhost" is not an IP address']],
    ["bad port", { listen: ["127.0.0.1:2525", "127.0.0.1:99999"] }, "listen[1]", ["port 99999 is out of range", '"127.0.0.1:99999"', '"host:port"']],
    ["missing port", { listen: ["127.0.0.1"] }, "listen[0]", ["the port is missing"]],
    ["unbracketed IPv6", { listen: ["::1:2525"] }, "listen[0]", ['"[::1]:2525"']],
    ["listen entry of the wrong type", { listen: [2525] }, "listen[0]", ['{ address: "host:port", greetWait: duration }', "got 2525"]],
    ["listen object: bad address", { listen: [{ address: "localhost:http" }] }, "listen[0].address", ['port "http" is not a number']],
    ["listen object: bad greetWait", { listen: [{ address: "localhost:25", greetWait: "soon" }] }, "listen[0].greetWait", ['expected a duration such as "300s"', '"soon"']],
    ["listen object: misspelled key", { listen: [{ address: "localhost:25", greetwait: "1s" }] }, "listen[0].greetwait", ['did you mean "greetWait"?']],
    ["listen object: address missing", { listen: [{ greetWait: "1s" }] }, "listen[0].address", ["this key is required"]],
    ["bad duration", { minimalBackoffTime: "5 minutes" }, "minimalBackoffTime", ['expected a duration such as "300s", "5m", "1h", "5d", "1w" or a number of seconds', 'got "5 minutes"']],
    ["negative duration", { smtpdTimeout: -30 }, "smtpdTimeout", ["got -30"]],
    ["zero timeout", { smtpConnectTimeout: "0s" }, "smtpConnectTimeout", ["greater than 0"]],
    ["empty YAML value", { smtpdTimeout: null }, "smtpdTimeout", ["got null", "remove the key to get the default"]],
    ["negative count", { messageSizeLimit: -1 }, "messageSizeLimit", ["expected a whole number ≥ 0, got -1"]],
    ["fractional count", { hopcountLimit: 1.5 }, "hopcountLimit", ["expected a whole number ≥ 1, got 1.5"]],
    ["count as a string", { smtpdRecipientLimit: "many" }, "smtpdRecipientLimit", ['expected a whole number ≥ 1, got "many"']],
    ["zero concurrency", { initialDestinationConcurrency: 0 }, "initialDestinationConcurrency", ["≥ 1, got 0"]],
    ["unknown log level", { logLevel: "verbose" }, "logLevel", ["expected one of trace, debug, info, warn, error, fatal, silent", '"verbose"']],
    ["bad hostname", { hostname: "mail server" }, "hostname", ['"mail server"', "host name"]],
    ["bad relayhost", { relayhost: "10.0.0.5:25" }, "relayhost", ['"[10.0.0.5]:25"', '"[host]:port"']],
    ["bad relay domain", { relayDomains: ["ok.example", "not a domain"] }, "relayDomains[1]", ['"not a domain" is not a domain name']],
    ["unknown service in transports", { transports: { "example.com": "smtps:[mx.example.com]:465" } }, 'transports["example.com"]', ['service "smtps" is not defined', "discard, error, lmtp, relay, smtp", 'define "smtps" under services']],
    ["transport without colon", { transports: { "example.com": "discard" } }, 'transports["example.com"]', ['there is no ":"', '"discard:"']],
    ["bad transport key", { transports: { "not a domain": "discard:" } }, 'transports["not a domain"]', ['invalid key; expected a domain ("example.com")']],
    ["bad smtp next hop", { transports: { "example.com": "relay:[10.0.0.5" } }, 'transports["example.com"]', ['next hop "[10.0.0.5" is invalid']],
    ["bad service type", { services: { bulk: { type: "pipe" } } }, "services.bulk.type", ['expected one of smtp, lmtp, discard, error, got "pipe"']],
    ["new service without a type", { services: { bulk: { destinationConcurrencyLimit: 2 } } }, "services.bulk.type", ["a new service needs a type"]],
    ["misspelled service key", { services: { smtp: { destinationConcurencyLimit: 2 } } }, "services.smtp.destinationConcurencyLimit", ['did you mean "destinationConcurrencyLimit"?']],
    ["maximal < minimal backoff", { minimalBackoffTime: "10m", maximalBackoffTime: "300s" }, "maximalBackoffTime", ["maximalBackoffTime (5m) is less than minimalBackoffTime (10m)", "set maximalBackoffTime to 10m or more"]],
    ["maximal < default minimal", { maximalBackoffTime: "1m" }, "maximalBackoffTime", ["less than minimalBackoffTime (5m)"]],
    ["not a mapping", ["listen"], "", ["must be a mapping of keys to values", "got a list"]],
    ["a scalar document", "hello", "", ["must be a mapping", '"hello"']],
  ])("%s", (_label, doc, key, fragments) => {
    const error = errorOf(doc)
    expect(error.reason).toBe("invalid")
    expect(error.issues).toHaveLength(1)
    const [issue] = error.issues
    expect(issue!.key).toBe(key)
    for (const fragment of fragments) expect(issue!.message).toContain(fragment)
    expect(error.message).toContain(key === "" ? issue!.message : `${key}: ${issue!.message}`)
  })

  test("every problem is reported at once, one line each, in file order", () => {
    const error = errorOf({
      relayhosts: "[x.example]",
      listen: ["127.0.0.1:99999", 25, { address: "[::1]:25", greetwait: "1s" }],
      mynetworks: ["10.0.0.0/33", "10.0.0.0/8"],
      minimalBackoffTime: "10m",
      maximalBackoffTime: "5m",
      transports: { "example.com": "smtps:", "*": "bulk:[10.0.0.1]" },
      services: { bulk: { type: "pipe" } },
      smtpdTimeout: "soon",
    })
    expect(error.issues.map((i) => i.key)).toEqual([
      "relayhosts",
      "listen[0]",
      "listen[1]",
      "listen[2].greetwait",
      "mynetworks[0]",
      "maximalBackoffTime",
      'transports["example.com"]',
      "services.bulk.type",
      "smtpdTimeout",
    ])
    const lines = error.message.split("\n")
    expect(lines[0]).toBe("invalid configuration (9 problems)")
    expect(lines.slice(1)).toEqual(error.issues.map((i) => `  ${i.key}: ${i.message}`))
  })

  test("a bad entry does not hide the checks across keys", () => {
    // bulk's own entry is invalid, yet it exists: no "not defined" for it, while smtps still is reported.
    const error = errorOf({
      services: { bulk: { type: "smtp", destinationConcurrencyLimit: 0 } },
      transports: { "a.example": "bulk:", "b.example": "smtps:", "c.example": "nocolon" },
    })
    expect(error.issues.map((i) => i.key)).toEqual([
      "services.bulk.destinationConcurrencyLimit",
      'transports["c.example"]',
      'transports["b.example"]',
    ])
  })
})

describe("files", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "postern-config-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const write = (name: string, text: string) => {
    const file = path.join(dir, name)
    writeFileSync(file, text)
    return file
  }

  test("loads a file; dataDir is relative to the file's folder", () => {
    const file = write("postern.yaml", "hostname: mx.example.org\ndataDir: spool\nlisten:\n  - 127.0.0.1:2600\n  - address: '[::1]:2600'\n    greetWait: 1s\n")
    const config = loadConfig(file)
    expect(config.hostname).toBe("mx.example.org")
    expect(config.dataDir).toBe(path.join(dir, "spool"))
    expect(config.listen).toEqual([{ host: "127.0.0.1", port: 2600, greetWait: 100 }, { host: "::1", port: 2600, greetWait: 1000 }])
  })

  test("an empty file gives the defaults, dataDir beside it", () => {
    expect(loadConfig(write("empty.yaml", "")).dataDir).toBe(path.join(dir, "postern-data"))
  })

  test("no path: defaults, relative to the current directory", () => {
    expect(loadConfig().dataDir).toBe(path.resolve("postern-data"))
  })

  test("a missing file", () => {
    const file = path.join(dir, "nope.yaml")
    expect(() => loadConfig(file)).toThrow(ConfigError)
    try {
      loadConfig(file)
    } catch (e) {
      const error = e as ConfigError
      expect(error.reason).toBe("file-not-found")
      expect(error.file).toBe(file)
      expect(error.message).toContain(file)
    }
  })

  test("a folder instead of a file", () => {
    try {
      loadConfig(dir)
      expect.unreachable()
    } catch (e) {
      expect((e as ConfigError).reason).toBe("file-unreadable")
    }
  })

  test.each([
    ["unclosed flow list", "listen: [127.0.0.1:2525\nlogLevel: info\n", "line 2, column 1"],
    ["duplicate key", "logLevel: info\nlogLevel: debug\n", "line 2, column 1: Map keys must be unique"],
    ["tab indentation", "services:\n\tbulk: {}\n", "line 2"],
  ])("unreadable YAML: %s → line and column", (_label, text, fragment) => {
    const file = write("bad.yaml", text)
    try {
      loadConfig(file)
      expect.unreachable()
    } catch (e) {
      const error = e as ConfigError
      expect(error.reason).toBe("yaml-syntax")
      expect(error.message).toContain(file)
      expect(error.message).toContain(fragment)
    }
  })

  test("schema errors in a file name the file", () => {
    const file = write("invalid.yaml", "relayhosts: '[x]'\n")
    expect(() => loadConfig(file)).toThrow(`invalid configuration in ${file} (1 problem)\n  relayhosts: unknown key; did you mean "relayhost"?`)
  })

  test("YAML numbers and strings both work for durations", () => {
    expect(parseConfigText("smtpdTimeout: 60\nsmtpHeloTimeout: 2m\n", BASE)).toMatchObject({ smtpdTimeout: 60_000, smtpHeloTimeout: 120_000 })
  })
})

describe("docs/configuration.md", () => {
  const docs = readFileSync(new URL("../../docs/configuration.md", import.meta.url), "utf8")

  test("documents every key", () => {
    for (const key of CONFIG_KEYS) expect(docs).toContain(`| \`${key}\``)
  })

  test("its example postern.yaml is valid and sets every key", () => {
    const example = /```yaml\n([\s\S]*?)```/.exec(docs)?.[1]
    expect(example).toBeDefined()
    const config = parseConfigText(example!, BASE)
    expect(config.logLevel).toBeDefined()
    const written = Object.keys(YAML.parse(example!) as object)
    expect([...written].sort()).toEqual([...CONFIG_KEYS].sort())
  })
})
