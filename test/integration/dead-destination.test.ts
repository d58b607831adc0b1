// A dead destination seen live (issue 4): 100 messages queued for a destination whose server answers
// every connection with 421, beside a healthy destination taking 100 messages at the same time. Postfix's
// qmgr stops connecting once a failed cohort brings the window to 0: the destination is dead, the rest of
// its queue is deferred "delivery temporarily suspended" without a connection, and the healthy
// destination is not slowed. The figures are printed for the record (npm test's output).
import { describe, expect, test } from "vitest"
import { startBadServer, type BadServer } from "../support/bad-server.js"
import { inject, makeMessage } from "../support/inject.js"
import { withCleanup } from "../support/cleanup.js"
import { waitFor, type TestPostern } from "../support/postern.js"
import type { Receiver } from "../support/receiver.js"

const { onCleanup, receiverWith, posternWith } = withCleanup()

const MESSAGES = 100

describe("a dead destination beside a healthy one", () => {
  test("100 messages to a destination that answers 421 cost a handful of connections; the healthy one runs at full speed", async () => {
    const dead: BadServer = await startBadServer("greet421")
    onCleanup(() => dead.close())
    const healthy: Receiver = await receiverWith()
    const postern: TestPostern = await posternWith({
      transports: { "dead.test": `smtp:[127.0.0.1]:${dead.port}`, "healthy.test": `smtp:[127.0.0.1]:${healthy.port}` },
      // Long enough that the dead mark cannot expire while the test runs.
      minimalBackoffTime: "5m",
      maximalBackoffTime: "10m",
    })

    const started = performance.now()
    const send = (domain: string, i: number) =>
      inject(postern.port, {
        from: "sender@s.test",
        to: [`r${i}@${domain}`],
        body: makeMessage({ from: "sender@s.test", to: `r${i}@${domain}`, subject: `${domain} ${i}` }),
      })
    // Interleaved, ten clients at a time, as mail for both would arrive.
    for (let i = 0; i < MESSAGES; i += 10) {
      const batch: Array<Promise<{ ok: boolean }>> = []
      for (let j = i; j < i + 10; j++) batch.push(send("dead.test", j), send("healthy.test", j))
      for (const r of await Promise.all(batch)) expect(r.ok).toBe(true)
    }
    const accepted = performance.now()
    await healthy.waitForMessages(MESSAGES, 30_000)
    const healthyDone = performance.now()

    const deferredOf = () =>
      postern.queue.db
        .prepare(`SELECT count(*) AS n FROM recipients WHERE address LIKE '%@dead.test' AND state = 'pending' AND attempts >= 1`)
        .get() as { n: number }
    await waitFor("every dead.test recipient to be deferred", () => deferredOf().n === MESSAGES, 30_000)

    const reasons = postern.queue.db
      .prepare(`SELECT last_reply AS reply, count(*) AS n FROM recipients WHERE address LIKE '%@dead.test' GROUP BY last_reply ORDER BY n DESC`)
      .all() as Array<{ reply: string; n: number }>
    const suspended = reasons.filter((r) => r.reply.startsWith("delivery temporarily suspended")).reduce((n, r) => n + r.n, 0)
    const connections = dead.connections
    const seconds = (healthyDone - started) / 1000
    console.log(
      `dead destination: ${MESSAGES} messages queued, ${connections} connections made to it, ` +
        `${MESSAGES - suspended} deferred by a real 421, ${suspended} deferred "delivery temporarily suspended" without a connection; ` +
        `healthy destination beside it: ${healthy.messages.length} messages delivered in ${seconds.toFixed(2)} s ` +
        `(${(MESSAGES / seconds).toFixed(0)} msg/s, as fast as the test injected: injection took ${((accepted - started) / 1000).toFixed(2)} s, ` +
        `the last healthy message arrived ${Math.max(0, healthyDone - accepted).toFixed(0)} ms after the last 250)`,
    )
    // Postfix's arithmetic: the initial window of 5 connections fails as one cohort, and the destination is
    // dead; nothing more is attempted. A few more may be in flight when the mark is set.
    expect(connections).toBeGreaterThanOrEqual(1)
    expect(connections).toBeLessThanOrEqual(10)
    expect(suspended).toBeGreaterThanOrEqual(MESSAGES - connections)
    expect(healthy.messages).toHaveLength(MESSAGES)
    // The dead one stays dead (no connection after the mark) while its queue waits.
    await new Promise((r) => setTimeout(r, 500))
    expect(dead.connections).toBe(connections)
  }, 60_000)
})
