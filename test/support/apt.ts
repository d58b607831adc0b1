// Installs Debian packages a test needs (openssl, dovecot) with apt-get when they are missing: as root,
// non-interactive, waiting for the dpkg lock rather than failing on it. Tests call this once in their setup;
// `.ci/run` installs the same packages up front.
import { execFileSync } from "node:child_process"
import { existsSync } from "node:fs"

/** Why these packages cannot be installed here, or null when apt-get can (root, and apt-get exists). */
export const cannotInstall = (): string | null => {
  if (!existsSync("/usr/bin/apt-get")) return "apt-get is not available (not a Debian-like system)"
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "not running as root, so apt-get cannot install packages"
  return null
}

const aptGet = (args: ReadonlyArray<string>): void => {
  execFileSync("/usr/bin/apt-get", ["-o", "DPkg::Lock::Timeout=300", ...args], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    stdio: ["ignore", "ignore", "pipe"],
    timeout: 600_000,
  })
}

/** Installs `packages`; throws with `why` and the reason when that is impossible or fails. */
export function ensureDebianPackages(packages: ReadonlyArray<string>, why: string): void {
  const impossible = cannotInstall()
  if (impossible !== null) throw new Error(`${why}, and ${packages.join(" ")} cannot be installed: ${impossible}`)
  try {
    aptGet(["install", "-y", "--no-install-recommends", ...packages])
  } catch {
    // stale package lists (a fresh container): refresh them once and try again
    aptGet(["update"])
    aptGet(["install", "-y", "--no-install-recommends", ...packages])
  }
}
