// The open-loop, rate-controlled injector of the latency scenario. Message i is due at t0 + i/rate on a
// fixed clock that never waits for replies (a slow MTA does not slow the offered load, unlike smtp-source's
// closed loop); each message gets its own connection, EHLO/MAIL/RCPT/DATA one command at a time, and the
// latency is from the write of the final "." to the 250. Bounded in count, in-flight connections and time.
//
//   node --import tsx bench/inject-open-loop.ts --port 2525 --rate 200 --count 4000 [--size 5120]
//        [--max-inflight 1000] [--timeout-s 30] [--drain-s 30] [--host 127.0.0.1]
// Prints one JSON object (InjectResult) on stdout; progress on stderr.
import { performance } from "node:perf_hooks"
import { pathToFileURL } from "node:url"
import { parseArgs } from "node:util"
import { buildMessage, requireLoopback, sendOne, type Transaction } from "./lib/smtp-client.js"
import { percentileSorted } from "./lib/stats.js"

export interface InjectOptions {
  readonly host: string
  readonly port: number
  /** Messages per second offered. */
  readonly rate: number
  readonly count: number
  readonly size: number
  /** Connections open at once; a message due while this many are open is skipped (counted, not sent). */
  readonly maxInFlight: number
  /** Per-transaction timeout. */
  readonly timeoutMs: number
  /** After the last send is due, how long to wait for replies still outstanding. */
  readonly drainMs: number
  readonly progress?: (line: string) => void
}

export interface LatencySummary {
  readonly n: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  readonly mean: number
}

export interface InjectResult {
  readonly offeredRate: number
  readonly count: number
  readonly sent: number
  readonly ok: number
  readonly failed: number
  readonly skipped: number
  /** Still open when the drain time ran out. */
  readonly unfinished: number
  /** From the first due time to the last due time (the offered window). */
  readonly sendWindowS: number
  /** ok / (time from the first due send to the last 250). */
  readonly achievedRate: number
  /** Write of the final "." → 250, ms. */
  readonly dotTo250Ms: LatencySummary
  /** Connect → 250 (the whole transaction as a client sees it), ms. */
  readonly connectTo250Ms: LatencySummary
  /** The parts of connectTo250Ms before the dot: TCP connect, connect→greeting, greeting→dot. */
  readonly stagesMs: { readonly connect: LatencySummary; readonly greeting: LatencySummary; readonly commands: LatencySummary }
  /** How late the injector itself started sends against the fixed clock, ms (its own health). */
  readonly scheduleLagMs: LatencySummary
  readonly maxInFlightSeen: number
  readonly errors: Readonly<Record<string, number>>
}

const summarize = (xs: Array<number>): LatencySummary => {
  xs.sort((a, b) => a - b)
  const r = (x: number) => Math.round(x * 1000) / 1000
  return {
    n: xs.length,
    p50: r(percentileSorted(xs, 50)),
    p90: r(percentileSorted(xs, 90)),
    p99: r(percentileSorted(xs, 99)),
    p999: r(percentileSorted(xs, 99.9)),
    max: r(xs.length === 0 ? Number.NaN : xs[xs.length - 1]!),
    mean: r(xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length),
  }
}

export const injectOpenLoop = (o: InjectOptions): Promise<InjectResult> => {
  requireLoopback(o.host)
  if (!(o.rate > 0) || !(o.count > 0)) throw new Error("rate and count must be positive")
  const body = buildMessage(o.size, "openloop")
  const interval = 1000 / o.rate
  const t0 = performance.now() + 100
  const lastDue = t0 + (o.count - 1) * interval
  const hardEnd = lastDue + o.drainMs
  const dot: Array<number> = []
  const whole: Array<number> = []
  const lag: Array<number> = []
  /** Where the whole-transaction time goes: connect, connect→greeting, greeting→dot (EHLO, MAIL, RCPT, DATA, body). */
  const connectStage: Array<number> = []
  const greetingStage: Array<number> = []
  const commandsStage: Array<number> = []
  const errors: Record<string, number> = {}
  let i = 0
  let sent = 0
  let ok = 0
  let failed = 0
  let skipped = 0
  let inFlight = 0
  let maxInFlightSeen = 0
  let lastReply = t0

  return new Promise((resolve) => {
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      clearInterval(ticker)
      clearTimeout(hard)
      const end = Math.max(lastReply, t0 + 1)
      resolve({
        offeredRate: o.rate,
        count: o.count,
        sent,
        ok,
        failed,
        skipped,
        unfinished: inFlight,
        sendWindowS: (lastDue - t0) / 1000,
        achievedRate: ok / ((end - t0) / 1000),
        dotTo250Ms: summarize(dot),
        connectTo250Ms: summarize(whole),
        stagesMs: { connect: summarize(connectStage), greeting: summarize(greetingStage), commands: summarize(commandsStage) },
        scheduleLagMs: summarize(lag),
        maxInFlightSeen,
        errors,
      })
    }
    const onDone = (t: Transaction) => {
      inFlight--
      if (t.ok && t.dotAt !== null && t.repliedAt !== null) {
        ok++
        dot.push(t.repliedAt - t.dotAt)
        whole.push(t.repliedAt - t.startedAt)
        if (t.connectedAt !== null && t.greetedAt !== null) {
          connectStage.push(t.connectedAt - t.startedAt)
          greetingStage.push(t.greetedAt - t.connectedAt)
          commandsStage.push(t.dotAt - t.greetedAt)
        }
        lastReply = Math.max(lastReply, t.repliedAt)
      } else {
        failed++
        const key = `${t.stage}: ${t.code ?? ""} ${t.text}`.slice(0, 160)
        errors[key] = (errors[key] ?? 0) + 1
      }
      if (i >= o.count && inFlight === 0) finish()
    }
    const launch = () => {
      const tNow = performance.now()
      while (i < o.count && t0 + i * interval <= tNow) {
        const due = t0 + i * interval
        i++
        if (inFlight >= o.maxInFlight) {
          skipped++
          continue
        }
        lag.push(tNow - due)
        sent++
        inFlight++
        maxInFlightSeen = Math.max(maxInFlightSeen, inFlight)
        void sendOne({
          host: o.host,
          port: o.port,
          body,
          from: "sender@source.test",
          to: "rcpt@dest.test",
          helo: "inject.bench.test",
          timeoutMs: o.timeoutMs,
        }).then(onDone)
      }
      if (i < o.count) setTimeout(launch, Math.max(0, t0 + i * interval - performance.now()))
      else if (inFlight === 0) finish()
    }
    const ticker = setInterval(() => {
      o.progress?.(
        `${sent}/${o.count} sent at ${o.rate}/s, ${ok} ok, ${failed} failed, ${skipped} skipped, ${inFlight} open` +
          (dot.length > 0 ? `, last dot→250 ${dot[dot.length - 1]!.toFixed(1)} ms` : ""),
      )
    }, 5_000)
    const hard = setTimeout(finish, hardEnd - performance.now() + 100)
    setTimeout(launch, Math.max(0, t0 - performance.now()))
  })
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href

if (isMain) {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      rate: { type: "string" },
      count: { type: "string" },
      size: { type: "string", default: "5120" },
      "max-inflight": { type: "string", default: "1000" },
      "timeout-s": { type: "string", default: "30" },
      "drain-s": { type: "string", default: "30" },
    },
  })
  const num = (name: string, v: string | undefined): number => {
    const n = Number(v)
    if (v === undefined || !Number.isFinite(n) || n <= 0) {
      process.stderr.write(`inject-open-loop: --${name} must be a positive number\n`)
      process.exit(64)
    }
    return n
  }
  const result = await injectOpenLoop({
    host: values.host,
    port: num("port", values.port),
    rate: num("rate", values.rate),
    count: Math.floor(num("count", values.count)),
    size: Math.floor(num("size", values.size)),
    maxInFlight: Math.floor(num("max-inflight", values["max-inflight"])),
    timeoutMs: num("timeout-s", values["timeout-s"]) * 1000,
    drainMs: num("drain-s", values["drain-s"]) * 1000,
    progress: (line) => process.stderr.write(`[inject] ${line}\n`),
  })
  process.stdout.write(`${JSON.stringify(result)}\n`)
  // Sockets still closing must not hold the process.
  process.exit(0)
}
