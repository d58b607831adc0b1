// The simulator's speed: 100,000 messages arriving over 5 simulated days (Poisson), to a mix of
// providers and a 300-domain long tail with greylisting, random 4xx, unknown users, a 6-hour outage
// and a few dead domains, under Postfix's defaults; run until every message is delivered, bounced or
// expired. Prints the wall and CPU time on stdout (not a test: a benchmark to compare across versions).
//
//   npm run build && node --import tsx bench/simulate.ts [--messages 100000] [--seed 1] [--out DIR]
// Without --out the run folder goes to a temporary directory that is removed afterwards.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
// The engine under test is the built one (dist/, what `postern simulate` runs; `npm run bench` builds
// first), typed by its sources.
const dist = (path: string) => new URL(`../dist/${path}`, import.meta.url).href
const { simulateOnWorker } = (await import(dist("sim/on-worker.js"))) as typeof import("../src/sim/on-worker.js")

const { values } = parseArgs({
  options: { messages: { type: "string" }, seed: { type: "string" }, out: { type: "string" } },
})
const messages = Number(values.messages ?? 100_000)
const seed = Number(values.seed ?? 1)

const document = {
  name: "bench-100k",
  description: "100,000 messages over 5 days to mixed providers and a 300-domain long tail, Postfix's defaults.",
  traffic: {
    messages,
    arrival: { process: "daily", days: 5, curve: [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 10, 12, 14, 14, 12, 9, 6, 4, 3, 2, 2, 1] },
    recipients: { min: 1, max: 2 },
    size: { distribution: "lognormal", median: "4k", p90: "20k" },
    sender: "bench@sender.example",
    domains: { "giantmail.example": 35, "bluemail.example": 20, "greymail.example": 10, "downmail.example": 5, tail: 30 },
  },
  destinations: [
    { domain: "giantmail.example", mx: ["mx1.giantmail.example", "mx2.giantmail.example"], latency: { distribution: "lognormal", median: "250ms", p90: "700ms" }, unknownRecipients: { share: 0.01 } },
    { domain: "bluemail.example", latency: { distribution: "lognormal", median: "400ms", p90: "1500ms" }, tempfail: { probability: 0.02 } },
    { domain: "greymail.example", latency: "300ms", greylist: { delay: "300s" } },
    { domain: "downmail.example", latency: "300ms", outages: [{ start: "2d", duration: "6h", mode: "refuse" }] },
    {
      generate: 300,
      name: "tail",
      domain: "site{n}.example",
      split: "zipf",
      latency: { distribution: "lognormal", median: "400ms", p90: "3s" },
      unknownRecipients: { share: 0.03 },
      greylist: { delay: "300s", ofDomains: 0.1 },
      outages: [{ start: "0s", duration: "30d", mode: "hang", ofDomains: 0.01 }],
    },
  ],
  policies: { "postfix-defaults": {} },
}

const out = values.out ?? mkdtempSync(join(tmpdir(), "postern-bench-sim-"))
const started = performance.now()
const cpuBefore = process.cpuUsage()
// As `postern simulate` runs it: on its own thread (src/sim/on-worker.ts). CPU time is the process's: both threads.
const summary = await simulateOnWorker({ scenario: { document, name: "bench-100k" }, seed, outDir: out }, (line) => void process.stderr.write(`${line}\n`))
const seconds = (performance.now() - started) / 1000
const cpu = process.cpuUsage(cpuBefore)
const cpuSeconds = (cpu.user + cpu.system) / 1e6
const s = summary.policies["postfix-defaults"]!
if (values.out === undefined) rmSync(out, { recursive: true, force: true })
process.stdout.write(
  `${JSON.stringify({
    benchmark: "simulate",
    messages: summary.messages,
    recipients: s.recipients,
    attempts: s.attempts,
    simulatedDays: Number((s.simulatedSeconds / 86400).toFixed(2)),
    wallSeconds: Number(seconds.toFixed(1)),
    cpuSeconds: Number(cpuSeconds.toFixed(1)),
    microsecondsPerAttempt: Math.round((seconds * 1e6) / Math.max(1, s.attempts)),
    delivered: s.delivered,
    bounced: s.bounced,
    expired: s.expired,
    node: process.version,
  })}\n`,
)
