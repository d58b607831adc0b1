// The destination queue's host (src/actors/destination.ts) alone, on a ManualClock: a destination actor that
// fails while deliveries are running is restarted knowing them, so its window is never exceeded and
// busy()/isIdle() count what really runs; a queued request whose message left the window never starts.
import { describe, expect, it } from "vitest"
import type { DeliveryRequest } from "../../src/actors/delivery.js"
import { DestinationQueue } from "../../src/actors/destination.js"
import type { DeliveryOutput } from "../../src/machines/delivery.js"
import { parseFeedback } from "../../src/machines/feedback.js"
import { ManualClock } from "../../src/runtime/clock.js"
import { silentLogger } from "../../src/runtime/log.js"

const request = (messageId: number, n: number): DeliveryRequest =>
  ({
    id: `${messageId}.${n}`,
    route: { service: "smtp", serviceConfig: { type: "smtp" }, nexthop: "[192.0.2.1]:25", key: "smtp:[192.0.2.1]:25" },
    message: { id: messageId, queueId: `Q${messageId}`, arrivalTime: 0, sender: "s@x.test", mailParams: {}, size: 10, recipients: [], body: null },
    recipients: [{ id: messageId * 100 + n, address: `r${n}@x.test`, params: {}, attempts: 0 }],
    body: () => Buffer.from("x"),
  }) as unknown as DeliveryRequest

const sent = (r: DeliveryRequest): DeliveryOutput => ({
  verdicts: Object.fromEntries(r.recipients.map((x) => [x.address, { verdict: "sent" as const, dsn: "2.0.0", reply: "250 ok", remote: true }])),
  siteFailure: false,
  relay: "mx[192.0.2.1]:25",
})

const setup = (opts: { failOnStart?: number; isCurrent?: (r: DeliveryRequest) => boolean } = {}) => {
  const clock = new ManualClock(1_000_000)
  const running = new Map<string, (o: DeliveryOutput) => void>()
  let peak = 0
  let starts = 0
  const done: Array<string> = []
  const outputs = new Map<string, DeliveryOutput>()
  const q = new DestinationQueue(
    "smtp:[192.0.2.1]:25",
    {
      name: "smtp:[192.0.2.1]:25",
      deadTime: 60_000,
      limits: { initial: 2, limit: 2, positive: parseFeedback("1")!, negative: parseFeedback("1")!, cohortLimit: 1 },
    },
    {
      clock,
      log: silentLogger(),
      deliver: (r) =>
        new Promise((resolve) => {
          running.set(r.id, resolve)
          peak = Math.max(peak, running.size)
        }),
      done: (r, output) => {
        running.delete(r.id)
        done.push(r.id)
        outputs.set(r.id, output)
      },
      restartPolicy: { maxRestarts: 5, withinMs: 60_000, backoffMs: 100, maxBackoffMs: 1_000 },
      escalate: () => undefined,
      faultHook: ({ event }) => {
        if (event.type === "delivery.started" && ++starts === opts.failOnStart) throw new Error("injected")
      },
      ...(opts.isCurrent !== undefined ? { isCurrent: opts.isCurrent } : {}),
    },
  )
  const finish = async (id: string, r: DeliveryRequest) => {
    running.get(id)!(sent(r))
    await new Promise((res) => setImmediate(res))
  }
  const failSite = async (id: string) => {
    running.get(id)!({ verdicts: {}, siteFailure: true, relay: null })
    await new Promise((res) => setImmediate(res))
  }
  return { clock, q, running, done, outputs, finish, failSite, peak: () => peak }
}

describe("destination queue host", () => {
  it("a machine restarted while deliveries run counts them: the window (2) is never exceeded", async () => {
    const t = setup({ failOnStart: 2 })
    const reqs = [1, 2, 3, 4].map((n) => request(n, 1))
    for (const r of reqs) t.q.enqueue(r)
    // The first started; the actor failed taking the second (it goes back to the head of the line).
    expect(t.running.size).toBe(1)
    expect(t.q.busy()).toBe(1)
    t.clock.advance(100) // the supervisor's restart backoff
    expect(t.q.busy()).toBe(2)
    expect(t.running.size).toBe(2)
    expect(t.q.isIdle()).toBe(false)
    await t.finish(reqs[0]!.id, reqs[0]!)
    expect(t.running.size).toBe(2)
    expect(t.peak()).toBe(2)
    for (const r of reqs.slice(1)) if (t.running.has(r.id)) await t.finish(r.id, r)
    for (const r of reqs.slice(1)) if (t.running.has(r.id)) await t.finish(r.id, r)
    expect(t.done.sort()).toEqual(reqs.map((r) => r.id).sort())
    expect(t.peak()).toBe(2)
    expect(t.q.busy()).toBe(0)
    expect(t.q.isIdle()).toBe(true)
  })

  it("a queued request whose message left the window never starts", async () => {
    const gone = new Set<number>([2])
    const t = setup({ isCurrent: (r) => !gone.has(r.message.id) })
    const a = request(1, 1)
    const b = request(2, 1)
    const c = request(3, 1)
    t.q.enqueue(a)
    t.q.enqueue(b)
    t.q.enqueue(c)
    expect([...t.running.keys()].sort()).toEqual([a.id, c.id])
    await t.finish(a.id, a)
    await t.finish(c.id, c)
    expect(t.done.sort()).toEqual([a.id, c.id])
    expect(t.q.isIdle()).toBe(true)
  })

  it("a dead destination defers a request at once, as enqueue() would, until it revives", async () => {
    const t = setup()
    const [a, b] = [request(1, 1), request(2, 1)]
    t.q.enqueue(a)
    t.q.enqueue(b)
    expect(t.q.isSuspended()).toBe(false)
    // Two site failures at window 2 make a failed cohort: dead.
    await t.failSite(a.id)
    await t.failSite(b.id)
    expect(t.q.status().state).toBe("dead")
    expect(t.q.isSuspended()).toBe(true)
    const c = request(3, 1)
    const d = request(4, 1)
    const direct = t.q.deferSuspended(c)
    t.q.enqueue(d)
    expect(t.done).toEqual([a.id, b.id, d.id])
    expect(direct.verdicts["r1@x.test"]).toEqual(t.outputs.get(d.id)!.verdicts["r1@x.test"])
    expect(direct.verdicts["r1@x.test"]).toMatchObject({ verdict: "deferred", dsn: "4.4.1" })
    expect(direct.verdicts["r1@x.test"]!.reply).toMatch(/^delivery temporarily suspended: /)
    expect(t.running.size).toBe(0)
    t.clock.advance(60_000) // deadTime: revived
    expect(t.q.isSuspended()).toBe(false)
  })
})
