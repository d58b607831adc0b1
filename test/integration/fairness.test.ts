// Fairness and bounded memory over real sockets: a one-recipient message is not stuck behind a
// 10,000-recipient list to the same destination, and a message with more recipients than the in-memory
// bound is read from the store in batches, delivered completely, never holding more than the bound.
import { describe, expect, test } from "vitest"
import { inject, makeMessage } from "../support/inject.js"
import type { Receiver } from "../support/receiver.js"
import { tempDir, waitFor } from "../support/postern.js"
import { withCleanup } from "../support/cleanup.js"

const { receiverWith, posternWith } = withCleanup()

/** Queues a message through the store's own commit (smtpd's recipient limit would get in the way). */
const seedList = async (dataDir: string, queueId: string, recipients: number): Promise<void> => {
  const { openQueueForWriting } = await import("../../src/store/open.js")
  const { commitMessage } = await import("../../src/store/queue-store.js")
  const q = openQueueForWriting(dataDir)
  const body = Buffer.from(makeMessage({ from: "list@s.test", to: "members@d.test", subject: "the list" }))
  commitMessage(
    q.db,
    {
      queueId,
      arrivalTime: Date.now(),
      sender: "list@s.test",
      mailParams: {},
      client: { address: "127.0.0.1", helo: "x", hostname: "" },
      recipients: Array.from({ length: recipients }, (_, i) => ({ address: `m${i}@d.test`, params: {} })),
      size: body.length,
    },
    [body],
    0,
    null,
    false,
    0,
  )
  q.close()
}

const delivered = (r: Receiver) => r.messages.reduce((n, m) => n + m.to.length, 0)

describe("fairness between messages to one destination", () => {
  test("a one-recipient message is delivered while a 10,000-recipient list to the same destination is in progress", async () => {
    const dataDir = tempDir()
    await seedList(dataDir, "BIGLIST1", 10_000)
    // A slow server and a window of 2: the list's 200 transactions (50 recipients each) take seconds.
    const receiver = await receiverWith({ dataDelayMs: 30 })
    const postern = await posternWith(
      {
        transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` },
        initialDestinationConcurrency: 2,
        defaultDestinationConcurrencyLimit: 2,
      },
      { dataDir },
    )
    await waitFor("the list to be in progress", () => receiver.messages.length >= 10)
    const sentAt = Date.now()
    const r = await inject(postern.port, { from: "s@s.test", to: ["one@d.test"], body: makeMessage({ from: "s@s.test", to: "one@d.test", subject: "small" }) })
    expect(r.ok).toBe(true)
    await waitFor("the whole list", () => delivered(receiver) === 10_001, 60_000)

    const small = receiver.messages.find((m) => m.to.includes("one@d.test"))!
    const list = receiver.messages.filter((m) => m !== small)
    expect(list).toHaveLength(200)
    const lastOfList = Math.max(...list.map((m) => m.at))
    expect(small.at).toBeLessThan(lastOfList)
    // It took the next free slot: most of the list was delivered after it, and it waited well under a second
    // (one transaction of the list is ~30 ms; in FIFO order it would wait for all 190 remaining ones).
    // (Margins for a loaded machine: in one run 187 of 200 came after it, 412 ms after the client began
    // its SMTP session, while the list took 8 s.)
    expect(list.filter((m) => m.at > small.at).length).toBeGreaterThan(100)
    expect(small.at - sentAt).toBeLessThan(2500)
  })
})

describe("recipients read in bounded batches (qmgrMessageRecipientLimit)", () => {
  test("a 1,000-recipient message with a bound of 100 is delivered completely, never holding more than 100, and decided after its last batch", async () => {
    const dataDir = tempDir()
    await seedList(dataDir, "BATCHED1", 1000)
    // Two recipients in different batches are deferred: the message is decided (deferred) only after the last.
    const receiver = await receiverWith({ rcpt: (a) => (a === "m5@d.test" || a === "m950@d.test" ? { code: 451, message: "4.2.0 try later" } : undefined) })
    const postern = await posternWith(
      {
        transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` },
        qmgrMessageRecipientLimit: 100,
        qmgrMessageRecipientMinimum: 10,
        minimalBackoffTime: "10m",
        maximalBackoffTime: "10m",
      },
      { dataDir },
    )
    const db = postern.queue.db
    const rows = () => db.prepare("SELECT address, state, attempts FROM recipients ORDER BY id").all() as Array<{ address: string; state: string; attempts: number }>
    await waitFor("the message to be decided", () => rows().length === 2 && rows().every((r) => r.state === "pending"), 30_000)
    expect(rows()).toEqual([
      { address: "m5@d.test", state: "pending", attempts: 1 },
      { address: "m950@d.test", state: "pending", attempts: 1 },
    ])
    const got = receiver.messages.flatMap((m) => m.to)
    expect(got).toHaveLength(998)
    expect(new Set(got).size).toBe(998)
    const memory = postern.system.qmgr.recipientsInMemory()
    expect(memory.peak).toBeGreaterThan(0)
    expect(memory.peak).toBeLessThanOrEqual(100)
    expect(memory.now).toBe(0)
    // Ten batches of 100, each read after the one before finished: one attempt per recipient, no more.
    expect((db.prepare("SELECT count(*) AS n FROM attempts").get() as { n: number }).n).toBe(1000)
  })

  test("fresh mail from smtpd with more recipients than the bound keeps a batch in memory and reads the rest from the store", async () => {
    const receiver = await receiverWith()
    const postern = await posternWith({ transports: { "*": `smtp:[127.0.0.1]:${receiver.port}` }, qmgrMessageRecipientLimit: 20, qmgrMessageRecipientMinimum: 5 })
    const to = Array.from({ length: 50 }, (_, i) => `r${i}@d.test`)
    expect((await inject(postern.port, { from: "s@s.test", to, body: makeMessage({ from: "s@s.test", to: "r0@d.test" }) })).ok).toBe(true)
    await waitFor("every recipient", () => delivered(receiver) === 50)
    await waitFor("the queue to empty", () => (postern.queue.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n === 0)
    expect(receiver.messages.flatMap((m) => m.to).sort()).toEqual([...to].sort())
    expect(postern.system.qmgr.recipientsInMemory().peak).toBeLessThanOrEqual(20)
  })
})
