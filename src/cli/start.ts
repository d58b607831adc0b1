// `postern start`: one foreground process. Opens the data folder (exclusive lock), recovers the queue,
// listens, runs until SIGTERM/SIGINT, then stops taking mail and lets deliveries finish (at most 10 s).
import { Effect, Layer } from "effect"
import type { PosternConfig } from "../config/types.js"
import type { FaultHooks } from "../actors/fault-hooks.js"
import { startSystem } from "../actors/system.js"
import { Clock } from "../runtime/clock.js"
import { Log, makeLogger } from "../runtime/log.js"
import { Rng } from "../runtime/rng.js"
import { runMain } from "../runtime/run-main.js"
import { AppConfig } from "../runtime/services.js"
import { openQueueForWriting } from "../store/open.js"
import { Dns } from "../transport/dns.js"

const GRACE_MS = 10_000

/** What only a test harness passes (test/support/fault-child.ts); `postern start` passes nothing. */
export interface StartTestHooks {
  readonly faultHooks?: FaultHooks
}

export const startProgram = (hooks: StartTestHooks = {}) => Effect.gen(function* () {
  const config = yield* AppConfig
  const clock = yield* Clock
  const rng = yield* Rng
  const dns = yield* Dns
  const log = yield* Log
  const queue = yield* Effect.acquireRelease(
    Effect.try({
      try: () =>
        openQueueForWriting(config.get().dataDir, {
          backgroundCheckpoints: { onProblem: (message) => log.warn({ actor: "store" }, message) },
        }),
      catch: (e) => e as Error,
    }),
    (q) => Effect.sync(() => q.close()),
  )
  const system = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        startSystem({
          config: config.get,
          db: queue.db,
          durable: queue.sync,
          controlDir: queue.dataDir,
          clock,
          rng,
          dns,
          log,
          ...(hooks.faultHooks !== undefined ? { faultHooks: hooks.faultHooks } : {}),
          exit: (code, reason) => {
            log.fatal({ actor: "root", err: reason }, "supervision escalated to the root; exiting for a clean restart")
            log.flush()
            setTimeout(() => process.exit(code), 50)
          },
        }),
      catch: (e) => e as Error,
    }),
    (s) =>
      Effect.promise(async () => {
        log.info({ actor: "system" }, "stopping: no new mail; in-flight deliveries get up to 10s")
        await s.stop(GRACE_MS)
        log.info({ actor: "system" }, "stopped")
      }),
  )
  const ports = system.listening.map((l) => `${l.host}:${l.port}`).join(", ")
  process.stderr.write(`postern: listening on ${ports}; data in ${queue.dataDir}\n`)
  return yield* Effect.never
})

export const runStart = (config: PosternConfig, hooks: StartTestHooks = {}): void => {
  const log = makeLogger(config.logLevel)
  process.on("uncaughtException", (err) => {
    log.fatal({ actor: "root", err }, "uncaught exception; exiting for a clean restart")
    log.flush()
    process.exit(70)
  })
  const layers = Layer.mergeAll(
    AppConfig.layerValue(config),
    Clock.layer,
    Rng.layer,
    Dns.layer,
    Layer.succeed(Log, Log.of(log)),
  )
  runMain(
    startProgram(hooks).pipe(
      Effect.scoped,
      Effect.provide(layers),
      Effect.catch((e) =>
        Effect.sync(() => {
          process.stderr.write(`postern: ${e instanceof Error ? e.message : String(e)}\n`)
          log.flush()
          process.exit(75) // EX_TEMPFAIL: the process manager may retry
        }),
      ),
    ),
  )
}
