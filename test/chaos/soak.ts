// Soak test: steady load for N minutes against one Postern child (the built CLI), with faults mixed in:
// a flaky destination (451 to ~30% of RCPTs), a destination that hangs for 40 s out of every 60 s (new
// connections hang after connect, and the connections Postern keeps cached are frozen through a proxy,
// lib/freezer.ts), and every few seconds a client that disconnects mid-DATA. Every second it times a tiny
// SMTP connect→220 round trip (Postern's responsiveness: its event loop must run to greet); every 5 s it
// writes a CSV row with Postern's RSS (/proc/PID/status VmRSS), CPU, the probes and the queue size
// (a read-only look at queue.db). At the end the load stops, every destination heals, and the driver
// waits (bounded) until every acknowledged message is delivered. It prints a verdict and exits 1 when one
// of its three parts fails: memory flat, no loss (nor duplicates, nor phantoms), latency bounded.
//
//   npm run soak -- --minutes N [--out ./soak-out] [--clients 4] [--pause-ms 40] [--seed 1]
//
// See docs/chaos-and-soak.md for the thresholds and why they are what they are.
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { startBadServer, type BadServer } from "../support/bad-server.js"
import { freePort } from "../support/child.js"
import { makeMessage } from "../support/inject.js"
import { startReceiver, type Receiver } from "../support/receiver.js"
import { checkKnown, numberArg, parseArgs, sleep } from "./lib/args.js"
import { grepLogs, severeLines } from "./lib/evidence.js"
import { Ledger, badServerSink, receiverSink } from "./lib/ledger.js"
import { missingOf, waitForDrain } from "./lib/drain.js"
import { FROM, Load } from "./lib/load.js"
import { startFreezer, type Freezer } from "./lib/freezer.js"
import { chaosConfig, killStartedPosterns, startPostern, writeConfigFile, type Incarnation } from "./lib/postern.js"
import { dbFootprint, queueCounts, queueRows } from "./lib/queue-db.js"
import { between, mulberry32, unitHash } from "./lib/rng.js"
import { abortMidData, probeGreeting } from "./lib/smtp-raw.js"

const args = parseArgs(process.argv.slice(2))
checkKnown(args, ["minutes", "out", "clients", "pause-ms", "seed", "drain-s", "rss-slope-mib-per-min", "warmup-min", "p99-ms", "max-ms", "keep"])
const MINUTES = numberArg(args, "minutes", 5)
const OUT = resolve(args.get("out") ?? "./soak-out")
const CLIENTS = numberArg(args, "clients", 4)
const PAUSE_MS = numberArg(args, "pause-ms", 40)
const SEED = numberArg(args, "seed", 1)
const DRAIN_S = numberArg(args, "drain-s", 120)
/** memory is flat when the robust RSS slope over the second half of the load is at most this */
const RSS_SLOPE_LIMIT = numberArg(args, "rss-slope-mib-per-min", 1)
/** ...judged only after this warm-up (and only over the second half of the run) */
const WARMUP_MIN = numberArg(args, "warmup-min", 10)
/** latency is bounded when the 99th percentile of the connect→220 probes is at most this, and... */
const P99_LIMIT_MS = numberArg(args, "p99-ms", 250)
/** ...no probe took longer than this (a failed or timed-out probe counts as too long) */
const MAX_LIMIT_MS = numberArg(args, "max-ms", 2000)
const KEEP = args.get("keep") === "true"
const FLAKY_RATE = 0.3
const SAMPLE_MS = 5_000
const PROBE_MS = 1_000
/** the hanging destination works for OK_MS, then hangs for HANG_MS, and again */
const HANG_MS = 40_000
const OK_MS = 20_000

const t0 = Date.now()
const say = (s: string): void => void process.stderr.write(`[soak ${((Date.now() - t0) / 1000).toFixed(0)}s] ${s}\n`)

const stamp = new Date().toISOString().replace(/[:.]/g, "-")
mkdirSync(OUT, { recursive: true })
const csvFile = join(OUT, `soak-${stamp}.csv`)
const runDir = mkdtempSync(join(tmpdir(), "postern-soak-"))
const dataDir = join(runDir, "data")

const readProc = (pid: number): { rssKb: number | null; cpuTicks: number | null } => {
  let rssKb: number | null = null
  let cpuTicks: number | null = null
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    if (m !== null) rssKb = Number(m[1])
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    cpuTicks = Number(f[11]) + Number(f[12]) // utime + stime, clock ticks (USER_HZ = 100)
  } catch {
    /* gone */
  }
  return { rssKb, cpuTicks }
}

/** Theil–Sen estimator: the median of the slopes of all pairs; robust to the GC sawtooth. */
const theilSen = (pts: ReadonlyArray<readonly [number, number]>): number => {
  const slopes: Array<number> = []
  for (let i = 0; i < pts.length; i++)
    for (let j = i + 1; j < pts.length; j++) {
      const dx = pts[j]![0] - pts[i]![0]
      if (dx > 0) slopes.push((pts[j]![1] - pts[i]![1]) / dx)
    }
  slopes.sort((a, b) => a - b)
  return slopes.length === 0 ? 0 : slopes[Math.floor(slopes.length / 2)]!
}

const quantile = (xs: ReadonlyArray<number>, q: number): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!
}

let ok: Receiver | undefined
let flaky: Receiver | undefined
let hang: BadServer | undefined
let freezer: Freezer | undefined
let child: Incarnation | undefined

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    say(`${sig}: stopping (CSV so far: ${csvFile}; run folder kept: ${runDir})`)
    killStartedPosterns()
    process.exit(130)
  })
}

const main = async (): Promise<number> => {
  const loadMs = MINUTES * 60_000
  say(`${MINUTES} min of load, ${CLIENTS} clients; CSV ${csvFile}; run folder ${runDir}`)
  ok = await startReceiver()
  flaky = await startReceiver({
    rcpt: (address, attempt) =>
      unitHash(SEED, "flaky", address.toLowerCase(), attempt) < FLAKY_RATE ? { code: 451, message: "4.7.1 flaky: try again later" } : undefined,
  })
  hang = await startBadServer("ok")
  const hangSrv = hang
  // Postern reaches the hanging destination through a proxy that can also freeze the connections its
  // connection cache keeps open (lib/freezer.ts): each hang phase hangs old and new connections alike.
  freezer = await startFreezer(hang.port)
  const frz = freezer
  const ledger = new Ledger([receiverSink("ok", ok), receiverSink("flaky", flaky), badServerSink("hang", hang)])
  const port = await freePort()
  const configFile = writeConfigFile(join(runDir, "postern.yaml"), chaosConfig(dataDir, port, { ok: ok.port, flaky: flaky.port, hang: frz.port }))
  child = await startPostern({ configFile, logFile: join(runDir, "postern.log"), n: 0 })
  const pid = child.pid
  let died = null as string | null
  void child.exited.then((r) => {
    if (!child!.signalled()) {
      died = `Postern (pid ${pid}) exited by itself: code ${r.code}, signal ${r.signal}; stderr: ${child!.stderr().slice(-2000)}`
      say(died)
    }
  })

  const load = new Load({ seed: SEED, clients: CLIENTS, pauseMs: PAUSE_MS, prefix: "k", mix: { ok: 0.6, flaky: 0.45, hang: 0.3 }, port: () => port })
  load.start()
  const loadStart = Date.now()
  const loading = (): boolean => Date.now() - loadStart < loadMs && died === null

  // ---- the hanging destination: works 20 s, hangs 40 s, ... (a run of whole minutes ends in a hang
  // phase, so the final drain has that backlog and frozen connections to recover from)
  let hangMode: "hangAfterConnect" | "ok" = "ok"
  let frozen = 0
  const hangCycle = (async () => {
    while (loading()) {
      await sleep(100)
      const phase = (Date.now() - loadStart) % (HANG_MS + OK_MS)
      const want = phase < OK_MS ? "ok" : "hangAfterConnect"
      if (want !== hangMode) {
        hangMode = want
        await hangSrv.setMode(want)
        if (want === "hangAfterConnect") frozen += frz.freezeExisting()
      }
    }
  })()

  // ---- clients that disconnect mid-DATA
  const rng = mulberry32(SEED)
  const aborted = new Set<string>()
  const abortOutcomes = new Map<string, number>()
  const aborter = (async () => {
    for (let n = 0; loading(); n++) {
      await sleep(between(rng, 2_000, 6_000))
      if (!loading()) break
      const id = `abort${n}`
      const to = `${id}@ok.test`
      const body = makeMessage({ from: FROM, to, subject: `aborted ${id}`, headers: { "X-Test-Id": id }, bytes: 8_000 })
      const r = await abortMidData(port, FROM, to, body.slice(0, 1_000 + Math.floor(rng() * 6_000)))
      abortOutcomes.set(r, (abortOutcomes.get(r) ?? 0) + 1)
      if (r === "aborted") aborted.add(to)
    }
  })()

  // ---- responsiveness probes, every second
  const probes: Array<number> = []
  let windowProbes: Array<number> = []
  let probeFailures = 0
  let windowFailures = 0
  const prober = (async () => {
    while (loading()) {
      const started = Date.now()
      const ms = await probeGreeting(port, 5_000)
      if (ms === null) {
        probeFailures++
        windowFailures++
      } else {
        probes.push(ms)
        windowProbes.push(ms)
      }
      await sleep(Math.max(0, PROBE_MS - (Date.now() - started)))
    }
  })()

  // ---- samples, every 5 s
  writeFileSync(
    csvFile,
    "t_s,rss_kb,cpu_pct,probe_p50_ms,probe_max_ms,probe_failures,queue_messages,queue_recipients,acked_msgs,acked_rcpts,delivered_copies,inject_failed,aborted_mid_data,hang_mode,db_kb,wal_kb,attempt_rows\n",
  )
  const rss: Array<readonly [number, number]> = []
  let lastCpu = readProc(pid).cpuTicks ?? 0
  let lastT = Date.now()
  let maxQueue = 0
  let lastDisk = { dbBytes: 0, walBytes: 0, attempts: 0 }
  const sampleOnce = (): void => {
    ledger.collect()
    const now = Date.now()
    const p = readProc(pid)
    const cpuPct = p.cpuTicks !== null ? ((p.cpuTicks - lastCpu) * 10 * 100) / (now - lastT) : NaN
    if (p.cpuTicks !== null) lastCpu = p.cpuTicks
    lastT = now
    let q = { messages: -1, recipients: -1, queuedRecipients: -1 }
    try {
      q = queueCounts(dataDir)
    } catch {
      /* leave -1: unreadable this time */
    }
    maxQueue = Math.max(maxQueue, q.recipients)
    let disk = { dbBytes: -1024, walBytes: -1024, attempts: -1 }
    try {
      disk = dbFootprint(dataDir)
    } catch {
      /* leave -1 */
    }
    lastDisk = disk
    const t = (now - loadStart) / 1000
    if (p.rssKb !== null) rss.push([t, p.rssKb])
    const row = [
      t.toFixed(1),
      p.rssKb ?? "",
      cpuPct.toFixed(0),
      windowProbes.length > 0 ? quantile(windowProbes, 0.5).toFixed(2) : "",
      windowProbes.length > 0 ? Math.max(...windowProbes).toFixed(2) : "",
      windowFailures,
      q.messages,
      q.recipients,
      load.acked.size,
      load.ackedAddresses.size,
      ledger.total,
      load.failed.size,
      aborted.size,
      hangMode,
      Math.round(disk.dbBytes / 1024),
      Math.round(disk.walBytes / 1024),
      disk.attempts,
    ]
    appendFileSync(csvFile, `${row.join(",")}\n`)
    windowProbes = []
    windowFailures = 0
  }
  let nextReport = 60
  while (loading()) {
    await sleep(Math.min(SAMPLE_MS, Math.max(0, loadMs - (Date.now() - loadStart))))
    sampleOnce()
    const t = (Date.now() - loadStart) / 1000
    if (t >= nextReport) {
      nextReport += 60
      const last = rss[rss.length - 1]
      say(
        `${(t / 60).toFixed(0)} min: RSS ${last !== undefined ? (last[1] / 1024).toFixed(0) : "?"} MiB, acked ${load.acked.size} msgs, ` +
          `delivered ${ledger.total} copies, probe p99 ${quantile(probes, 0.99).toFixed(1)} ms, queue max ${maxQueue} rcpts`,
      )
    }
  }

  // ---- the end: stop the load, heal everything, drain
  await Promise.all([load.stop(), hangCycle, aborter, prober])
  hangMode = "ok"
  await hangSrv.setMode("ok")
  const loadS = (Date.now() - loadStart) / 1000
  say(`load stopped after ${loadS.toFixed(0)} s: attempted ${load.attempted}, acknowledged ${load.acked.size}, failed ${load.failed.size}; draining (at most ${DRAIN_S} s)`)
  const drainStart = Date.now()
  const drain = died === null ? await waitForDrain(load, ledger, dataDir, DRAIN_S * 1000, 500) : null
  const drained = drain?.drained ?? false
  let counts = drain?.counts ?? { messages: 0, recipients: 0, queuedRecipients: 0 }
  const drainS = (Date.now() - drainStart) / 1000
  await sleep(2_500) // longer than maximalBackoffTime: a late second copy would show now
  sampleOnce()
  const missing = missingOf(load, ledger)
  try {
    counts = queueCounts(dataDir)
  } catch {
    /* keep the last */
  }
  const stuckRows = counts.recipients > 0 ? queueRows(dataDir) : []
  let stopNote = ""
  if (died === null) {
    const s = await child.stop(15_000)
    if (s.timedOut || s.code !== 0) stopNote = `SIGTERM: exit ${s.code}${s.timedOut ? " after timing out (SIGKILLed)" : ""}`
  }

  // ---- the verdict
  // memory: the robust slope of RSS over the second half of the load, and never inside the warm-up (V8's
  // heap, SQLite's 32 MiB page cache filling as queue.db grows, the connection caches: measured at the
  // default load, RSS climbs ~55 MiB in the first ~10 minutes, then stays within a few MiB). RSS also
  // follows the hang cycle (the hanging destination's backlog sits in the active window until it heals)
  // and its peaks depend on when V8 collects, so the points are the FLOOR (lowest sample) of each whole
  // 60 s cycle, which a leak raises and a transient backlog does not. At least 3 such cycles are needed;
  // a shorter run does not judge memory (and says so).
  const judgeFrom = Math.max(loadS / 2, WARMUP_MIN * 60)
  const cycleS = (HANG_MS + OK_MS) / 1000
  const cycles: Array<readonly [number, number]> = []
  for (let c = 0; (c + 1) * cycleS <= loadS + 0.5; c++) {
    const inCycle = rss.filter(([t]) => t > c * cycleS && t <= (c + 1) * cycleS + 0.5).map(([, r]) => r)
    if (inCycle.length > 0) cycles.push([(c + 0.5) * cycleS, Math.min(...inCycle)])
  }
  const judged = cycles.filter(([mid]) => mid - cycleS / 2 >= judgeFrom - 0.5)
  const memoryJudged = judged.length >= 3
  const slopeMiBPerMin = (theilSen(memoryJudged ? judged : cycles.slice(Math.floor(cycles.length / 2))) * 60) / 1024
  const rssFirst = judged[0]?.[1] ?? NaN
  const rssLast = judged[judged.length - 1]?.[1] ?? NaN
  const rssMax = Math.max(...rss.map(([, r]) => r))
  const memoryOk = memoryJudged && slopeMiBPerMin <= RSS_SLOPE_LIMIT

  const dups = ledger.duplicates()
  const extraCopies = dups.reduce((s, [, n]) => s + n - 1, 0)
  const phantoms = [...aborted].filter((a) => ledger.has(a))
  const lostMessages = [...load.acked.values()].filter((m) => m.recipients.some((a) => !ledger.has(a)))
  const lossOk =
    died === null && drained && lostMessages.length === 0 && counts.recipients === 0 && extraCopies === 0 && phantoms.length === 0 && ledger.mismatches.length === 0 && ledger.unknown === 0

  const p50 = quantile(probes, 0.5)
  const p99 = quantile(probes, 0.99)
  const pmax = probes.length > 0 ? Math.max(...probes) : NaN
  const latencyOk = probes.length > 0 && p99 <= P99_LIMIT_MS && pmax <= MAX_LIMIT_MS && probeFailures === 0

  const severe = severeLines(runDir)
  const pass = (memoryOk || !memoryJudged) && lossOk && latencyOk && stopNote === ""
  const rate = load.acked.size / loadS
  process.stdout.write(
    [
      `soak: ${(loadS / 60).toFixed(1)} min, ${load.acked.size} messages acknowledged (${rate.toFixed(1)}/s, ${load.ackedAddresses.size} recipients), ` +
        `${load.failed.size} injections failed, ${aborted.size} clients cut mid-DATA (${[...abortOutcomes].map(([k, v]) => `${k}: ${v}`).join(", ")}), queue peak ${maxQueue} recipients, ${frozen} cached connections frozen by hang phases, ${hangSrv.connections} connections to the hanging destination; CSV ${csvFile}`,
      (memoryJudged
        ? `  memory  ${memoryOk ? "FLAT   " : "GROWING"} RSS floor slope ${slopeMiBPerMin.toFixed(2)} MiB/min (limit ${RSS_SLOPE_LIMIT}) over the ${judged.length} whole ` +
          `${cycleS} s cycles from ${(judgeFrom / 60).toFixed(1)} min on, ${(rssFirst / 1024).toFixed(0)} → ${(rssLast / 1024).toFixed(0)} MiB; peak ${(rssMax / 1024).toFixed(0)} MiB`
        : `  memory  NOT JUDGED: fewer than 3 whole cycles after the ${WARMUP_MIN}-min warm-up and the first half (run at least ${Math.max(WARMUP_MIN + 3, 6)} min); ` +
          `floor slope over the second half ${slopeMiBPerMin.toFixed(2)} MiB/min, peak ${(rssMax / 1024).toFixed(0)} MiB`) +
        `; per-cycle floors ${cycles.map(([, r]) => (r / 1024).toFixed(0)).join(" ")} MiB`,
      `  loss    ${lossOk ? "NONE   " : "FAILED "} lost ${lostMessages.length} messages (${missing.length} recipients), stuck ${counts.recipients}, duplicates ${extraCopies}, ` +
        `delivered after a mid-DATA disconnect ${phantoms.length}, mis-addressed ${ledger.mismatches.length}, unknown ${ledger.unknown}; ` +
        `${drained ? `drained in ${drainS.toFixed(1)} s` : `NOT drained after ${drainS.toFixed(0)} s`}${died !== null ? `; ${died.slice(0, 300)}` : ""}`,
      `  latency ${latencyOk ? "BOUNDED" : "HIGH   "} connect→220 p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms (limit ${P99_LIMIT_MS}), max ${pmax.toFixed(1)} ms (limit ${MAX_LIMIT_MS}), ` +
        `${probes.length} probes, ${probeFailures} failed`,
      `  disk    (not judged) queue.db ${(lastDisk.dbBytes / 1048576).toFixed(1)} MiB + WAL ${(lastDisk.walBytes / 1048576).toFixed(1)} MiB at the end (queue: ${counts.recipients} recipients); ` +
        `${lastDisk.attempts} rows in the attempts log (${(lastDisk.attempts / Math.max(1, load.ackedAddresses.size)).toFixed(1)} per recipient)`,
      `  log lines at error ${severe.errors}, fatal ${severe.fatals}${stopNote !== "" ? `; ${stopNote}` : ""}`,
      `soak: ${pass ? "PASS" : "FAIL"}${pass && !memoryJudged ? " (loss and latency; memory not judged: too short)" : ""}`,
    ].join("\n") + "\n",
  )
  if (!pass) {
    const evidence = join(OUT, `soak-${stamp}-evidence.json`)
    const qids = lostMessages.slice(0, 50).map((m) => m.queueId).filter((q): q is string => q !== undefined)
    writeFileSync(
      evidence,
      `${JSON.stringify(
        {
          missing: missing.slice(0, 200),
          lost_queue_ids: qids,
          lost_log_lines: grepLogs(runDir, [...qids, ...missing.slice(0, 50)]),
          duplicates: dups.slice(0, 100),
          duplicate_log_lines: grepLogs(runDir, dups.slice(0, 20).map(([a]) => a)),
          phantoms,
          stuck: stuckRows,
          severe_log_lines: severe.sample,
          died,
        },
        null,
        2,
      )}\n`,
    )
    say(`evidence in ${evidence}; Postern's log and data folder kept in ${runDir}`)
  } else if (KEEP) say(`run folder kept: ${runDir}`)
  else rmSync(runDir, { recursive: true, force: true })
  return pass ? 0 : 1
}

main().then(
  async (code) => {
    killStartedPosterns()
    await Promise.allSettled([ok?.close(), flaky?.close(), hang?.close(), freezer?.close()])
    process.exit(code)
  },
  async (e: unknown) => {
    say(`harness error: ${(e as Error).stack ?? String(e)}; run folder kept: ${runDir}`)
    killStartedPosterns()
    await Promise.allSettled([ok?.close(), flaky?.close(), hang?.close(), freezer?.close()])
    process.exit(2)
  },
)
