// Scenario 6, recovery (Postern only): a queue of 1,000,000 messages (seeded through Postern's store code,
// all due) is being delivered when Postern is SIGKILLed; Postern is started again on the same data folder
// and we time, from the restart, the `listening on` line, the first 220, the first 250 to a new message's
// end of data (a tiny SMTP client polls), and the first delivery counted at a fresh smtp-sink.
import { cpSync, mkdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { onCleanup } from "../lib/cleanup.js"
import { fmtInt, now, progress, sleep, warn } from "../lib/log.js"
import { SCRATCH } from "../lib/paths.js"
import { freePort } from "../lib/ports.js"
import { PosternProcess } from "../lib/postern.js"
import { seedQueue } from "../lib/seed.js"
import { Sink } from "../lib/sink.js"
import { buildMessage, sendOne } from "../lib/smtp-client.js"
import { fmtSpread, spread } from "../lib/stats.js"
import type { Scenario, ScenarioOutcome } from "./types.js"

const DEFAULT_SEED = 1_000_000
const DELIVERED_BEFORE_KILL = 200
const PROBE_BODY = buildMessage(2048, "recovery-probe")

interface RecoveryRun {
  readonly round: number
  readonly deliveredBeforeKill: number
  readonly firstStartS: number
  /** From the restart (spawn) to each milestone, seconds; null = not within the budget. */
  readonly listeningS: number | null
  readonly first220S: number | null
  readonly first250S: number | null
  readonly firstDeliveryS: number | null
  readonly peakRssMb: number | null
  readonly error: string | null
}

/** Polls with a fresh connection until a message gets its 250 (or the deadline); times from t0. */
const pollFirst250 = async (
  port: number,
  t0: number,
  deadline: number,
  abort: { aborted: boolean },
): Promise<{ greeting: number | null; accepted: number | null }> => {
  let greeting: number | null = null
  while (now() < deadline && !abort.aborted) {
    const t = await sendOne({
      host: "127.0.0.1",
      port,
      body: PROBE_BODY,
      from: "probe@source.test",
      to: "probe@dest.test",
      helo: "probe.bench.test",
      timeoutMs: Math.min(60_000, Math.max(1_000, deadline - now())),
    })
    if (t.greetedAt !== null && greeting === null) greeting = t.greetedAt - t0
    if (t.ok && t.repliedAt !== null) return { greeting, accepted: t.repliedAt - t0 }
    await sleep(t.connectedAt === null ? 5 : 50)
  }
  return { greeting, accepted: null }
}

const pollFirstDelivery = async (sink: Sink, t0: number, deadline: number, abort: { aborted: boolean }): Promise<number | null> => {
  while (now() < deadline && !abort.aborted) {
    if (sink.count() > 0) return now() - t0
    await sleep(5)
  }
  return null
}

export const recoveryScenario: Scenario = {
  name: "recovery",
  title: "restart after kill -9 with a large queue (Postern only)",
  measures:
    "What it measures: how long Postern needs after a crash before it takes and delivers mail again. The queue is " +
    "seeded offline through Postern's store code (`commitMessage` on `openQueueForWriting(dir).db`, one recipient each, " +
    "all due at once): 1,000,000 messages by default. Postern starts on a copy, delivers to a smtp-sink until " +
    `${DELIVERED_BEFORE_KILL} messages arrived (so deliveries are in flight), and is SIGKILLed; then it is started again on ` +
    "the same folder with a fresh sink, and we time from that spawn: its `listening on` line, the first 220 and the first " +
    "250 to a new message's end of data (a tiny client retrying every few ms), and the first message counted at the sink.",
  run: async (ctx): Promise<ScenarioOutcome> => {
    const { opts } = ctx
    const seedCount = opts.seed ?? DEFAULT_SEED
    const budgetMs = Math.max(opts.budgetMs, 60_000)
    const template = join(SCRATCH, "recovery-template")
    mkdirSync(SCRATCH, { recursive: true })
    const dropTemplate = onCleanup("recovery template", () => rmSync(template, { recursive: true, force: true }))
    progress(`recovery: seeding ${fmtInt(seedCount)} due messages (${opts.seedSize} B bodies) into ${template}`)
    const seeded = seedQueue({ dataDir: template, messages: seedCount, recipientsPerMessage: 1, bodySize: opts.seedSize, due: { kind: "now" } })
    progress(`recovery: seeded in ${seeded.seconds.toFixed(1)}s`)
    const runs: Array<RecoveryRun> = []
    try {
      for (let round = 0; round < opts.rounds; round++) {
        const dataDir = join(SCRATCH, `recovery-run-${round}-${Date.now()}`)
        cpSync(template, dataDir, { recursive: true })
        let sink = await Sink.start()
        let delivered = 0
        let firstStartS = 0
        try {
          progress(`recovery: round ${round + 1}/${opts.rounds}: first start on ${fmtInt(seedCount)} queued messages`)
          const first = await PosternProcess.start({ sinkPort: sink.port, mode: "relay", dataDir, removeDataDir: false, readyTimeoutMs: budgetMs })
          firstStartS = first.readyMs / 1000
          const until = now() + budgetMs
          while (sink.count() < DELIVERED_BEFORE_KILL && now() < until && first.alive) await sleep(20)
          delivered = sink.count()
          progress(`recovery: ${fmtInt(delivered)} delivered; SIGKILL pid ${first.pid}`)
          await first.kill()
          await sink.stop()
          sink = await Sink.start()
          const port = await freePort()
          const t0 = now()
          const deadline = t0 + budgetMs
          const starting = PosternProcess.start({
            sinkPort: sink.port,
            mode: "relay",
            dataDir,
            removeDataDir: true,
            port,
            readyTimeoutMs: budgetMs,
            ...(opts.cpuProfDir === null ? {} : { cpuProfDir: opts.cpuProfDir }),
          })
          const abort = { aborted: false }
          const probe = pollFirst250(port, t0, deadline, abort)
          const delivery = pollFirstDelivery(sink, t0, deadline, abort)
          let second: PosternProcess | null = null
          try {
            second = await starting
            const [p, d] = await Promise.all([probe, delivery])
            const run: RecoveryRun = {
              round,
              deliveredBeforeKill: delivered,
              firstStartS,
              listeningS: second.readyMs / 1000,
              first220S: p.greeting === null ? null : p.greeting / 1000,
              first250S: p.accepted === null ? null : p.accepted / 1000,
              firstDeliveryS: d === null ? null : d / 1000,
              peakRssMb: (second.peakRssKb() ?? Number.NaN) / 1024,
              error: null,
            }
            runs.push(run)
            progress(
              `recovery: round ${round + 1}: listening ${run.listeningS?.toFixed(2)}s, first 220 ${run.first220S?.toFixed(2) ?? "–"}s, ` +
                `first 250 ${run.first250S?.toFixed(2) ?? "–"}s, first delivery ${run.firstDeliveryS?.toFixed(2) ?? "–"}s after the restart`,
            )
          } finally {
            abort.aborted = true
            await Promise.allSettled([probe, delivery])
            if (second !== null) await second.stop()
          }
        } catch (e) {
          warn(`recovery: round ${round + 1}: ${(e as Error).message}`)
          runs.push({
            round,
            deliveredBeforeKill: delivered,
            firstStartS,
            listeningS: null,
            first220S: null,
            first250S: null,
            firstDeliveryS: null,
            peakRssMb: null,
            error: (e as Error).message,
          })
        } finally {
          await sink.stop()
          rmSync(dataDir, { recursive: true, force: true })
        }
      }
    } finally {
      rmSync(template, { recursive: true, force: true })
      dropTemplate()
    }
    const ok = runs.filter((r) => r.error === null)
    const s = (f: (r: RecoveryRun) => number | null) => fmtSpread(spread(ok.map((r) => f(r) ?? Number.NaN)), 2)
    return {
      params: { seedMessages: seedCount, seedBodySize: opts.seedSize, seedSeconds: seeded.seconds, deliveredBeforeKill: DELIVERED_BEFORE_KILL, rounds: opts.rounds, budgetS: budgetMs / 1000 },
      tables: [
        {
          columns: ["queued messages", "first start → listening s", "restart → listening s", "restart → first 220 s", "restart → first 250 s", "restart → first delivery s", "peak RSS MiB after restart", "runs"],
          rows: [
            [
              fmtInt(seedCount),
              fmtSpread(spread(ok.map((r) => r.firstStartS)), 2),
              s((r) => r.listeningS),
              s((r) => r.first220S),
              s((r) => r.first250S),
              s((r) => r.firstDeliveryS),
              fmtSpread(spread(ok.map((r) => r.peakRssMb ?? Number.NaN)), 0),
              String(ok.length),
            ],
          ],
        },
      ],
      notes: [
        `Seeding took ${seeded.seconds.toFixed(1)} s; every round starts from a fresh copy of the seeded queue.`,
        "Times are from the spawn of the restarted `node dist/cli/main.js start` (node's own start-up included).",
        ...runs.filter((r) => r.error !== null).map((r) => `round ${r.round + 1} failed: ${r.error}`),
      ],
      ratios: {},
      runs,
    }
  },
}
