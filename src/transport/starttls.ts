// STARTTLS for one outbound session at one TLS level, as Postfix's smtp client decides it: the nodemailer
// options that ask for it, which setup failures are TLS's (and whether `may` may retry them in plaintext),
// and, once EHLO is done, whether the session may carry mail at this level and as what (Postfix's
// "Verified/Trusted/Untrusted TLS connection"). No I/O of its own.
import type { ConnectionOptions, PeerCertificate, TLSSocket } from "node:tls"
import { describeTarget, type Target } from "./mx.js"
import type { TlsLevel } from "../config/types.js"
import { oneLine, type AttemptResult } from "./smtp-outcome.js"
import { certificateNames, describeChainError, matchesExpectedName, type TlsInfo } from "./tls-check.js"

/** What TLS a session must (or may) have: the level, and for verify the names and the trusted CAs. */
export interface SessionTls {
  readonly level: TlsLevel
  /** verify: the certificate must carry one of these (host names, or `.domain` for its subdomains). */
  readonly expectedNames: ReadonlyArray<string>
  /** PEM CAs trusted at verify (smtpTlsCaFile); null = Node's bundled Mozilla roots. */
  readonly ca: string | null
}

export interface StartTls {
  /** The TLS part of nodemailer's SMTPConnection options. */
  readonly connectionOptions: {
    readonly host: string
    readonly servername?: string
    readonly ignoreTLS: boolean
    readonly opportunisticTLS: boolean
    readonly tls: ConnectionOptions
  }
  /** A setup failure that is TLS's (STARTTLS refused, handshake failed), or null when it is something else. */
  failure(e: { readonly code?: string | undefined; readonly response?: string | undefined }, upgrading: boolean, detail: string): AttemptResult | null
  /** After EHLO: the session's TLS (null in plaintext), or why the session cannot be used at this level. */
  judge(tlsSocket: TLSSocket | null): { readonly ok: true; readonly info: TlsInfo | null } | { readonly ok: false; readonly result: AttemptResult }
}

const isIpLiteral = (host: string): boolean => /^[\d.]+$/.test(host) || host.includes(":")

export const startTls = (tls: SessionTls, target: Target): StartTls => {
  const relay = describeTarget(target)
  // At verify the certificate's names are checked against the policy's (not just the host we dialled);
  // the mismatch is remembered to say why, node keeps only a code.
  let nameMismatch: string | null = null
  const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
    if (matchesExpectedName(cert, tls.expectedNames)) return undefined
    nameMismatch = `certificate names (${certificateNames(cert).join(", ") || "none"}) do not match ${tls.expectedNames.join(" or ")}`
    return Object.assign(new Error(nameMismatch), { code: "ERR_TLS_CERT_ALTNAME_INVALID" })
  }
  return {
    connectionOptions: {
      // the server's name: SNI and the default certificate name check (never an IP address as SNI)
      host: target.hostname,
      ...(target.socketPath === undefined && !isIpLiteral(target.hostname) ? { servername: target.hostname } : {}),
      // none: never STARTTLS; may: STARTTLS when offered, and a refused STARTTLS goes on in plaintext;
      // encrypt/verify: STARTTLS when offered, and no session at all without it (judge, below).
      ignoreTLS: tls.level === "none",
      opportunisticTLS: tls.level === "may",
      tls: {
        // the chain is judged below (verify) or only reported (may, encrypt), never a reason to drop mid-handshake
        rejectUnauthorized: false,
        ...(tls.level === "verify" ? { checkServerIdentity } : {}),
        ...(tls.level === "verify" && tls.ca !== null ? { ca: tls.ca } : {}),
      },
    },
    failure: (e, upgrading, detail) => {
      // nodemailer: ETLS with the server's reply = STARTTLS refused (only encrypt/verify get here);
      // ETLS without one, or any error while the socket is being upgraded = the handshake failed
      if (e.code === "ETLS" && e.response !== undefined) {
        return { stage: "tls", dsn: "4.7.5", reason: `TLS is required, but host ${relay} refused to start TLS: ${oneLine(e.response)}`, handshake: false }
      }
      if (e.code === "ETLS" || upgrading) {
        return { stage: "tls", dsn: "4.7.5", reason: `Cannot start TLS: handshake failure with ${relay}: ${detail}`, handshake: true }
      }
      return null
    },
    judge: (tlsSocket) => {
      if (tlsSocket === null) {
        if (tls.level === "encrypt" || tls.level === "verify") {
          return { ok: false, result: { stage: "tls", dsn: "4.7.4", reason: `TLS is required, but was not offered by host ${relay}`, handshake: false } }
        }
        return { ok: true, info: null }
      }
      if (tls.level === "verify" && !tlsSocket.authorized) {
        const why = nameMismatch ?? describeChainError(String(tlsSocket.authorizationError))
        return { ok: false, result: { stage: "tls", dsn: "4.7.5", reason: `Server certificate not verified: ${relay}: ${why}`, handshake: false } }
      }
      const info: TlsInfo = {
        protocol: tlsSocket.getProtocol() ?? "TLS",
        cipher: tlsSocket.getCipher()?.name ?? "unknown",
        trust: tls.level === "verify" ? "Verified" : tlsSocket.authorized ? "Trusted" : "Untrusted",
      }
      return { ok: true, info }
    },
  }
}
