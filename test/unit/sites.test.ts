// Sites and MX roll-up, the pure part: pattern matching, which site a set of MX hosts belongs to, which
// routes are rolled up at all, the queue keys, and the site's limits over the service's. Plus the MX
// roll-up cache over a table resolver (never real DNS).
import { describe, expect, test } from "vitest"
import { MX_CACHE_MS, MxRollup } from "../../src/actors/mx-rollup.js"
import { decodeConfig } from "../../src/config/index.js"
import { ConfigError } from "../../src/config/load.js"
import type { PosternConfig } from "../../src/config/types.js"
import { tableResolver, type ResolverShape } from "../../src/transport/dns.js"
import { resolveRoute } from "../../src/transport/route.js"
import { matchesMxPattern, mxSetKey, rollableNexthop, rollUp, siteKey, siteOf } from "../../src/transport/sites.js"

const config = (over: Record<string, unknown> = {}): PosternConfig => decodeConfig({ hostname: "postern.test", ...over }, "/")

const SITES = {
  outlook: { mx: ["*.mail.protection.outlook.com"], destinationConcurrencyLimit: 10, destinationRateDelay: "1s" },
  google: { mx: ["*.google.com", "aspmx.l.google.com"], initialDestinationConcurrency: 2 },
}

describe("matchesMxPattern", () => {
  test.each([
    ["example-com.mail.protection.outlook.com", "*.mail.protection.outlook.com", true],
    ["a.b.mail.protection.outlook.com", "*.mail.protection.outlook.com", true],
    ["mail.protection.outlook.com", "*.mail.protection.outlook.com", false],
    ["evilmail.protection.outlook.com", "*.mail.protection.outlook.com", false],
    ["aspmx.l.google.com", "aspmx.l.google.com", true],
    ["alt1.aspmx.l.google.com", "aspmx.l.google.com", false],
  ])("%s vs %s → %s", (host, pattern, expected) => {
    expect(matchesMxPattern(host, pattern)).toBe(expected)
  })
})

describe("siteOf", () => {
  const c = config({ sites: SITES })
  test("every MX host must match the site (a backup elsewhere keeps the domain out)", () => {
    expect(siteOf(c, ["alt1.aspmx.l.google.com", "aspmx.l.google.com"])?.[0]).toBe("google")
    expect(siteOf(c, ["example-com.mail.protection.outlook.com"])?.[0]).toBe("outlook")
    expect(siteOf(c, ["aspmx.l.google.com", "backup.example.net"])).toBeUndefined()
    expect(siteOf(c, [])).toBeUndefined()
  })
})

describe("rollableNexthop: which routes are rolled up", () => {
  test("an smtp route to a domain (MX lookup) is; brackets, the relayhost, lmtp, discard and error are not", () => {
    const c = config({
      relayhost: "smarthost.example.net",
      transports: { "lit.test": "smtp:[mx.example.net]:2525", "box.test": "lmtp:box.example.net", "bin.test": "discard:", "mx.test": "smtp:mx.test" },
    })
    expect(rollableNexthop(c, resolveRoute(c, "a@mx.test"))?.host).toBe("mx.test")
    expect(rollableNexthop(c, resolveRoute(c, "a@lit.test"))).toBeUndefined()
    expect(rollableNexthop(c, resolveRoute(c, "a@other.test"))).toBeUndefined() // via the relayhost
    expect(rollableNexthop(c, resolveRoute(c, "a@box.test"))).toBeUndefined()
    expect(rollableNexthop(c, resolveRoute(c, "a@bin.test"))).toBeUndefined()
  })
})

describe("rollUp", () => {
  const c = config({ sites: SITES, services: { smtp: { destinationRecipientLimit: 20, destinationConcurrencyLimit: 30 } } })
  test("a site: its key, and its limits over the service's; the nexthop is unchanged", () => {
    const route = resolveRoute(c, "x@example.com")
    const r = rollUp(c, route, rollableNexthop(c, route)!, ["example-com.mail.protection.outlook.com"])
    expect(r.key).toBe(siteKey("smtp", "outlook"))
    expect(r.key).toBe("smtp:site:outlook")
    expect(r.nexthop).toBe("example.com")
    expect(r.serviceConfig).toMatchObject({ type: "smtp", destinationConcurrencyLimit: 10, destinationRateDelay: 1000, destinationRecipientLimit: 20 })
  })

  test("no site: the MX host set (in any order) is the key, with the port when it is not 25", () => {
    const a = resolveRoute(c, "x@a.test")
    const b = resolveRoute(config({ transports: { "b.test": "smtp:b.test:2526" } }), "x@b.test")
    expect(rollUp(c, a, rollableNexthop(c, a)!, ["mx2.host.test", "mx1.host.test"]).key).toBe("smtp:mx:mx1.host.test,mx2.host.test")
    expect(rollUp(c, b, rollableNexthop(c, b)!, ["mx1.host.test"]).key).toBe("smtp:mx:mx1.host.test:2526")
    expect(mxSetKey("relay", ["b", "a"], 25)).toBe("relay:mx:a,b")
  })
})

describe("MxRollup: the lookup and its cache", () => {
  const now = { t: 1_000_000 }
  const clock = { now: () => now.t, setTimeout: () => 0, clearTimeout: () => undefined } as never
  const counting = (r: ResolverShape) => {
    const calls: Array<string> = []
    return { calls, dns: { ...r, resolveMx: (d: string) => (calls.push(d), r.resolveMx(d)) } }
  }

  test("one lookup per domain while cached; domains with the same MX set get one key; failures keep their own", async () => {
    const c = config()
    const { calls, dns } = counting(
      tableResolver({
        mx: { "a.test": [{ exchange: "MX1.Shared.test.", priority: 10 }], "b.test": [{ exchange: "mx1.shared.test", priority: 5 }], "null.test": [{ exchange: ".", priority: 0 }] },
        addresses: { "nomx.test": ["192.0.2.1"] },
        temporaryFailures: ["down.test"],
      }),
    )
    const rollup = new MxRollup({ dns, clock })
    const key = async (domain: string) => (await rollup.route(c, resolveRoute(c, `x@${domain}`))).key
    expect(await key("a.test")).toBe("smtp:mx:mx1.shared.test")
    expect(await key("b.test")).toBe("smtp:mx:mx1.shared.test")
    expect(await key("nomx.test")).toBe("smtp:mx:nomx.test") // no MX: its own address is its server
    expect(await key("null.test")).toBe("smtp:null.test") // null MX: its own queue (it bounces there)
    expect(await key("down.test")).toBe("smtp:down.test") // a resolver failure: the per-domain key
    expect(await key("gone.test")).toBe("smtp:gone.test") // NXDOMAIN likewise
    // cached: answered at once, without a promise and without a lookup
    const again = rollup.route(c, resolveRoute(c, "y@a.test"))
    expect(again).not.toBeInstanceOf(Promise)
    expect(calls.filter((d) => d === "a.test")).toHaveLength(1)
    expect(rollup.peek(c, resolveRoute(c, "y@b.test"))).toBe("smtp:mx:mx1.shared.test")
    now.t += MX_CACHE_MS + 1
    expect(rollup.route(c, resolveRoute(c, "y@a.test"))).toBeInstanceOf(Promise)
  })

  test("lookups in flight are shared", async () => {
    const c = config()
    const { calls, dns } = counting(tableResolver({ mx: { "a.test": [{ exchange: "mx.a.test", priority: 10 }] } }))
    const rollup = new MxRollup({ dns, clock })
    await Promise.all([rollup.route(c, resolveRoute(c, "x@a.test")), rollup.route(c, resolveRoute(c, "y@a.test"))])
    expect(calls).toEqual(["a.test"])
  })
})

describe("the sites key", () => {
  test("decodes patterns lowercased, limits as under services", () => {
    const c = config({ sites: { MS: { mx: "*.Mail.Protection.Outlook.com, mx.example.net", destinationRateDelay: "2s" } } })
    expect(c.sites).toEqual({ MS: { mx: ["*.mail.protection.outlook.com", "mx.example.net"], destinationRateDelay: 2000 } })
  })

  const problems = (sites: unknown): Array<string> => {
    try {
      config({ sites })
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError)
      return (e as ConfigError).issues.map((i) => `${i.key}: ${i.message}`)
    }
    throw new Error("expected the sites to be rejected")
  }

  test("a bad pattern, an unknown key, a missing mx and a pattern in two sites are each named", () => {
    const found = problems({
      a: { mx: ["mx.*.example.com"] },
      b: { mx: ["*.x.test"], concurrency: 3 },
      c: { destinationConcurrencyLimit: 2 },
      d: { mx: ["*.x.test"] },
    })
    expect(found.join("\n")).toMatch(/sites\.a\.mx\[0\]: .*"mx\.\*\.example\.com".*leading "\*\."/)
    expect(found.join("\n")).toMatch(/sites\.b\.concurrency: /)
    expect(found.join("\n")).toMatch(/sites\.c\.mx: /)
    expect(found.join("\n")).toMatch(/sites\.d\.mx: MX pattern "\*\.x\.test" is already in site "b"/)
  })
})
