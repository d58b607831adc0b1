// Certificate checks for outbound TLS at the `verify` level: does the server's certificate carry one of
// the expected names (RFC 6125 wildcards via node's tls.checkServerIdentity; `.example.com` = any
// subdomain, as Postfix's match= writes it), and a readable reason when it does not or its chain fails.
import { readFileSync } from "node:fs"
import { checkServerIdentity, type PeerCertificate } from "node:tls"

/** What one session's TLS turned out to be, for logs (Postfix's "Verified/Trusted/Untrusted TLS connection"). */
export interface TlsInfo {
  readonly protocol: string
  readonly cipher: string
  /** Verified: chain and name checked; Trusted: chain (and default name) ok; Untrusted: not checked or failed. */
  readonly trust: "Verified" | "Trusted" | "Untrusted"
}

/** The names a certificate is for: its DNS and IP subjectAltNames, else its subject CN. */
export const certificateNames = (cert: PeerCertificate): ReadonlyArray<string> => {
  const alt = (cert.subjectaltname ?? "")
    .split(/,\s*/)
    .map((entry) => /^(?:DNS|IP Address):(.+)$/.exec(entry.trim())?.[1]?.toLowerCase())
    .filter((n): n is string => n !== undefined)
  if (alt.length > 0) return alt
  const cn = cert.subject?.CN
  return cn === undefined ? [] : (Array.isArray(cn) ? cn : [cn]).map((n) => String(n).toLowerCase())
}

/** Does the certificate match one of `expected` (exact host names with wildcard rules, or `.domain`)? */
export const matchesExpectedName = (cert: PeerCertificate, expected: ReadonlyArray<string>): boolean =>
  expected.some((name) => {
    if (!name.startsWith(".")) return checkServerIdentity(name, cert) === undefined
    // `.example.com`: any name under example.com; a wildcard `*.x.example.com` is under it too
    return certificateNames(cert).some((n) => (n.startsWith("*.") ? n.slice(1) : n).endsWith(name))
  })

const CHAIN_ERRORS: Readonly<Record<string, string>> = {
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "untrusted issuer",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "untrusted issuer",
  SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in the chain",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
  CERT_HAS_EXPIRED: "certificate has expired",
  CERT_NOT_YET_VALID: "certificate is not yet valid",
}

/** Why a chain did not verify, from node's authorizationError code. */
export const describeChainError = (code: string): string => {
  const text = CHAIN_ERRORS[code]
  return text === undefined ? code : `${text} (${code})`
}

const caCache = new Map<string, string>()

/** The PEM text of smtpTlsCaFile, read once per path; throws with the file's error when unreadable. */
export const readCaFile = (path: string): string => {
  let pem = caCache.get(path)
  if (pem === undefined) {
    pem = readFileSync(path, "utf8")
    caCache.set(path, pem)
  }
  return pem
}
