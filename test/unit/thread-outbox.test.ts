// The delivery thread's outbox: what one turn posts crosses as one batch, in order; the next turn's
// posts make a new batch.
import { describe, expect, it } from "vitest"
import { Outbox } from "../../src/actors/thread-outbox.js"

describe("Outbox", () => {
  it("sends what one turn posts as one batch, in order, after the turn's synchronous work", async () => {
    const sent: Array<ReadonlyArray<number>> = []
    const outbox = new Outbox<number>((batch) => sent.push(batch))
    // As when a group commit resolves a batch: continuations already queued run before the flush.
    const later = Promise.resolve().then(() => outbox.post(3))
    outbox.post(1)
    outbox.post(2)
    expect(sent).toEqual([])
    await later
    await new Promise((r) => setImmediate(r))
    expect(sent).toEqual([[1, 2, 3]])
  })

  it("starts a new batch on the next turn", async () => {
    const sent: Array<ReadonlyArray<string>> = []
    const outbox = new Outbox<string>((batch) => sent.push(batch))
    outbox.post("a")
    await new Promise((r) => setImmediate(r))
    outbox.post("b")
    outbox.post("c")
    await new Promise((r) => setImmediate(r))
    expect(sent).toEqual([["a"], ["b", "c"]])
  })
})
