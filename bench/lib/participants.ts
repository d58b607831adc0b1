// The participants of the throughput scenarios: an MTA relaying to a fresh sink (e2e.sh-style), an MTA
// accepting into its discard (blast.sh-style), and the protocol ceiling (smtp-source straight into a sink).
import { acceptRun, e2eRun, warmUp, warmupCount, type RunResult } from "./measure.js"
import type { MtaName } from "./mta.js"
import type { Participant } from "./rounds.js"
import { Sink } from "./sink.js"
import { startMta } from "./start-mta.js"
import type { PosternStartOptions } from "./postern.js"

export const MTA_LABEL: Record<MtaName, string> = {
  postern: "Postern",
  postfix: "Postfix",
  haraka: "Haraka (queue, 2 workers)",
}

export interface RelayShape {
  readonly sessions: number
  readonly size: number
  readonly budgetMs: number
  readonly cpuProfDir: string | null
  /** Messages sent through each MTA before its measured run (null: warmupCount's default). */
  readonly warmup: number | null
}

/** MTA → fresh smtp-sink; end to end until the sink counted every message. */
export const relayParticipant = (
  name: MtaName,
  shape: RelayShape,
  extra: Partial<PosternStartOptions> & { key?: string; label?: string } = {},
): Participant => ({
  key: extra.key ?? name,
  label: extra.label ?? MTA_LABEL[name],
  run: async (round, messages): Promise<RunResult> => {
    const key = extra.key ?? name
    const sink = await Sink.start()
    try {
      const mta = await startMta(name, {
        ...extra,
        sinkPort: sink.port,
        mode: "relay",
        ...(shape.cpuProfDir === null ? {} : { cpuProfDir: shape.cpuProfDir }),
      })
      try {
        const source = { port: mta.port, sessions: shape.sessions, size: shape.size }
        await warmUp(`${key} round ${round + 1}`, { ...source, messages: warmupCount(shape.warmup, messages) }, sink, shape.budgetMs)
        return await e2eRun(key, round, { ...source, messages }, sink, shape.budgetMs, mta)
      } finally {
        await mta.stop()
      }
    } finally {
      await sink.stop()
    }
  },
})

/** MTA accepting into its discard transport; timed until smtp-source is done. */
export const acceptParticipant = (name: MtaName, shape: RelayShape): Participant => ({
  key: name,
  label: name === "haraka" ? "Haraka (discard, 2 workers)" : MTA_LABEL[name],
  run: async (round, messages): Promise<RunResult> => {
    // Postfix's discard mode still names a relayhost; nothing is ever sent to it.
    const sink = await Sink.start()
    try {
      const mta = await startMta(name, {
        sinkPort: sink.port,
        mode: "discard",
        ...(shape.cpuProfDir === null ? {} : { cpuProfDir: shape.cpuProfDir }),
      })
      try {
        const source = { port: mta.port, sessions: shape.sessions, size: shape.size }
        await warmUp(`${name} round ${round + 1}`, { ...source, messages: warmupCount(shape.warmup, messages) }, null, shape.budgetMs)
        return await acceptRun(name, round, { ...source, messages }, shape.budgetMs, mta)
      } finally {
        await mta.stop()
      }
    } finally {
      await sink.stop()
    }
  },
})

/** smtp-source → smtp-sink directly (blast.sh to the sink): what the test tools themselves can do. */
export const ceilingParticipant = (shape: RelayShape): Participant => ({
  key: "ceiling",
  label: "protocol ceiling (smtp-source → smtp-sink)",
  run: async (round, messages): Promise<RunResult> => {
    const sink = await Sink.start()
    try {
      return await acceptRun("ceiling", round, { port: sink.port, sessions: shape.sessions, messages, size: shape.size }, shape.budgetMs)
    } finally {
      await sink.stop()
    }
  },
})
