// The SMTP session machine (Postfix's smtpd transaction state) alone on a simulated clock.
import { describe, expect, it } from "vitest"
import { SimulatedClock, createActor, type SnapshotFrom } from "xstate"
import { sessionMachine, type SessionEvent, type SessionInput } from "../../../src/machines/session.js"

const input = (over: Partial<SessionInput> = {}): SessionInput => ({
  sessionId: "s-1",
  clientAddress: "192.0.2.10",
  trusted: false,
  recipientLimit: 1000,
  ...over,
})

type Snap = SnapshotFrom<typeof sessionMachine>

const start = (inp: SessionInput = input(), snapshot?: Snap) => {
  const clock = new SimulatedClock()
  const errors: Array<unknown> = []
  const actor = createActor(sessionMachine, snapshot === undefined ? { clock, input: inp } : { clock, input: inp, snapshot })
  actor.subscribe({ error: (e) => errors.push(e) })
  actor.start()
  const send = (...events: Array<SessionEvent>) => {
    for (const e of events) actor.send(e)
  }
  return { clock, actor, errors, send, snap: () => actor.getSnapshot() }
}

const HELO: SessionEvent = { type: "smtp.helo", name: "client.example.org" }
const mail = (sender = "alice@example.org"): SessionEvent => ({ type: "smtp.mail", sender, params: { BODY: "8BITMIME" } })
const rcpt = (address: string): SessionEvent => ({ type: "smtp.rcpt.accepted", address, params: { NOTIFY: "FAILURE" } })

describe("session machine", () => {
  it("walks a whole transaction: connected → greeted → awaitingRcpt → awaitingData → receivingData → committing → greeted", () => {
    const s = start()
    expect(s.snap().value).toBe("connected")
    expect(s.snap().context).toMatchObject({ sessionId: "s-1", clientAddress: "192.0.2.10", helo: "", envelope: null, accepted: 0 })

    s.send(HELO)
    expect(s.snap().value).toBe("greeted")
    expect(s.snap().context.helo).toBe("client.example.org")

    s.send(mail())
    expect(s.snap().value).toBe("awaitingRcpt")
    expect(s.snap().context.envelope).toEqual({ sender: "alice@example.org", mailParams: { BODY: "8BITMIME" }, recipients: [] })

    s.send(rcpt("bob@example.net"))
    expect(s.snap().value).toBe("awaitingData")
    expect(s.snap().context.envelope?.recipients).toEqual([{ address: "bob@example.net", params: { NOTIFY: "FAILURE" } }])

    s.send({ type: "smtp.data.start" })
    expect(s.snap().value).toBe("receivingData")

    s.send({ type: "smtp.data.end" })
    expect(s.snap().value).toBe("committing")
    // The envelope is kept until the queue answers.
    expect(s.snap().context.envelope?.recipients).toHaveLength(1)

    s.send({ type: "queue.message.committed", queueId: "4XyZ01" })
    expect(s.snap().value).toBe("greeted")
    expect(s.snap().context.accepted).toBe(1)
    expect(s.snap().context.envelope).toBeNull()
    expect(s.errors).toEqual([])
  })

  it("the null sender is a valid MAIL FROM", () => {
    const s = start()
    s.send(HELO, mail(""))
    expect(s.snap().value).toBe("awaitingRcpt")
    expect(s.snap().context.envelope?.sender).toBe("")
  })

  it("MAIL without HELO is taken (the host decides whether to insist)", () => {
    const s = start()
    s.send(mail())
    expect(s.snap().value).toBe("awaitingRcpt")
  })

  it("the recipient limit guard: with limit 2 a third accepted rcpt is not added", () => {
    const s = start(input({ recipientLimit: 2 }))
    s.send(HELO, mail(), rcpt("a@example.net"), rcpt("b@example.net"), rcpt("c@example.net"))
    expect(s.snap().value).toBe("awaitingData")
    expect(s.snap().context.envelope?.recipients.map((r) => r.address)).toEqual(["a@example.net", "b@example.net"])
  })

  it("with limit 0 no recipient can be added at all", () => {
    const s = start(input({ recipientLimit: 0 }))
    s.send(HELO, mail(), rcpt("a@example.net"))
    expect(s.snap().value).toBe("awaitingRcpt")
    expect(s.snap().context.envelope?.recipients).toEqual([])
  })

  it("rejected recipients are counted and do not advance the transaction", () => {
    const s = start()
    s.send(HELO, mail(), { type: "smtp.rcpt.rejected", address: "x@example.net" })
    expect(s.snap().value).toBe("awaitingRcpt")
    s.send(rcpt("a@example.net"), { type: "smtp.rcpt.rejected", address: "y@example.net" })
    expect(s.snap().value).toBe("awaitingData")
    expect(s.snap().context.rejectedRecipients).toBe(2)
    expect(s.snap().context.envelope?.recipients).toHaveLength(1)
  })

  it("DATA is not accepted before a recipient", () => {
    const s = start()
    s.send(HELO, mail(), { type: "smtp.data.start" })
    expect(s.snap().value).toBe("awaitingRcpt")
  })

  it("a new MAIL in awaitingData starts a new envelope", () => {
    const s = start()
    s.send(HELO, mail("alice@example.org"), rcpt("a@example.net"), rcpt("b@example.net"))
    s.send(mail("carol@example.org"))
    expect(s.snap().value).toBe("awaitingRcpt")
    expect(s.snap().context.envelope).toEqual({ sender: "carol@example.org", mailParams: { BODY: "8BITMIME" }, recipients: [] })
  })

  it("a new MAIL in awaitingRcpt replaces the envelope", () => {
    const s = start()
    s.send(HELO, mail("alice@example.org"), mail("dave@example.org"))
    expect(s.snap().value).toBe("awaitingRcpt")
    expect(s.snap().context.envelope?.sender).toBe("dave@example.org")
  })

  it("HELO in the middle of a transaction resets it (RFC 5321 §4.1.4)", () => {
    const s = start()
    s.send(HELO, mail(), rcpt("a@example.net"), { type: "smtp.helo", name: "again.example.org" })
    expect(s.snap().value).toBe("greeted")
    expect(s.snap().context.envelope).toBeNull()
    expect(s.snap().context.helo).toBe("again.example.org")
  })

  it("aborted DATA returns to greeted with the envelope cleared and nothing accepted", () => {
    const s = start()
    s.send(HELO, mail(), rcpt("a@example.net"), { type: "smtp.data.start" }, { type: "smtp.data.aborted" })
    expect(s.snap().value).toBe("greeted")
    expect(s.snap().context).toMatchObject({ envelope: null, accepted: 0 })
  })

  it("a failed queue commit returns to greeted with the envelope cleared and nothing accepted", () => {
    const s = start()
    s.send(HELO, mail(), rcpt("a@example.net"), { type: "smtp.data.start" }, { type: "smtp.data.end" })
    s.send({ type: "queue.message.failed", reason: "disk full" })
    expect(s.snap().value).toBe("greeted")
    expect(s.snap().context).toMatchObject({ envelope: null, accepted: 0 })
  })

  it("several transactions on one connection count each accepted message", () => {
    const s = start()
    s.send(HELO)
    for (let i = 0; i < 3; i++) {
      s.send(mail(), rcpt(`r${i}@example.net`), { type: "smtp.data.start" }, { type: "smtp.data.end" })
      s.send({ type: "queue.message.committed", queueId: `Q${i}` })
    }
    expect(s.snap().value).toBe("greeted")
    expect(s.snap().context.accepted).toBe(3)
  })

  it.each([
    ["connected", [] as Array<SessionEvent>],
    ["greeted", [HELO]],
    ["awaitingRcpt", [HELO, mail()]],
    ["awaitingData", [HELO, mail(), rcpt("a@example.net")]],
    ["receivingData", [HELO, mail(), rcpt("a@example.net"), { type: "smtp.data.start" } as SessionEvent]],
    ["committing", [HELO, mail(), rcpt("a@example.net"), { type: "smtp.data.start" }, { type: "smtp.data.end" }] as Array<SessionEvent>],
  ])("smtp.close from %s → final (closed, status done)", (state, events) => {
    const s = start()
    s.send(...events)
    expect(s.snap().value).toBe(state)
    s.send({ type: "smtp.close" })
    expect(s.snap().value).toBe("closed")
    expect(s.snap().status).toBe("done")
  })

  it("persisted snapshot round trip: a session restored in awaitingData finishes its transaction the same way", () => {
    const a = start(input({ recipientLimit: 2 }))
    a.send(HELO, mail(), rcpt("a@example.net"))
    const saved = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot())) as Snap
    const b = start(input({ recipientLimit: 2 }), saved)
    expect(b.snap().value).toBe("awaitingData")
    expect(b.snap().context).toEqual(a.snap().context)
    for (const s of [a, b]) {
      s.send(rcpt("b@example.net"), rcpt("c@example.net")) // the limit survives the restore
      s.send({ type: "smtp.data.start" }, { type: "smtp.data.end" })
    }
    expect(b.snap().context.envelope?.recipients.map((r) => r.address)).toEqual(["a@example.net", "b@example.net"])
    for (const s of [a, b]) s.send({ type: "queue.message.committed", queueId: "4XyZ01" })
    expect(b.snap().value).toBe("greeted")
    expect(b.snap().context).toMatchObject({ accepted: 1, envelope: null })
    expect(b.snap().context).toEqual(a.snap().context)
  })
})

describe("the HELO name riding with MAIL", () => {
  it("a first MAIL straight from connected records the HELO name it carries", () => {
    const s = start()
    s.send({ type: "smtp.mail", sender: "alice@example.org", params: {}, helo: "client.example.org" })
    expect(s.snap().value).toBe("awaitingRcpt")
    expect(s.snap().context.helo).toBe("client.example.org")
    s.send({ type: "smtp.mail", sender: "bob@example.org", params: {} })
    expect(s.snap().context.helo).toBe("client.example.org")
  })
})
