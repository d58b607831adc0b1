// Scenario 5, backlog (Postern only): the relay scenario against a Postern whose queue already holds
// 100,000 deferred messages × 10 recipients (seeded through Postern's store code, next attempts spread over
// the coming hours so none comes due during the run), alternating with the same Postern on an empty
// queue. Reports throughput relative to the empty queue, CPU per message, start-up time and peak RSS.
import { cpSync, mkdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { onCleanup } from "../lib/cleanup.js"
import { fmtInt, fmtNum, progress } from "../lib/log.js"
import { e2eRun, type RunResult } from "../lib/measure.js"
import { SCRATCH } from "../lib/paths.js"
import { PosternProcess } from "../lib/postern.js"
import { fmtCounts, fmtCpu, fmtRate, runRounds, type Participant } from "../lib/rounds.js"
import { seedQueue } from "../lib/seed.js"
import { Sink } from "../lib/sink.js"
import { fmtRatio, fmtSpread, ratio, spread } from "../lib/stats.js"
import { DEFAULT_MESSAGES, SESSIONS, throughputNotes } from "./relay.js"
import type { Scenario, ScenarioOutcome } from "./types.js"

const DEFAULT_SEED = 100_000
const RECIPIENTS = 10
const SIZE = 5120
const HOUR = 3_600_000

export const backlogScenario: Scenario = {
  name: "backlog",
  title: "relay end to end with a large deferred queue (Postern only)",
  measures:
    "What it measures: whether a big queue slows Postern down. The queue is seeded offline through Postern's own store " +
    "code (`commitMessage` in one transaction per batch on `openQueueForWriting(dir).db`, then `rescheduleRecipient` " +
    `to put every recipient's next attempt 2–8 hours ahead): 100,000 messages × ${RECIPIENTS} recipients by default. ` +
    `Then the relay scenario (${SESSIONS} sessions, 5 KiB, end to end to a fresh smtp-sink) runs against a copy of ` +
    "that queue and against an empty one, alternately. Peak RSS is Postern's VmHWM from /proc/PID/status.",
  run: async (ctx): Promise<ScenarioOutcome> => {
    const { opts } = ctx
    const messages = opts.messages ?? DEFAULT_MESSAGES
    const seedCount = opts.seed ?? DEFAULT_SEED
    const template = join(SCRATCH, "backlog-template")
    mkdirSync(SCRATCH, { recursive: true })
    const dropTemplate = onCleanup("backlog template", () => rmSync(template, { recursive: true, force: true }))
    progress(`backlog: seeding ${fmtInt(seedCount)} messages × ${RECIPIENTS} recipients (${opts.seedSize} B bodies) into ${template}`)
    const seeded = seedQueue({
      dataDir: template,
      messages: seedCount,
      recipientsPerMessage: RECIPIENTS,
      bodySize: opts.seedSize,
      due: { kind: "spread", fromMs: 2 * HOUR, toMs: 8 * HOUR },
    })
    progress(`backlog: seeded ${fmtInt(seeded.recipients)} recipients in ${seeded.seconds.toFixed(1)}s`)
    const startup = new Map<string, Array<number>>()
    const participant = (key: string, label: string, seededQueue: boolean): Participant => ({
      key,
      label,
      run: async (round, n): Promise<RunResult> => {
        let dataDir: string | undefined
        if (seededQueue) {
          dataDir = join(SCRATCH, `backlog-run-${round}-${Date.now()}`)
          cpSync(template, dataDir, { recursive: true })
        }
        const sink = await Sink.start()
        try {
          const postern = await PosternProcess.start({
            sinkPort: sink.port,
            mode: "relay",
            readyTimeoutMs: 600_000,
            ...(dataDir === undefined ? {} : { dataDir, removeDataDir: true }),
            ...(opts.cpuProfDir === null ? {} : { cpuProfDir: opts.cpuProfDir }),
          })
          startup.set(key, [...(startup.get(key) ?? []), postern.readyMs / 1000])
          try {
            return await e2eRun(key, round, { port: postern.port, sessions: SESSIONS, messages: n, size: SIZE }, sink, opts.budgetMs, postern)
          } finally {
            await postern.stop()
          }
        } finally {
          await sink.stop()
          if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true })
        }
      },
    })
    let outcome
    try {
      outcome = await runRounds(
        "backlog",
        [
          participant("postern", "Postern, empty queue", false),
          participant("postern-backlog", `Postern, ${fmtInt(seedCount)} queued messages × ${RECIPIENTS} recipients`, true),
        ],
        opts.rounds,
        messages,
        opts.budgetMs,
      )
    } finally {
      rmSync(template, { recursive: true, force: true })
      dropTemplate()
    }
    const { results, summaries } = outcome
    const empty = summaries.find((s) => s.key === "postern")!
    const rows = summaries.map((s) => [
      s.label,
      fmtCounts(s),
      fmtRate(s.rate),
      fmtRate(s.acceptRate),
      fmtRatio(s.rate.median, empty.rate.median),
      fmtCpu(s.cpuMsPerMsg),
      fmtSpread(s.peakRssMb, 0),
      fmtSpread(spread(startup.get(s.key) ?? []), 2),
      String(s.rate.n),
    ])
    const r = ratio(summaries[1]!.rate.median, empty.rate.median)
    return {
      params: { seedMessages: seedCount, recipientsPerMessage: RECIPIENTS, seedBodySize: opts.seedSize, seedSeconds: seeded.seconds, sessions: SESSIONS, size: SIZE, messages, rounds: opts.rounds },
      tables: [
        {
          columns: ["", "messages per run", "end to end msg/s", "accept msg/s", "÷ empty queue", "CPU ms/msg", "peak RSS MiB", "start → listening s", "runs"],
          rows,
        },
      ],
      notes: [
        `With the backlog Postern relayed at ${r === null ? "–" : `${fmtNum(r * 100, 0)}%`} of its empty-queue rate (medians).`,
        `Seeding took ${seeded.seconds.toFixed(1)} s (${fmtInt(seeded.recipients)} recipient rows); each seeded run starts on a fresh copy of the seeded queue.`,
        ...throughputNotes(summaries, opts.budgetMs / 1000),
      ],
      ratios: { "backlog/empty": r },
      runs: { results, startupSeconds: Object.fromEntries(startup) },
    }
  },
}
