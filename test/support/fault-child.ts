// A test-only entry point: runs Postern exactly as `postern start` does (src/cli/start.ts: the same
// supervision tree, logging and root exit), plus a named fault hook, so a child-process test can watch an
// injected actor failure escalate to the root and the process exit 70. Usage (see child.ts `script`):
//   node --import tsx test/support/fault-child.ts CONFIG.yaml FAULT
import type { FaultHooks } from "../../src/actors/fault-hooks.js"
import { runStart } from "../../src/cli/start.js"
import { loadConfig } from "../../src/config/index.js"

const FAULTS: Record<string, FaultHooks> = {
  /** Every destination actor fails as it takes a delivery: restarted with backoff until past its intensity. */
  "destination-always-fails": {
    destination: ({ event }) => {
      if (event.type === "delivery.started") throw new Error("injected destination actor fault")
    },
  },
}

const [configFile, fault] = process.argv.slice(2)
const hooks = fault === undefined ? undefined : FAULTS[fault]
if (configFile === undefined || hooks === undefined) {
  process.stderr.write(`usage: fault-child.ts CONFIG.yaml (${Object.keys(FAULTS).join("|")})\n`)
  process.exit(64)
}
runStart(loadConfig(configFile), { faultHooks: hooks })
