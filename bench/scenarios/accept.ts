// Scenario 3, accept: accept only. Postern with `transports: {"*": "discard:"}`, Postfix with
// `postfix-relay.sh start PORT SINK discard`, Haraka with HARAKA_MODE=discard, each blasted by smtp-source
// (blast.sh: 20 sessions, a new connection per message), timed until smtp-source is done.
import { acceptParticipant, ceilingParticipant } from "../lib/participants.js"
import { runRounds } from "../lib/rounds.js"
import { DEFAULT_MESSAGES, fmtRatioOrDash, ratiosOf, SESSIONS, throughputNotes, throughputTable } from "./relay.js"
import type { Scenario, ScenarioOutcome } from "./types.js"

const SIZE = 5120

export const acceptScenario: Scenario = {
  name: "accept",
  title: `accept only, ${SESSIONS} sessions, 5 KiB messages`,
  measures:
    "What it measures: how fast each MTA takes mail in when delivery costs nothing. smtp-source (blast.sh: " +
    `${SESSIONS} sessions, a new connection per message, 5 KiB) against Postern with \`transports: {"*": "discard:"}\`, ` +
    "Postfix with its `discard` transport (`postfix-relay.sh start PORT SINK discard`: Postfix's \"intrinsic limit\" " +
    "test) and Haraka with `HARAKA_MODE=discard NODES=2`, alternately; timed until smtp-source has every 250. " +
    "Postern and Postfix still make each message durable (fsync) before the 250 and then discard it; " +
    "**Haraka's discard writes nothing to disk**, so its figure is an SMTP-handling limit, not a durable accept rate." +
    " Every MTA is started fresh for each run and first takes a warm-up that is not measured (10% of the run, at most 2,000 messages; `--warmup N` changes it), so all are measured warm.",
  run: async (ctx): Promise<ScenarioOutcome> => {
    const { opts } = ctx
    const messages = opts.messages ?? DEFAULT_MESSAGES
    const shape = { sessions: SESSIONS, size: SIZE, budgetMs: opts.budgetMs, cpuProfDir: opts.cpuProfDir, warmup: opts.warmup }
    const participants = [...opts.mtas.map((m) => acceptParticipant(m, shape)), ceilingParticipant(shape)]
    const { results, summaries } = await runRounds("accept", participants, opts.rounds, messages, opts.budgetMs)
    for (const s of summaries) {
      if (s.key !== "ceiling" && s.rate.n > 0) ctx.acceptRates.set(s.key as "postern" | "postfix" | "haraka", s.rate.median)
    }
    const ratios = ratiosOf(summaries)
    return {
      params: { sessions: SESSIONS, size: SIZE, messages, rounds: opts.rounds, budgetS: opts.budgetMs / 1000, mtas: opts.mtas },
      tables: [throughputTable(summaries, "accept msg/s", { withAccept: false })],
      notes: [
        `Ratios of the medians: Postern/Postfix ${fmtRatioOrDash(ratios["postern/postfix"])}, Postern/Haraka ` +
          `${fmtRatioOrDash(ratios["postern/haraka"])} (Haraka's discard does not write to disk: not a like-for-like durable accept).`,
        "CPU per message here includes discarding what was accepted (the MTA is read again once it is quiet).",
        ...throughputNotes(summaries, opts.budgetMs / 1000),
      ],
      ratios,
      runs: results,
    }
  },
}
