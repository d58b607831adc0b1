// A dead destination as an operator sees and fixes it: `postern queue list --json` says why mail waits
// (the destination is dead until a time), and `postern queue flush` clears the dead mark and makes the
// deferred mail due at once, instead of after minimalBackoffTime (Postfix's postqueue -f / -s).
import { execFile, execFileSync } from "node:child_process"
import { promisify } from "node:util"
import { join } from "node:path"
import { afterEach, expect, test } from "vitest"
import { startBadServer, type BadServer } from "../support/bad-server.js"
import { inject, makeMessage } from "../support/inject.js"
import { startPostern, waitFor, type TestPostern } from "../support/postern.js"
import { writeFileSync } from "node:fs"

const CLI = join(import.meta.dirname, "../../dist/cli/main.js")
let postern: TestPostern | undefined
let server: BadServer | undefined
afterEach(async () => {
  await postern?.close()
  await server?.close()
})

/** Runs the CLI asynchronously: Postern runs in this process and must stay free to answer it. */
const cli = async (p: TestPostern, ...args: Array<string>): Promise<{ stdout: string; stderr: string }> => {
  const config = join(p.dataDir, "cli.yaml")
  writeFileSync(config, `dataDir: ${JSON.stringify(p.dataDir)}\n`)
  return promisify(execFile)(process.execPath, [CLI, ...args, "--config", config], { encoding: "utf8", timeout: 20_000 })
}

test("a dead destination shows in queue list; queue flush revives it and its mail goes at once", async () => {
  server = await startBadServer("refuse")
  postern = await startPostern({
    transports: { "dead.test": `smtp:[127.0.0.1]:${server.port}` },
    minimalBackoffTime: "10m", // without a flush nothing would be tried again during this test
    maximalBackoffTime: "10m",
  })
  const p = postern
  for (let i = 0; i < 5; i++) {
    const r = await inject(p.port, { from: "a@s.test", to: [`r${i}@dead.test`], body: makeMessage({ from: "a@s.test", to: `r${i}@dead.test` }) })
    expect(r.ok).toBe(true)
  }
  const deferredCount = () => (p.queue.db.prepare("SELECT count(*) AS n FROM recipients WHERE state = 'pending' AND attempts > 0").get() as { n: number }).n
  await waitFor("5 deferred recipients", () => deferredCount() === 5)
  const key = `smtp:[127.0.0.1]:${server.port}`
  expect(p.system.qmgr.destinationStates().find((d) => d.key === key)?.state).toBe("dead")

  const listed = (await cli(p, "queue", "list", "--json")).stdout.trim().split("\n").map((l) => JSON.parse(l) as { recipients: Array<Record<string, unknown>> })
  expect(listed).toHaveLength(5)
  for (const m of listed) {
    expect(m.recipients[0]).toMatchObject({ destination: key, attempts: 1 })
    expect(String(m.recipients[0]!["destination_state"])).toMatch(/^dead until \d{4}-\d\d-\d\dT/)
    expect(String(m.recipients[0]!["delay_reason"])).toMatch(/Connection refused|delivery temporarily suspended/)
  }

  await server.setMode("ok")
  const flushed = await cli(p, "queue", "flush", "--destination", "dead.test")
  expect(flushed.stdout).toBe("") // data commands write only data on stdout; the report goes to stderr
  expect(flushed.stderr).toMatch(/5 recipients due now/)
  await waitFor("the 5 messages to arrive after the flush", () => server!.messages.length === 5, 10_000)
  await waitFor("the queue to empty", () => (p.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
  expect(p.system.qmgr.destinationStates().find((d) => d.key === key)?.state ?? "active").toBe("active")
})

test("queue flush with no Postern running makes the mail due at the next start", async () => {
  postern = await startPostern({ transports: { "*": "smtp:[127.0.0.1]:1" }, minimalBackoffTime: "10m", maximalBackoffTime: "10m" })
  const p = postern
  expect((await inject(p.port, { from: "a@s.test", to: ["x@y.test"], body: makeMessage({ from: "a@s.test", to: "x@y.test" }) })).ok).toBe(true)
  await waitFor("a deferral", () => (p.queue.db.prepare("SELECT count(*) AS n FROM recipients WHERE attempts > 0 AND state = 'pending'").get() as { n: number }).n === 1)
  const dataDir = p.dataDir
  writeFileSync(join(dataDir, "cli.yaml"), `dataDir: ${JSON.stringify(dataDir)}\n`)
  await p.system.stop(1000)
  p.queue.close()
  const out = execFileSync(process.execPath, [CLI, "queue", "flush", "--config", join(dataDir, "cli.yaml")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
  expect(out).toBe("")
  const { openQueueForReading } = await import("../../src/store/open.js")
  const db = openQueueForReading(dataDir)
  const row = db.prepare("SELECT next_attempt_at AS at FROM recipients").get() as { at: number }
  db.close()
  expect(row.at).toBeLessThanOrEqual(Date.now())
  postern = undefined
})
