// Delivery on the second core: the queue manager's `deliver` and `cancel`, served by a DeliveryAgent in
// a worker thread (delivery-worker.ts). Requests carry the message bytes; answers are verdicts. The
// thread is supervised: if it dies, its deliveries in flight are deferred (the predecessor backs off) and
// it is restarted; past the restart intensity the failure escalates to the root.
import { availableParallelism } from "node:os"
import { Worker } from "node:worker_threads"
import type { PosternConfig } from "../config/types.js"
import type { DeliveryOutput } from "../machines/delivery.js"
import type { RestartPolicy } from "../machines/supervisor.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import type { DnsTable } from "../transport/dns.js"
import { deferredForAll, localOutcome, type DeliveryRequest } from "./delivery.js"
import { supervise } from "./supervisor.js"
import { Outbox } from "./thread-outbox.js"

/** Hosts with fewer CPUs than this run the delivery agents on the main thread when deliveryThread is auto. */
export const WORKER_MIN_CPUS = 2

/**
 * Where the delivery agents run. `auto` gives them a thread of their own when there is a second CPU for
 * it: the hand-off (message bytes copied to the thread, a wake-up each way) costs a little more CPU per
 * message, but it takes the outbound SMTP off the thread that serves every client, and the relay moved
 * more mail per second that way even on 2 shared CPUs. On one CPU the thread could only add that cost.
 */
export const deliveryThreadOf = (setting: "auto" | "worker" | "main", cpus = availableParallelism()): "worker" | "main" =>
  setting === "auto" ? (cpus >= WORKER_MIN_CPUS ? "worker" : "main") : setting

/** A delivery request as it crosses to the thread: no functions, the body as bytes. */
export type WireRequest = Omit<DeliveryRequest, "body">

export type PoolRequest =
  | { readonly t: "deliver"; readonly request: WireRequest; readonly body: Uint8Array }
  | { readonly t: "cancel"; readonly id: string; readonly reason: string }
  | { readonly t: "config"; readonly config: PosternConfig }
  | { readonly t: "abort" }

export type PoolReply =
  | { readonly t: "ready" }
  | { readonly t: "done"; readonly id: string; readonly output: DeliveryOutput }
  | { readonly t: "aborted" }

export interface DeliveryPoolDeps {
  readonly config: () => PosternConfig
  readonly clock: ClockShape
  readonly log: Logger
  readonly seed: number
  readonly dnsTable: DnsTable | null
  readonly policy: RestartPolicy
  readonly escalate: (error: unknown) => void
  /** Reads a message's bytes when the active window does not hold them (they come from the store). */
  readonly bodyBytes: (request: DeliveryRequest) => Buffer
}

interface Pending {
  readonly request: DeliveryRequest
  readonly resolve: (output: DeliveryOutput) => void
}

const workerEntry = (): { url: URL; entry: string | undefined } =>
  // Under the test runner the sources are TypeScript: a small loader brings tsx into the thread first.
  import.meta.url.endsWith(".ts")
    ? { url: new URL("./ts-worker-loader.mjs", import.meta.url), entry: new URL("./delivery-worker.ts", import.meta.url).href }
    : { url: new URL("./delivery-worker.js", import.meta.url), entry: undefined }

export class DeliveryPool {
  private worker: Worker | null = null
  /** Requests for the current thread, sent once per turn (a restarted thread gets a new outbox). */
  private outbox: Outbox<PoolRequest> | null = null
  private readonly pending = new Map<string, Pending>()
  private stopping = false
  private readyWaiters: Array<() => void> = []
  private isReady = false

  constructor(private readonly deps: DeliveryPoolDeps) {
    supervise(
      {
        id: "delivery-thread",
        parent: "qmgr",
        policy: deps.policy,
        start: (fail) => this.spawn(fail),
        escalate: deps.escalate,
      },
      deps.clock,
      deps.log,
    )
  }

  deliver(request: DeliveryRequest): Promise<DeliveryOutput> {
    const local = localOutcome(request)
    if (local !== null) return Promise.resolve(local) // discard and error need no thread
    const outbox = this.outbox
    if (this.worker === null || outbox === null || this.stopping) {
      return Promise.resolve(deferredForAll(request, "4.3.0", "delivery agents are restarting"))
    }
    let body: Buffer
    try {
      const b = request.body()
      body = Buffer.isBuffer(b) ? b : this.deps.bodyBytes(request)
    } catch (e) {
      return Promise.resolve(deferredForAll(request, "4.3.0", `cannot read the message: ${(e as Error).message}`))
    }
    return new Promise((resolve) => {
      this.pending.set(request.id, { request, resolve })
      // The thread needs the envelope and this request's recipients: not the whole message's recipient
      // list (a large list would be copied again for every request of it) nor a second copy of the body.
      const wire: WireRequest = {
        id: request.id,
        route: request.route,
        recipients: request.recipients,
        message: { ...request.message, recipients: [], body: null },
      }
      outbox.post({ t: "deliver", request: wire, body })
    })
  }

  /** Ends one delivery now: answered at once here, whatever the thread does later is discarded. */
  cancel(id: string, reason: string): void {
    const p = this.pending.get(id)
    if (p === undefined) return
    this.pending.delete(id)
    this.outbox?.post({ t: "cancel", id, reason })
    p.resolve(deferredForAll(p.request, "4.4.7", reason))
  }

  inFlight(): number {
    return this.pending.size
  }

  /** Resolves once the thread has loaded and can deliver (or after `timeoutMs`, whichever comes first). */
  ready(timeoutMs = 10_000): Promise<void> {
    if (this.isReady) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      this.readyWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Shutdown after the grace period: the thread ends; recipients still in flight stay queued. */
  async abortAll(): Promise<void> {
    this.stopping = true
    const w = this.worker
    this.worker = null
    this.outbox = null
    this.pending.clear()
    if (w !== null) await w.terminate()
  }

  private spawn(fail: (error: unknown, context?: Record<string, unknown>) => void): void {
    const { url, entry } = workerEntry()
    const worker = new Worker(url, {
      workerData: { config: this.deps.config(), seed: this.deps.seed, dnsTable: this.deps.dnsTable, entry },
    })
    worker.on("message", (batch: ReadonlyArray<PoolReply>) => {
      for (const m of batch) this.answer(m)
    })
    const died = (error: unknown) => {
      if (this.worker !== worker) return
      this.worker = null
      this.outbox = null
      const lost = [...this.pending.values()]
      this.pending.clear()
      for (const p of lost) p.resolve(deferredForAll(p.request, "4.3.0", "delivery agent failure", true))
      if (!this.stopping) fail(error, { queue_ids: lost.map((p) => p.request.message.queueId) })
    }
    worker.on("error", died)
    worker.on("exit", (code) => died(new Error(`delivery thread exited with code ${code}`)))
    worker.unref()
    this.worker = worker
    this.outbox = new Outbox((batch) => worker.postMessage(batch))
  }

  private answer(m: PoolReply): void {
    if (m.t === "ready") {
      this.isReady = true
      for (const w of this.readyWaiters.splice(0)) w()
      return
    }
    if (m.t !== "done") return
    const p = this.pending.get(m.id)
    if (p === undefined) return // cancelled: a late answer is discarded
    this.pending.delete(m.id)
    p.resolve(m.output)
  }
}
