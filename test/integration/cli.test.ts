// The postern command as a user runs it: check-config's verdicts and exit codes, and queue list on an
// empty and a non-empty queue (the built JavaScript in dist/, as `npm run build` leaves it).
import { execFileSync, spawnSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { openQueueForWriting } from "../../src/store/open.js"
import { commitMessage } from "../../src/store/queue-store.js"
import { tempDir } from "../support/postern.js"

const CLI = join(import.meta.dirname, "../../dist/cli/main.js")
const run = (args: Array<string>, cwd: string) => spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: "utf8", timeout: 20_000 })

describe("postern check-config", () => {
  test("a valid config is accepted", () => {
    const dir = tempDir()
    writeFileSync(join(dir, "postern.yaml"), "listen: ['127.0.0.1:2600']\nminimalBackoffTime: 10s\n")
    const r = run(["check-config", "--config", "postern.yaml"], dir)
    expect(r.status).toBe(0)
    expect(r.stdout).toContain("config OK")
    expect(r.stdout).toContain("127.0.0.1:2600")
  })

  test("every problem is reported with its key, and the exit code is EX_CONFIG", () => {
    const dir = tempDir()
    writeFileSync(join(dir, "bad.yaml"), "relayhosts: x\nlisten: ['127.0.0.1:99999']\nminimalBackoffTime: soon\n")
    const r = run(["check-config", "--config", "bad.yaml"], dir)
    expect(r.status).toBe(78)
    expect(r.stdout).toBe("")
    expect(r.stderr).toMatch(/relayhosts: unknown key; did you mean "relayhost"\?/)
    expect(r.stderr).toMatch(/listen\[0\]: .*99999/)
    expect(r.stderr).toMatch(/minimalBackoffTime: .*"soon"/)
  })

  test("a missing config file is named", () => {
    const r = run(["check-config", "--config", "nope.yaml"], tempDir())
    expect(r.status).toBe(78)
    expect(r.stderr).toMatch(/nope\.yaml/)
  })

  test("an unknown command prints the usage and exits 64", () => {
    const r = run(["frobnicate"], tempDir())
    expect(r.status).toBe(64)
    expect(r.stderr).toContain("usage:")
  })
})

describe("postern queue list", () => {
  test("an empty queue", () => {
    const dir = tempDir()
    openQueueForWriting(join(dir, "postern-data")).close()
    expect(execFileSync(process.execPath, [CLI, "queue", "list"], { cwd: dir, encoding: "utf8" })).toBe("Mail queue is empty\n")
    expect(execFileSync(process.execPath, [CLI, "queue", "list", "--json"], { cwd: dir, encoding: "utf8" })).toBe("")
  })

  test("--json prints one object per message, with Postfix's fields plus next_attempt_time and attempts", () => {
    const dir = tempDir()
    const q = openQueueForWriting(join(dir, "postern-data"))
    const m = commitMessage(
      q.db,
      {
        queueId: "ABC123",
        arrivalTime: 1_700_000_000_000,
        sender: "alice@a.test",
        mailParams: {},
        client: { address: "127.0.0.1", helo: "x", hostname: "" },
        recipients: [{ address: "bob@b.test", params: {} }],
        size: 42,
      },
      [Buffer.alloc(42)],
      0,
      null,
      false,
      0,
    )
    q.db.prepare("UPDATE recipients SET attempts = 2, next_attempt_at = ?, last_reply = ?, destination = ? WHERE id = ?").run(
      1_700_000_600_000,
      "host b.test said: 451 4.7.1 later",
      "smtp:b.test",
      m.recipients[0]!.id,
    )
    // Postern keeps running: the listing is a second reader on the WAL database.
    const out = execFileSync(process.execPath, [CLI, "queue", "list", "--json"], { cwd: dir, encoding: "utf8" })
    q.close()
    const lines = out.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(JSON.parse(lines[0]!)).toEqual({
      queue_name: "deferred",
      queue_id: "ABC123",
      arrival_time: 1_700_000_000,
      message_size: 42,
      forced_expire: false,
      sender: "alice@a.test",
      recipients: [
        {
          address: "bob@b.test",
          delay_reason: "host b.test said: 451 4.7.1 later",
          next_attempt_time: 1_700_000_600,
          attempts: 2,
          destination: "smtp:b.test",
        },
      ],
    })
  })
})
