// TLS policy (Postfix's smtp_tls_security_level + smtp_tls_policy_maps) and the certificate name match, as
// tables: which level a delivery gets, which names its certificate must carry, and whether a certificate does.
import type { PeerCertificate } from "node:tls"
import { describe, expect, test } from "vitest"
import { decodeConfig } from "../../src/config/index.js"
import type { ServiceConfig } from "../../src/config/types.js"
import { certificateNames, matchesExpectedName } from "../../src/transport/tls-check.js"
import { expectedNames, lookupTlsPolicy, parseTlsPolicy, tlsPolicyFor } from "../../src/transport/tls-policy.js"

const config = decodeConfig(
  {
    smtpTlsSecurityLevel: "may",
    smtpTlsPolicyMaps: {
      "[mx.example.com]:25": "verify",
      "example.com": "encrypt",
      ".example.org": "verify match=nexthop:dot-nexthop",
      "plain.example.org": "none",
    },
  },
  "/srv",
)
const smtp: ServiceConfig = { type: "smtp" }

describe("smtp_tls_policy_maps lookup", () => {
  test.each([
    ["[mx.example.com]:25", "verify"],
    ["[MX.example.com]:25", "verify"],
    ["[mx.example.com]", "may"], // the nexthop as written: no brackets-and-port stripping
    ["example.com", "encrypt"],
    ["sub.example.com", "may"], // "example.com" is not ".example.com": no parent match
    ["example.org", "may"], // ".example.org" is for subdomains only
    ["a.example.org", "verify"],
    ["b.a.example.org", "verify"],
    ["plain.example.org", "none"], // exact before parent
    ["x.plain.example.org", "verify"], // parents are tried from the nearest: .plain.example.org, then .example.org
    ["[a.example.org]:25", "may"], // a bracketed nexthop is looked up once, exactly
    ["a.example.org:2525", "may"],
  ])("%s → %s", (nexthop, level) => {
    expect(tlsPolicyFor(config, smtp, nexthop).level).toBe(level)
  })

  test("a service's own level applies where the map has nothing; the map still wins", () => {
    const bulk: ServiceConfig = { type: "smtp", smtpTlsSecurityLevel: "none" }
    expect(tlsPolicyFor(config, bulk, "other.test").level).toBe("none")
    expect(tlsPolicyFor(config, bulk, "example.com").level).toBe("encrypt")
  })

  test("LMTP services default to none and do not read the SMTP policy map (lmtp_tls_* are separate in Postfix)", () => {
    expect(tlsPolicyFor(config, { type: "lmtp" }, "example.com")).toEqual({ level: "none", match: null })
    expect(tlsPolicyFor(config, { type: "lmtp", smtpTlsSecurityLevel: "encrypt" }, "unix:/run/lmtp").level).toBe("encrypt")
  })

  test("no entry: undefined", () => {
    expect(lookupTlsPolicy({}, "example.com")).toBeUndefined()
  })
})

describe("policy values", () => {
  test.each([
    ["verify", { level: "verify", match: null }],
    ["  Encrypt ", { level: "encrypt", match: null }],
    ["verify match=hostname:nexthop", { level: "verify", match: ["hostname", "nexthop"] }],
    ["verify match=.example.com", { level: "verify", match: [".example.com"] }],
  ] as const)("%j", (text, value) => {
    expect(parseTlsPolicy(text)).toEqual({ ok: true, value })
  })

  test.each(["", "secure", "dane", "may match=hostname", "verify match=", "verify match=bad_name", "verify protocols=TLSv1.3"])("rejects %j", (text) => {
    expect(parseTlsPolicy(text).ok).toBe(false)
  })
})

describe("names a verified certificate must carry", () => {
  test.each([
    [null, ["mx1.example.net"]],
    [["hostname"], ["mx1.example.net"]],
    [["nexthop", "dot-nexthop"], ["example.net", ".example.net"]],
    [["hostname", "mail.example.org", ".example.org"], ["mx1.example.net", "mail.example.org", ".example.org"]],
  ] as const)("match=%j", (match, names) => {
    expect(expectedNames({ level: "verify", match }, "mx1.example.net", "example.net")).toEqual(names)
  })
})

describe("certificate name match", () => {
  const cert = (subjectaltname: string | undefined, cn = "ignored.example"): PeerCertificate =>
    ({ subject: { CN: cn }, ...(subjectaltname !== undefined ? { subjectaltname } : {}) }) as unknown as PeerCertificate

  test.each([
    ["DNS:mx.example.com", ["mx.example.com"], true],
    ["DNS:mx.example.com", ["MX.example.com".toLowerCase()], true],
    ["DNS:mx.example.com", ["other.example.com"], false],
    ["DNS:*.example.com", ["mx.example.com"], true],
    ["DNS:*.example.com", ["a.b.example.com"], false], // a wildcard covers one label
    ["DNS:mx.example.com", [".example.com"], true],
    ["DNS:*.example.com", [".example.com"], true],
    ["DNS:example.com", [".example.com"], false], // .example.com is for names under it
    ["DNS:mx.example.com, DNS:mx.example.net", ["nope.test", "mx.example.net"], true],
    ["IP Address:127.0.0.1", ["127.0.0.1"], true],
  ] as const)("%s against %j → %s", (san, expected, ok) => {
    expect(matchesExpectedName(cert(san), expected)).toBe(ok)
  })

  test("without subjectAltName the CN is the name", () => {
    expect(certificateNames(cert(undefined, "Mx.Example.com"))).toEqual(["mx.example.com"])
    expect(matchesExpectedName(cert(undefined, "mx.example.com"), ["mx.example.com"])).toBe(true)
  })
})
