// A private Dovecot LMTP server for tests, the real peer Postern's lmtp service must work with. Dovecot
// (Debian's dovecot-core + dovecot-lmtpd) is installed with apt-get when missing. Each instance lives in its
// own temporary folder: its config (written here, no /etc/dovecot), base_dir, state_dir and log, a
// passwd-file of users, Maildirs, and an LMTP listener on a UNIX socket and one on 127.0.0.1. Only LMTP
// runs (no IMAP/POP3), ssl = no. It is started as a child process in the foreground (`dovecot -F`), so the
// PID we hold is the master's, and stopped by that PID.
import { spawn, type ChildProcess } from "node:child_process"
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"
import { cannotInstall, ensureDebianPackages } from "./apt.js"

const DOVECOT = "/usr/sbin/dovecot"
const LMTP_AGENT = "/usr/lib/dovecot/lmtp"
/** The mail user the Maildirs belong to (Dovecot will not deliver as root). */
const NOBODY = { uid: 65534, gid: 65534 }

/**
 * Makes sure Dovecot's LMTP server is installed; returns why the Dovecot tests cannot run here, or null.
 * They need root (to install, and for Dovecot to switch to the mail user); CI and this machine have it.
 */
export function ensureDovecot(): string | null {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return "the Dovecot LMTP tests need root: to install dovecot-core and dovecot-lmtpd with apt-get, and for Dovecot to deliver as the mail user"
  }
  if (existsSync(DOVECOT) && existsSync(LMTP_AGENT)) return null
  const impossible = cannotInstall()
  if (impossible !== null) return `Dovecot is not installed and cannot be: ${impossible}`
  ensureDebianPackages(["dovecot-core", "dovecot-lmtpd"], "the LMTP tests deliver to Dovecot's LMTP server")
  return null
}

export interface Dovecot {
  readonly pid: number
  /** The LMTP UNIX socket. */
  readonly socketPath: string
  /** The LMTP TCP port on 127.0.0.1. */
  readonly port: number
  /** Files in a user's Maildir/new (delivered, unread), as text. */
  newMail(user: string): ReadonlyArray<string>
  /** Dovecot's own log. */
  log(): string
  stop(): Promise<void>
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Starts a private Dovecot in `dir` (an empty temporary folder) with these users (full addresses). */
export async function startDovecot(dir: string, users: ReadonlyArray<string>): Promise<Dovecot> {
  const port = await freePort()
  const socketPath = join(dir, "lmtp.sock")
  const mailRoot = join(dir, "mail")
  const logPath = join(dir, "dovecot.log")
  const conf = join(dir, "dovecot.conf")
  // Dovecot's auth process (user dovecot) reads the passwd-file, the mail user (nobody) writes the Maildirs
  chmodSync(dir, 0o755)
  mkdirSync(mailRoot)
  chownSync(mailRoot, NOBODY.uid, NOBODY.gid)
  writeFileSync(join(dir, "users"), users.map((u) => `${u}:{PLAIN}unused:::::\n`).join(""), { mode: 0o644 })
  writeFileSync(
    conf,
    `# written by test/support/dovecot.ts
instance_name = postern-test-${port}
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${logPath}
info_log_path = ${logPath}
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:${mailRoot}/%d/%n/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = ${dir}/users
}
userdb {
  driver = passwd-file
  args = ${dir}/users
  default_fields = uid=${NOBODY.uid} gid=${NOBODY.gid} home=${mailRoot}/%d/%n
}
service lmtp {
  unix_listener ${socketPath} {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${port}
  }
}
`,
  )
  const child: ChildProcess = spawn(DOVECOT, ["-F", "-c", conf], { stdio: ["ignore", "ignore", "pipe"] })
  let stderr = ""
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const log = (): string => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "")

  const deadline = Date.now() + 20_000
  while (!existsSync(socketPath) || !log().includes("starting up")) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`dovecot did not start (exit ${child.exitCode}): ${stderr}\n${log()}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    pid: child.pid!,
    socketPath,
    port,
    newMail: (user) => {
      const [local, domain] = user.split("@") as [string, string]
      const folder = join(mailRoot, domain, local, "Maildir", "new")
      return existsSync(folder) ? readdirSync(folder).map((f) => readFileSync(join(folder, f), "utf8")) : []
    },
    log,
    stop: async () => {
      if (child.exitCode !== null) return
      process.kill(child.pid!, "SIGTERM")
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))])
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL")
    },
  }
}
