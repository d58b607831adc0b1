// The message machine as the queue manager hosts it (src/actors/hosted-machine.ts): the host hears a
// decision once, a batch wait, and a failing transition once, after which the message takes no more events.
import { describe, expect, it } from "vitest"
import { withFaultHook } from "../../src/actors/fault-hooks.js"
import { HostedMachine } from "../../src/actors/hosted-machine.js"
import { messageMachine, type MessageDecision, type MessageInput } from "../../src/machines/message.js"

const policy = { minimalBackoffTime: 300_000, maximalBackoffTime: 4_000_000, backoffJitter: 0, maximalQueueLifetime: 432_000_000, bounceQueueLifetime: 432_000_000 }
const input = (ids: Array<number>, moreToRead = false): MessageInput => ({ queueId: "Q1", arrivalTime: 0, nullSender: false, recipientIds: ids, moreToRead, policy })

const observed = () => {
  const seen: Array<string> = []
  const decisions: Array<MessageDecision> = []
  return {
    seen,
    decisions,
    observer: {
      changed: (s: { value: unknown }) => void (s.value === "awaitingBatch" && seen.push("awaitingBatch")),
      done: (d: MessageDecision) => void (seen.push("settled"), decisions.push(d)),
      failed: (e: unknown) => void seen.push(`failed: ${(e as Error).message}`),
    },
  }
}

describe("the message machine, hosted", () => {
  it("settles once, after the last recipient's outcome, with the machine's backoff", () => {
    const o = observed()
    const m = new HostedMachine(messageMachine, o.observer)
    m.start(input([1, 2]))
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 1, outcome: "sent" }], now: 60_000 })
    expect(o.seen).toEqual([])
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 2, outcome: "deferred" }], now: 60_000 })
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 2, outcome: "deferred" }], now: 70_000 })
    expect(o.seen).toEqual(["settled"])
    expect(o.decisions).toEqual([{ kind: "deferred", nextAttemptAt: 360_000 }])
  })

  it("waits for the next batch when more recipients are in the store", () => {
    const o = observed()
    const m = new HostedMachine(messageMachine, o.observer)
    m.start(input([1], true))
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 1, outcome: "sent" }], now: 1 })
    expect(o.seen).toEqual(["awaitingBatch"])
    m.send({ type: "recipients.read", recipientIds: [], last: true, now: 2 })
    expect(o.seen).toEqual(["awaitingBatch", "settled"])
    expect(o.decisions).toEqual([{ kind: "done" }])
  })

  it("a transition that throws fails the message once; it takes no more events", () => {
    const o = observed()
    const faulty = withFaultHook(messageMachine, ({ event }) => {
      if (event.type === "recipients.reported") throw new Error("injected")
    })
    const m = new HostedMachine(faulty, o.observer)
    m.start(input([1]))
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 1, outcome: "sent" }], now: 1 })
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 1, outcome: "sent" }], now: 2 })
    expect(o.seen).toEqual(["failed: injected"])
  })

  it("a stopped message takes no more events", () => {
    const o = observed()
    const m = new HostedMachine(messageMachine, o.observer)
    m.start(input([1]))
    m.stop()
    m.send({ type: "recipients.reported", outcomes: [{ recipientId: 1, outcome: "sent" }], now: 1 })
    expect(o.seen).toEqual([])
  })
})
