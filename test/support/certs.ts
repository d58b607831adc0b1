// Test certificates made with the openssl CLI in a temporary folder: a private CA, a server certificate it
// signs for the names given, and a second CA that signed nothing here (an "unknown CA" for verify tests).
// openssl is installed with apt-get when it is missing (never assumed).
import { execFileSync } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { ensureDebianPackages } from "./apt.js"

export interface TestCertificates {
  /** PEM of the CA that signed `cert`, and its path. */
  readonly caPem: string
  readonly caFile: string
  /** PEM of a CA that signed nothing here, and its path. */
  readonly otherCaFile: string
  readonly key: string
  readonly cert: string
}

const OPENSSL = "/usr/bin/openssl"

const openssl = (dir: string, args: ReadonlyArray<string>): void => {
  execFileSync(OPENSSL, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] })
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

const makeCa = (dir: string, name: string): void =>
  openssl(dir, [
    "req", "-x509", ...EC, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=Postern test ${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ])

/** Makes the CAs and a server certificate for `dnsNames` in `dir`. */
export function makeTestCertificates(dir: string, dnsNames: ReadonlyArray<string>): TestCertificates {
  if (!existsSync(OPENSSL)) ensureDebianPackages(["openssl"], "the TLS tests make their certificates with the openssl CLI")
  makeCa(dir, "ca")
  makeCa(dir, "other-ca")
  openssl(dir, ["req", ...EC, "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${dnsNames[0]}`])
  writeFileSync(
    join(dir, "server.ext"),
    [
      `subjectAltName=${dnsNames.map((n) => `DNS:${n}`).join(",")}`,
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth",
    ].join("\n"),
  )
  openssl(dir, ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext"])
  return {
    caPem: readFileSync(join(dir, "ca.pem"), "utf8"),
    caFile: join(dir, "ca.pem"),
    otherCaFile: join(dir, "other-ca.pem"),
    key: readFileSync(join(dir, "server.key"), "utf8"),
    cert: readFileSync(join(dir, "server.pem"), "utf8"),
  }
}
