// The delivery agents' thread: a real DeliveryAgent (delivery machines, the connection cache, nodemailer
// sessions) running on the second core, fed by delivery-pool.ts. It holds no queue state: every request
// arrives with its message bytes and every answer goes back as a verdict per recipient.
import { parentPort, workerData } from "node:worker_threads"
import type { PosternConfig } from "../config/types.js"
import { Clock } from "../runtime/clock.js"
import { makeLogger } from "../runtime/log.js"
import { seededRng } from "../runtime/rng.js"
import { systemResolver, tableResolver, type DnsTable } from "../transport/dns.js"
import { DeliveryAgent } from "./delivery.js"
import type { PoolReply, PoolRequest } from "./delivery-pool.js"
import { Outbox } from "./thread-outbox.js"

interface WorkerInit {
  readonly config: PosternConfig
  readonly seed: number
  /** Tests give a DNS table; production resolves with the system resolver. */
  readonly dnsTable: DnsTable | null
}

const init = workerData as WorkerInit
let config = init.config
const port = parentPort!
const agent = new DeliveryAgent({
  config: () => config,
  clock: Clock.system,
  rng: seededRng(init.seed),
  dns: init.dnsTable === null ? systemResolver : tableResolver(init.dnsTable),
  log: makeLogger(config.logLevel, 1),
})

const outbox = new Outbox<PoolReply>((batch) => port.postMessage(batch))
const reply = (r: PoolReply) => outbox.post(r)
reply({ t: "ready" })

const handle = (m: PoolRequest): void => {
  switch (m.t) {
    case "deliver": {
      const body = Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength)
      void agent
        .deliver({ ...m.request, body: () => body })
        .then((output) => reply({ t: "done", id: m.request.id, output }))
      return
    }
    case "cancel":
      agent.cancel(m.id, m.reason)
      return
    case "config":
      config = m.config
      return
    case "abort":
      agent.abortAll()
      reply({ t: "aborted" })
      return
  }
}

// Requests arrive in batches, one per turn of the queue manager's event loop (thread-outbox.ts).
port.on("message", (batch: ReadonlyArray<PoolRequest>) => {
  for (const m of batch) handle(m)
})
