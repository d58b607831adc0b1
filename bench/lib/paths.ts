// Where things are: the repository, the built CLI, the peers' scripts (../shared/peers, or $PEERS_DIR),
// Haraka's install folder, and the harness's own scratch folders under the system temp directory.
import { existsSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
export const BENCH = join(REPO, "bench")
export const POSTERN_CLI = join(REPO, "dist/cli/main.js")
export const PEERS_DIR = resolve(process.env["PEERS_DIR"] ?? join(REPO, "../shared/peers"))
export const peerScript = (name: string): string => join(PEERS_DIR, name)

/** Haraka as installed by install-haraka.sh (the default $PEERS_TMP/haraka of the peers' scripts). */
export const HARAKA_DIR = resolve(process.env["HARAKA_DIR"] ?? "/tmp/peers/haraka")

/** Our own $PEERS_TMP for haraka-relay.sh: its pid file and run folder never collide with anyone's. */
export const BENCH_PEERS_TMP = join(tmpdir(), `postern-bench-peers-${process.pid}`)

/** Scratch space for Postern's data folders and seeded queues. */
export const SCRATCH = join(tmpdir(), `postern-bench-${process.pid}`)

export const harakaVersion = (): string | null => {
  const pkg = join(HARAKA_DIR, "node_modules/Haraka/package.json")
  if (!existsSync(pkg)) return null
  try {
    return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version
  } catch {
    return null
  }
}

export const harakaInstalled = (): boolean => existsSync(join(HARAKA_DIR, "node_modules/.bin/haraka"))
