// Logging: pino JSON, one line per event, with Postfix's field names where they exist (queue_id, from,
// to, relay, delay, dsn, status). Data commands log to stderr so their stdout carries only data.
import { pino, type Logger } from "pino"
import { Context, Layer } from "effect"

export type { Logger }

export const makeLogger = (level: string, destination: 1 | 2 = 1): Logger =>
  pino({ level, base: { service: "postern" }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: destination, sync: false }))

export const silentLogger = (): Logger => pino({ level: "silent" })

export class Log extends Context.Service<Log, Logger>()("postern/runtime/Log") {
  static readonly layer = (level: string) => Layer.sync(Log, () => makeLogger(level))
  static readonly layerSilent = Layer.sync(Log, silentLogger)
}
