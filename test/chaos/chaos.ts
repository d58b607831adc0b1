// Torture test: Postern (the built CLI, a child process) under continuous load, killed with SIGKILL at
// seeded random moments and restarted on the same data folder each time, delivering to three destinations
// side by side: a healthy receiver, a flaky one (451 to ~30% of RCPTs, decided per recipient and attempt)
// and a hanging one (accepts the connection, never greets; switched to `ok` after the last kill).
//
//   npm run test:chaos -- [--seed N] [--kills 20] [--clients 6] [--pause-ms 10] [--drain-s 90] [--keep]
//
// After the last restart the load stops and the driver waits (bounded) until every acknowledged message is
// delivered and the queue is empty, then prints ONE summary line on stdout:
//
//   chaos: seed=N kills=20 acknowledged=A delivered=D lost=L duplicates=X (in flight at kills ≤ K) stuck=S
//
// and exits 1 on any loss, on duplicates beyond K, on anything left in the queue, or on an anomaly (Postern
// exiting by itself, failing to restart, a mis-addressed delivery). Progress and details go to stderr; on
// failure the run folder (data folder, every incarnation's log, evidence.json) is kept and named.
// See docs/chaos-and-soak.md for how K is counted and why it is a sound bound.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startBadServer, type BadServer } from "../support/bad-server.js"
import { freePort } from "../support/child.js"
import { startReceiver, type Receiver } from "../support/receiver.js"
import { checkKnown, numberArg, parseArgs, sleep } from "./lib/args.js"
import { grepLogs, severeLines } from "./lib/evidence.js"
import { Ledger, badServerSink, receiverSink } from "./lib/ledger.js"
import { missingOf, waitForDrain } from "./lib/drain.js"
import { Load } from "./lib/load.js"
import { chaosConfig, killStartedPosterns, startPostern, writeConfigFile, type Incarnation } from "./lib/postern.js"
import { attemptsOf, queueCounts, queueRows, queuedAddresses } from "./lib/queue-db.js"
import { between, mulberry32, unitHash } from "./lib/rng.js"

const args = parseArgs(process.argv.slice(2))
checkKnown(args, ["seed", "kills", "clients", "pause-ms", "drain-s", "min-gap-ms", "max-gap-ms", "budget-s", "keep"])
const SEED = numberArg(args, "seed", 1)
const KILLS = numberArg(args, "kills", 20)
const CLIENTS = numberArg(args, "clients", 6)
const PAUSE_MS = numberArg(args, "pause-ms", 10)
const DRAIN_S = numberArg(args, "drain-s", 90)
const MIN_GAP_MS = numberArg(args, "min-gap-ms", 300)
const MAX_GAP_MS = numberArg(args, "max-gap-ms", 2500)
/** the whole run is abandoned (as a failure) past this */
const BUDGET_S = numberArg(args, "budget-s", 290)
const KEEP = args.get("keep") === "true"
/** share of RCPTs the flaky receiver answers 451 */
const FLAKY_RATE = 0.3

const t0 = Date.now()
const el = (): string => `${((Date.now() - t0) / 1000).toFixed(1)}s`
const say = (s: string): void => void process.stderr.write(`[chaos ${el()}] ${s}\n`)

interface KillRecord {
  k: number
  at_s: number
  pid: number
  uptime_ms: number
  acked_so_far: number
  /** acknowledged recipients not yet seen at a receiver just before the kill (the naive count) */
  acked_undelivered: number
  /** recipients durable in the queue at the kill (read after the process is gone) */
  queued_at_kill: number
  /** of those, already received somewhere before the restart: each will be delivered again */
  at_risk: number
  down_ms: number
  restart_ms: number
}

const anomalies: Array<string> = []
const kills: Array<KillRecord> = []
/** address → how many kills it was at risk in (each with a new copy since the previous one) */
const atRiskCount = new Map<string, number>()
/** address → its number of copies when it was last counted at risk */
const riskCopies = new Map<string, number>()
const runDir = mkdtempSync(join(tmpdir(), `postern-chaos-s${SEED}-`))
const dataDir = join(runDir, "data")
let finished = false

let ok: Receiver | undefined
let flaky: Receiver | undefined
let hang: BadServer | undefined
let child: Incarnation | undefined
let load: Load | undefined
let ledger: Ledger | undefined

const writeEvidence = (extra: Record<string, unknown>): string => {
  const file = join(runDir, "evidence.json")
  let queue: unknown
  try {
    queue = queueRows(dataDir)
  } catch (e) {
    queue = `unreadable: ${(e as Error).message}`
  }
  writeFileSync(
    file,
    `${JSON.stringify({ seed: SEED, kills, anomalies, queue_now: queue, ...extra }, null, 2)}\n`,
  )
  return file
}

const shutdown = async (): Promise<void> => {
  killStartedPosterns()
  await Promise.allSettled([ok?.close(), flaky?.close(), hang?.close()])
}

// A hard bound on the whole run: whatever hangs, the driver ends, as a failure, with its evidence.
const budget = setTimeout(() => {
  if (finished) return
  finished = true
  say(`BUDGET of ${BUDGET_S} s exceeded: abandoning the run`)
  ledger?.collect()
  const missing = load !== undefined && ledger !== undefined ? [...load.ackedAddresses.keys()].filter((a) => !ledger!.has(a)) : []
  const file = writeEvidence({ reason: "budget exceeded", missing: missing.slice(0, 500) })
  process.stdout.write(`chaos: seed=${SEED} kills=${kills.length} TIMEOUT after ${BUDGET_S} s (evidence: ${file})\n`)
  killStartedPosterns()
  process.exit(1)
}, BUDGET_S * 1000)
budget.unref()

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    say(`${sig}: stopping (run folder kept: ${runDir})`)
    killStartedPosterns()
    process.exit(130)
  })
}

const main = async (): Promise<number> => {
  say(`seed ${SEED}, ${KILLS} kills ${MIN_GAP_MS}–${MAX_GAP_MS} ms apart, ${CLIENTS} clients; run folder ${runDir}`)
  ok = await startReceiver()
  flaky = await startReceiver({
    rcpt: (address, attempt) =>
      unitHash(SEED, "flaky", address.toLowerCase(), attempt) < FLAKY_RATE ? { code: 451, message: "4.7.1 flaky: try again later" } : undefined,
  })
  hang = await startBadServer("hangAfterConnect")
  ledger = new Ledger([receiverSink("ok", ok), receiverSink("flaky", flaky), badServerSink("hang", hang)])
  const led = ledger

  const port = await freePort()
  const configFile = writeConfigFile(join(runDir, "postern.yaml"), chaosConfig(dataDir, port, { ok: ok.port, flaky: flaky.port, hang: hang.port }))
  let incarnations = 0
  const start = async (): Promise<Incarnation> => {
    for (let attempt = 1; ; attempt++) {
      const n = incarnations++
      try {
        return await startPostern({ configFile, logFile: join(runDir, `postern-${String(n).padStart(2, "0")}.log`), n })
      } catch (e) {
        anomalies.push(`start of incarnation ${n} failed (attempt ${attempt}): ${(e as Error).message}`)
        say(`start of incarnation ${n} FAILED: ${(e as Error).message.split("\n")[0]}`)
        if (attempt >= 3) throw e
        await sleep(500)
      }
    }
  }

  child = await start()
  load = new Load({
    seed: SEED,
    clients: CLIENTS,
    pauseMs: PAUSE_MS,
    prefix: `s${SEED}`,
    mix: { ok: 0.6, flaky: 0.45, hang: 0.3 },
    port: () => port,
  })
  const ld = load
  ld.start()

  const rng = mulberry32(SEED)
  /** sleeps `ms` unless the child exits by itself first; then records it and restarts it */
  const watchfulSleep = async (ms: number): Promise<void> => {
    const until = Date.now() + ms
    while (Date.now() < until) {
      const c = child!
      const r = await Promise.race([sleep(until - Date.now()).then(() => "slept" as const), c.exited])
      if (r === "slept") return
      if (!c.signalled()) {
        anomalies.push(`incarnation ${c.n} (pid ${c.pid}) exited by itself: code ${r.code}, signal ${r.signal}; stderr: ${c.stderr().slice(-2000)}`)
        say(`incarnation ${c.n} pid ${c.pid} EXITED BY ITSELF (code ${r.code}, signal ${r.signal}): restarting it`)
        child = await start()
      }
    }
  }

  for (let k = 1; k <= KILLS; k++) {
    const gap = between(rng, MIN_GAP_MS, MAX_GAP_MS)
    const down = between(rng, 0, 300)
    await watchfulSleep(gap)
    const c = child!
    led.collect()
    let ackedUndelivered = 0
    for (const a of ld.ackedAddresses.keys()) if (!led.has(a)) ackedUndelivered++
    const killAt = Date.now()
    await c.kill9()
    const how = await c.exited
    if (how.signal !== "SIGKILL") anomalies.push(`kill ${k}: incarnation ${c.n} (pid ${c.pid}) had already exited by itself: code ${how.code}, signal ${how.signal}`)
    // The process is gone: the database now holds exactly what was durable at the kill.
    let queuedAtKill: Set<string>
    try {
      queuedAtKill = queuedAddresses(dataDir)
    } catch (e) {
      anomalies.push(`kill ${k}: queue.db unreadable after the kill: ${(e as Error).message}`)
      queuedAtKill = new Set()
    }
    if (k === KILLS) await hang.setMode("ok") // from now on the hanging destination heals
    await sleep(down)
    // Nothing runs Postern now: whatever the receivers hold came from the dead incarnations.
    led.collect()
    // At risk: durable in the queue (not recorded as sent) and already received; counted again at a
    // later kill only if a new copy arrived since (else it is the same pending second copy).
    let atRisk = 0
    for (const a of queuedAtKill) {
      const copies = led.copies.get(a) ?? 0
      if (copies > (riskCopies.get(a) ?? 0)) {
        atRisk++
        riskCopies.set(a, copies)
        atRiskCount.set(a, (atRiskCount.get(a) ?? 0) + 1)
      }
    }
    const tRestart = Date.now()
    child = await start()
    const rec: KillRecord = {
      k,
      at_s: Math.round((killAt - t0) / 100) / 10,
      pid: c.pid,
      uptime_ms: killAt - c.readyAt,
      acked_so_far: ld.acked.size,
      acked_undelivered: ackedUndelivered,
      queued_at_kill: queuedAtKill.size,
      at_risk: atRisk,
      down_ms: tRestart - killAt,
      restart_ms: child.readyAt - tRestart,
    }
    kills.push(rec)
    say(
      `kill ${k}/${KILLS}: pid ${c.pid} after ${rec.uptime_ms} ms; acked ${rec.acked_so_far} msgs, ${ackedUndelivered} acked rcpts undelivered, ` +
        `${queuedAtKill.size} rcpts queued at the kill, ${atRisk} at risk of a 2nd copy; restarted as pid ${child.pid} in ${rec.restart_ms} ms`,
    )
  }

  // The last incarnation takes load for a moment, then the load stops.
  await watchfulSleep(1_000)
  await ld.stop()
  const tLoadEnd = Date.now()
  say(`load stopped: attempted ${ld.attempted}, acknowledged ${ld.acked.size}, failed ${ld.failed.size}; draining (at most ${DRAIN_S} s)`)

  const { drained } = await waitForDrain(ld, led, dataDir, DRAIN_S * 1000, 250)
  // Stay a little longer than maximalBackoffTime: a late second copy would show now.
  await watchfulSleep(2_500)
  led.collect()
  const drainMs = Date.now() - tLoadEnd
  const missing = missingOf(ld, led)
  const counts = queueCounts(dataDir)
  say(`${drained ? "drained" : "NOT drained"} ${drainMs} ms after the load stopped; ${missing.length} acked recipients missing, ${counts.recipients} recipients queued`)

  const stuckRows = counts.recipients > 0 ? queueRows(dataDir) : []
  const last = child!
  const stopped = await last.stop(15_000)
  if (stopped.timedOut || stopped.code !== 0) anomalies.push(`SIGTERM of the last incarnation (pid ${last.pid}): exit ${stopped.code}${stopped.timedOut ? " after timing out (SIGKILLed)" : ""}`)

  // ---- the verdict
  const ackedMessages = [...ld.acked.values()]
  const missingSet = new Set(missing)
  const lostMessages = ackedMessages.filter((m) => m.recipients.some((a) => missingSet.has(a)))
  const deliveredMessages = ackedMessages.length - lostMessages.length
  const dups = led.duplicates()
  const extraCopies = dups.reduce((s, [, n]) => s + n - 1, 0)
  const bound = kills.reduce((s, r) => s + r.at_risk, 0)
  const unexplained = dups.filter(([a, n]) => n - 1 > (atRiskCount.get(a) ?? 0))
  const unackedDelivered = [...led.copies.keys()].filter((a) => !ld.ackedAddresses.has(a)).length
  if (led.mismatches.length > 0) anomalies.push(`${led.mismatches.length} deliveries to a recipient that is not the message's: ${led.mismatches.slice(0, 10).join("; ")}`)
  if (led.unknown > 0) anomalies.push(`${led.unknown} messages without X-Test-Id arrived (bounces?)`)
  if (ld.refusedRecipients.length > 0) anomalies.push(`${ld.refusedRecipients.length} recipients refused by Postern at RCPT: ${ld.refusedRecipients.slice(0, 5).join("; ")}`)
  const severe = severeLines(runDir)

  const ackedRcpts = ld.ackedAddresses.size
  say(
    `details: ${ackedRcpts} acked recipients, ${led.total} copies received, ${missing.length} missing; ` +
      `${dups.length} recipients duplicated (${extraCopies} extra copies, ${unexplained.length} beyond their kills' at-risk count); ` +
      `${unackedDelivered} recipients delivered but never acknowledged (committed, then killed before the 250 got out); ` +
      `naive in-flight sum ${kills.reduce((s, r) => s + r.acked_undelivered, 0)}; ` +
      `log lines at error ${severe.errors}, fatal ${severe.fatals}; anomalies ${anomalies.length}; ${((Date.now() - t0) / 1000).toFixed(0)} s in all`,
  )
  for (const a of anomalies) say(`ANOMALY: ${a.slice(0, 600)}`)

  const failed =
    lostMessages.length > 0 || extraCopies > bound || unexplained.length > 0 || counts.recipients > 0 || anomalies.length > 0 || !drained
  finished = true
  process.stdout.write(
    `chaos: seed=${SEED} kills=${kills.length} acknowledged=${ackedMessages.length} delivered=${deliveredMessages} ` +
      `lost=${lostMessages.length} duplicates=${extraCopies} (in flight at kills ≤ ${bound}) stuck=${counts.recipients}\n`,
  )
  if (failed) {
    const missingDetail = missing.slice(0, 200).map((a) => {
      const id = a.split("@")[0]!
      const m = ld.acked.get(id)
      return { address: a, queue_id: m?.queueId, acked_at_s: m !== undefined ? (m.at - t0) / 1000 : undefined }
    })
    const qids = missingDetail.map((m) => m.queue_id).filter((q): q is string => q !== undefined)
    const file = writeEvidence({
      summary: { acked: ackedMessages.length, lost: lostMessages.length, extraCopies, bound, stuck: counts.recipients, drained },
      missing: missingDetail,
      missing_attempts: (() => {
        try {
          return attemptsOf(dataDir, qids.slice(0, 50))
        } catch (e) {
          return (e as Error).message
        }
      })(),
      missing_log_lines: grepLogs(runDir, [...qids.slice(0, 50), ...missing.slice(0, 50)]),
      duplicates_unexplained: unexplained.slice(0, 100).map(([a, n]) => ({ address: a, copies: n, at_risk_in_kills: atRiskCount.get(a) ?? 0 })),
      duplicate_log_lines: grepLogs(runDir, unexplained.slice(0, 20).map(([a]) => a)),
      stuck: stuckRows,
      severe_log_lines: severe.sample,
    })
    say(`FAILED: evidence in ${file}; logs and data folder kept in ${runDir}`)
    return 1
  }
  if (KEEP) say(`run folder kept: ${runDir}`)
  else rmSync(runDir, { recursive: true, force: true })
  return 0
}

main()
  .then(
    async (code) => {
      await shutdown()
      process.exit(code)
    },
    async (e: unknown) => {
      finished = true
      say(`harness error: ${(e as Error).stack ?? String(e)}`)
      try {
        say(`evidence: ${writeEvidence({ reason: `harness error: ${(e as Error).message}` })}`)
      } catch {
        /* nothing more to keep */
      }
      await shutdown()
      process.exit(2)
    },
  )
