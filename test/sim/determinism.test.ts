// Validation (3): determinism. The same scenario, seed and version give a byte-identical run folder
// (CSV, JSON, HTML and the SQLite databases); another seed gives other attempts. Nothing in the folder
// holds an absolute path, the wall-clock date or the host name. `postern simulate` (on its own thread,
// from dist/) writes the same folder as simulate() called here.
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { loadScenario } from "../../src/sim/scenario.js"
import { simulate } from "../../src/sim/simulate.js"

const scenarioFile = join(import.meta.dirname, "../../scenarios/greylisting.yaml")
const root = mkdtempSync(join(tmpdir(), "postern-sim-determinism-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const run = async (name: string, seed: number, db = false) => {
  const outDir = join(root, name)
  await simulate({
    scenario: loadScenario(scenarioFile),
    seed,
    outDir,
    messages: 300,
    ...(db ? { dbDir: join(root, `${name}-db`) } : {}),
  })
  return outDir
}

const files = (dir: string) => readdirSync(dir).sort()

describe("a run folder depends only on the scenario, the seed and the version", () => {
  let a: string
  let b: string
  let c: string
  let other: string
  let cli: string
  let cliResult: ReturnType<typeof spawnSync>
  beforeAll(async () => {
    a = await run("a", 11)
    b = await run("b", 11)
    c = await run("c", 11, true) // on database files instead of memory
    other = await run("other", 12)
    cli = join(root, "cli")
    const main = join(import.meta.dirname, "../../dist/cli/main.js")
    cliResult = spawnSync(process.execPath, [main, "simulate", scenarioFile, "--seed", "11", "--messages", "300", "--out", cli], { encoding: "utf8", timeout: 60_000 })
  }, 120_000)

  test("the same seed twice: byte-identical files", () => {
    expect(files(a)).toEqual(["attempts.csv", "queue-postfix-defaults.sqlite", "queue-pre-2.4-postfix.sqlite", "queue-short-backoff.sqlite", "recipients.csv", "report.html", "summary.json"])
    expect(files(b)).toEqual(files(a))
    for (const f of files(a)) expect(readFileSync(join(b, f)).equals(readFileSync(join(a, f))), f).toBe(true)
  })

  test("the same run on database files gives the same outputs", () => {
    for (const f of files(a)) {
      if (f.endsWith(".sqlite")) continue
      expect(readFileSync(join(c, f)).equals(readFileSync(join(a, f))), f).toBe(true)
    }
  })

  test("postern simulate, on its own thread, writes the same folder and reports its progress", () => {
    expect(cliResult.status, String(cliResult.stderr)).toBe(0)
    expect(cliResult.stderr).toMatch(/postfix-defaults: delivered \d+\/\d+/)
    expect(cliResult.stderr).toMatch(/wrote .*cli\/ \(attempts\.csv/)
    expect(files(cli)).toEqual(files(a))
    for (const f of files(a)) expect(readFileSync(join(cli, f)).equals(readFileSync(join(a, f))), f).toBe(true)
  })

  test("postern simulate: a scenario that does not load is named, with exit code 65, and nothing runs", () => {
    const main = join(import.meta.dirname, "../../dist/cli/main.js")
    const r = spawnSync(process.execPath, [main, "simulate", join(import.meta.dirname, "../../package.json"), "--out", join(root, "bad")], { encoding: "utf8", timeout: 20_000 })
    expect(r.status).toBe(65)
    expect(r.stderr).toMatch(/package\.json/)
  })

  test("another seed: other attempts", () => {
    expect(readFileSync(join(other, "attempts.csv")).equals(readFileSync(join(a, "attempts.csv")))).toBe(false)
  })

  test("no absolute path, wall-clock date or host name in any file", () => {
    const today = new Date().toISOString().slice(0, 10)
    const needles = [root, process.cwd(), today, ...(hostname().length >= 4 ? [hostname()] : [])]
    for (const f of files(a)) {
      const text = readFileSync(join(a, f)).toString("latin1")
      for (const n of needles) expect(text.includes(n), `${f} contains ${n}`).toBe(false)
    }
  })

  test("the attempts in attempts.csv are the production attempts table's rows", async () => {
    const Database = (await import("better-sqlite3")).default
    const db = new Database(join(a, "queue-postfix-defaults.sqlite"), { readonly: true })
    const n = (db.prepare("SELECT count(*) AS n FROM attempts").get() as { n: number }).n
    db.close()
    const lines = readFileSync(join(a, "attempts.csv"), "utf8").trim().split("\n")
    expect(lines[0]).toBe("policy,time_s,message,queue_id,recipient,destination,relay,attempt,outcome,dsn,reply,duration_ms")
    expect(lines.filter((l) => l.startsWith("postfix-defaults,"))).toHaveLength(n)
    expect(n).toBeGreaterThan(400) // greylisted recipients are tried twice
  })
})
