#!/usr/bin/env -S node --max-semi-space-size=32
// The `postern` command: start, queue list|flush, check-config, simulate. Data goes to stdout, diagnostics to stderr;
// a bad config or a locked data folder exits non-zero with a message that says what to fix.
import { existsSync } from "node:fs"
import { parseArgs } from "node:util"
import { ConfigError, loadConfig } from "../config/index.js"
import type { PosternConfig } from "../config/types.js"
import { liveDestinationStates, queueFlush } from "./queue-flush.js"
import { queueList } from "./queue-list.js"
import { runSimulate } from "./simulate.js"
import { runStart } from "./start.js"

const USAGE = `usage:
  postern start [--config FILE]          run in the foreground (SIGTERM/SIGINT stop it cleanly)
  postern queue list [--json] [--config FILE]
  postern queue flush [--destination D] [--config FILE]   deferred mail due now, dead marks cleared
  postern check-config [--config FILE]
  postern simulate SCENARIO.yaml [--seed N] [--out DIR]   (docs/simulation.md)
Without --config, ./postern.yaml is read when it exists, else the built-in defaults apply.`

const configPath = (given: string | undefined): string | undefined =>
  given ?? (existsSync("postern.yaml") ? "postern.yaml" : undefined)

const load = (file: string | undefined): PosternConfig => {
  try {
    return loadConfig(configPath(file))
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`postern: ${e.message}\n`)
      process.exit(78) // EX_CONFIG
    }
    throw e
  }
}

const main = (argv: ReadonlyArray<string>): void => {
  const { values, positionals } = parseArgs({
    args: argv[0] === "simulate" ? ["simulate"] : [...argv], // simulate parses its own options
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      json: { type: "boolean" },
      destination: { type: "string", short: "d" },
      help: { type: "boolean", short: "h" },
    },
  })
  const [command, sub] = positionals
  if (values.help === true || command === undefined) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(command === undefined && values.help !== true ? 64 : 0)
  }
  switch (command) {
    case "simulate":
      void runSimulate(argv.slice(1))
      return
    case "start":
      runStart(load(values.config))
      return
    case "check-config": {
      const config = load(values.config)
      process.stdout.write(`config OK: ${configPath(values.config) ?? "(built-in defaults)"}; listening on ${config.listen.map((l) => `${l.host}:${l.port}`).join(", ")}; data in ${config.dataDir}\n`)
      return
    }
    case "queue":
      if (sub === "list") {
        const config = load(values.config)
        void liveDestinationStates(config.dataDir).then((states) => {
          try {
            queueList(config.dataDir, values.json === true, process.stdout, states)
          } catch (e) {
            process.stderr.write(`postern: cannot read the queue in ${config.dataDir}: ${(e as Error).message}\n`)
            process.exit(69)
          }
        })
        return
      }
      if (sub === "flush") {
        void queueFlush(load(values.config).dataDir, values.destination)
        return
      }
      break
  }
  process.stderr.write(`postern: unknown command "${positionals.join(" ")}"\n${USAGE}\n`)
  process.exit(64)
}

main(process.argv.slice(2))
