// The delivery machine (Postfix's smtp(8) for one request) with fake lookUpServers / openSession /
// transferMail effects answering with events, alone on a simulated clock. The verdicts follow smtp_trouble.c as
// src/transport/smtp-outcome.ts encodes it.
import { describe, expect, it } from "vitest"
import { SimulatedClock, createActor, waitFor, type SnapshotFrom } from "xstate"
import { currentTarget, deliveryMachine, type DeliveryEvent, type DeliveryInput, type DeliveryOutput } from "../../../src/machines/delivery.js"
import type { Target, TargetsResult } from "../../../src/transport/mx.js"
import type { AttemptResult } from "../../../src/transport/smtp-outcome.js"

const target = (i: number): Target => ({ address: `192.0.2.${i}`, port: 25, hostname: `mx${i}.example.net` })
const name = (t: Target) => `${t.hostname}[${t.address}]:${t.port}`
const MX1 = target(1)
const MX2 = target(2)

const A = "a@example.net"
const B = "b@example.net"
const C = "c@example.net"

interface Fakes {
  /** Default: the given targets. */
  readonly resolve?: () => Promise<TargetsResult>
  /** Default: "ready". */
  readonly open?: (t: Target) => Promise<"ready" | AttemptResult>
  /** Default: every recipient accepted, 250. `server` is the target the session was opened with. */
  readonly transfer?: (recipients: ReadonlyArray<string>, server: Target) => Promise<AttemptResult>
}

const ok = (accepted: ReadonlyArray<string>): AttemptResult => ({ stage: "done", reply: "250 2.0.0 Ok: queued as 1234", accepted, rejected: [] })

const harness = (targets: ReadonlyArray<Target>, fakes: Fakes = {}) => {
  const calls = {
    resolve: [] as Array<string>,
    open: [] as Array<Target>,
    transfer: [] as Array<{ server: Target; recipients: ReadonlyArray<string> }>,
  }
  type Self = { getSnapshot(): { status: string }; send(e: DeliveryEvent): void }
  // As the host does: the work runs outside the machine and its result comes back as an event.
  const answer = (self: Self, work: () => Promise<DeliveryEvent>, onError: (error: unknown) => DeliveryEvent) =>
    void Promise.resolve()
      .then(work)
      .then(
        (e) => self.getSnapshot().status === "active" && self.send(e),
        (error: unknown) => self.getSnapshot().status === "active" && self.send(onError(error)),
      )
  const machine = deliveryMachine.provide({
    actions: {
      lookUpServers: ({ context, self }) =>
        answer(
          self,
          async () => {
            calls.resolve.push(context.nexthop)
            const result = fakes.resolve !== undefined ? await fakes.resolve() : ({ kind: "targets", targets } as const)
            return { type: "lookup.done", result }
          },
          (error) => ({ type: "lookup.error", error }),
        ),
      openSession: ({ context, self }) =>
        answer(
          self,
          async () => {
            const t = currentTarget(context)
            calls.open.push(t)
            const r = fakes.open !== undefined ? await fakes.open(t) : "ready"
            return r === "ready" ? { type: "session.opened" } : { type: "session.refused", result: r }
          },
          (error) => ({ type: "session.error", error }),
        ),
      transferMail: ({ context, self }) =>
        answer(
          self,
          async () => {
            const server = currentTarget(context)
            calls.transfer.push({ server, recipients: context.pending })
            const result = fakes.transfer !== undefined ? await fakes.transfer(context.pending, server) : ok(context.pending)
            return { type: "transfer.done", result }
          },
          (error) => ({ type: "transfer.error", error }),
        ),
    },
  })
  return { machine, calls }
}

const run = async (
  targets: ReadonlyArray<Target>,
  fakes: Fakes = {},
  recipients: ReadonlyArray<string> = [A, B, C],
): Promise<{ output: DeliveryOutput; calls: ReturnType<typeof harness>["calls"] }> => {
  const { machine, calls } = harness(targets, fakes)
  const clock = new SimulatedClock()
  const input: DeliveryInput = { deliveryId: "d-1", nexthop: "example.net", recipients }
  const actor = createActor(machine, { clock, input })
  const errors: Array<unknown> = []
  actor.subscribe({ error: (e) => errors.push(e) })
  actor.start()
  const snap = await waitFor(actor, (s) => s.status !== "active", { timeout: 2000 })
  expect(errors).toEqual([])
  expect(snap.status).toBe("done")
  return { output: snap.output!, calls }
}

const verdictsOf = (o: DeliveryOutput) => Object.fromEntries(Object.entries(o.verdicts).map(([k, v]) => [k, v.verdict]))

describe("delivery machine", () => {
  it("one server, everything accepted → all sent, positive feedback", async () => {
    const { output, calls } = await run([MX1])
    expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "sent", [C]: "sent" })
    expect(output.siteFailure).toBe(false)
    expect(output.relay).toBe(name(MX1))
    expect(output.verdicts[A]).toMatchObject({ dsn: "2.0.0", remote: true })
    expect(calls.resolve).toEqual(["example.net"])
    expect(calls.transfer).toEqual([{ server: MX1, recipients: [A, B, C] }])
  })

  it("two targets, the first refuses the connection → the second is used, all sent", async () => {
    const { output, calls } = await run([MX1, MX2], {
      open: async (t) => (t === MX1 ? { stage: "connect", reason: "Connection refused" } : "ready"),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "sent", [C]: "sent" })
    expect(output.siteFailure).toBe(false)
    expect(output.relay).toBe(name(MX2))
    expect(calls.open).toEqual([MX1, MX2])
    expect(calls.transfer).toEqual([{ server: MX2, recipients: [A, B, C] }])
  })

  it("both refuse → all deferred 4.4.1 with siteFailure (negative feedback), no relay", async () => {
    const { output, calls } = await run([MX1, MX2], {
      open: async () => ({ stage: "connect", reason: "Connection refused" }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
    for (const v of Object.values(output.verdicts)) {
      expect(v).toMatchObject({ dsn: "4.4.1", remote: false })
      expect(v.reply).toContain(name(MX2))
      expect(v.reply).toContain("Connection refused")
    }
    expect(output.siteFailure).toBe(true)
    expect(output.relay).toBeNull()
    expect(calls.open).toEqual([MX1, MX2])
    expect(calls.transfer).toEqual([])
  })

  it("lookup failed permanently (5.1.2) → all bounced, no connection attempted", async () => {
    const reason = "Host or domain name not found. Name service error for name=example.net"
    const { output, calls } = await run([MX1], {
      resolve: async () => ({ kind: "failed", permanent: true, dsn: "5.1.2", reason }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "bounced", [B]: "bounced", [C]: "bounced" })
    expect(output.verdicts[A]).toEqual({ verdict: "bounced", dsn: "5.1.2", reply: reason, remote: false })
    expect(output.siteFailure).toBe(false)
    expect(output.relay).toBeNull()
    expect(calls.open).toEqual([])
    expect(calls.transfer).toEqual([])
  })

  it("lookup failed temporarily (4.4.3) → all deferred, no connection attempted", async () => {
    const { output, calls } = await run([MX1], {
      resolve: async () => ({ kind: "failed", permanent: false, dsn: "4.4.3", reason: "Host or domain name lookup failed" }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
    expect(output.verdicts[B]?.dsn).toBe("4.4.3")
    expect(calls.open).toEqual([])
  })

  it("RCPT 450 for one recipient on the first of two servers → retried on the second; the others sent on the first", async () => {
    const { output, calls } = await run([MX1, MX2], {
      transfer: async (rcpts, server) =>
        server === MX1
          ? { stage: "done", reply: "250 2.0.0 Ok", accepted: rcpts.filter((r) => r !== B), rejected: [{ address: B, reply: "450 4.2.1 Mailbox busy" }] }
          : ok(rcpts),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "sent", [C]: "sent" })
    expect(calls.transfer).toEqual([
      { server: MX1, recipients: [A, B, C] },
      { server: MX2, recipients: [B] },
    ])
    expect(output.verdicts[A]?.reply).toContain(name(MX1))
    expect(output.verdicts[B]?.reply).toContain(name(MX2))
    expect(output.siteFailure).toBe(false)
    expect(output.relay).toBe(name(MX2))
  })

  it("RCPT 450 on the only server → that recipient deferred (4.2.1), the others sent", async () => {
    const { output } = await run([MX1], {
      transfer: async (rcpts) => ({
        stage: "done",
        reply: "250 2.0.0 Ok",
        accepted: rcpts.filter((r) => r !== B),
        rejected: [{ address: B, reply: "450 4.2.1 Mailbox busy" }],
      }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "deferred", [C]: "sent" })
    expect(output.verdicts[B]).toMatchObject({ dsn: "4.2.1", remote: true })
    expect(output.verdicts[B]?.reply).toContain("in reply to RCPT TO command")
    expect(output.siteFailure).toBe(false)
  })

  it("RCPT 550 → that recipient bounced 5.1.1 and not retried on the next server", async () => {
    const { output, calls } = await run([MX1, MX2], {
      transfer: async (rcpts) => ({
        stage: "done",
        reply: "250 2.0.0 Ok",
        accepted: rcpts.filter((r) => r !== B),
        rejected: [{ address: B, reply: "550 5.1.1 <b@example.net>: Recipient address rejected: User unknown" }],
      }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "bounced", [C]: "sent" })
    expect(output.verdicts[B]).toMatchObject({ verdict: "bounced", dsn: "5.1.1", remote: true })
    expect(calls.open).toEqual([MX1])
    expect(calls.transfer).toHaveLength(1)
    expect(output.siteFailure).toBe(false)
  })

  it("MAIL 451 on the first server → next server; MAIL 451 on the last → all deferred, siteFailure false (positive feedback)", async () => {
    const { output, calls } = await run([MX1, MX2], {
      transfer: async () => ({ stage: "mail", reply: "451 4.3.0 Temporary failure, try later" }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
    expect(output.verdicts[A]).toMatchObject({ dsn: "4.3.0", remote: true })
    expect(output.verdicts[A]?.reply).toContain(name(MX2))
    expect(output.siteFailure).toBe(false)
    expect(output.relay).toBe(name(MX2))
    expect(calls.transfer.map((c) => c.server)).toEqual([MX1, MX2])
  })

  it("MAIL 553 → all bounced at once, the next server is not tried", async () => {
    const { output, calls } = await run([MX1, MX2], {
      transfer: async () => ({ stage: "mail", reply: "553 5.7.1 Sender address rejected" }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "bounced", [B]: "bounced", [C]: "bounced" })
    expect(output.verdicts[C]?.dsn).toBe("5.7.1")
    expect(calls.open).toEqual([MX1])
  })

  it("greeting 554 on the only server → deferred (a 5xx greeting is treated as 4xx), siteFailure true", async () => {
    const { output, calls } = await run([MX1], {
      open: async () => ({ stage: "greeting", reply: "554 5.7.1 No SMTP service here" }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
    expect(output.verdicts[A]).toMatchObject({ dsn: "4.7.1", remote: true })
    expect(output.verdicts[A]?.reply).toContain("refused to talk to me")
    expect(output.siteFailure).toBe(true)
    expect(calls.transfer).toEqual([])
  })

  it("greeting 554 on the first of two servers → the second is tried", async () => {
    const { output } = await run([MX1, MX2], {
      open: async (t) => (t === MX1 ? { stage: "greeting", reply: "554 5.7.1 go away" } : "ready"),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "sent", [C]: "sent" })
    expect(output.siteFailure).toBe(false)
  })

  it("`local` 5.6.7 (e.g. SMTPUTF8 needed, server lacks it) → bounced, no other server, no site failure", async () => {
    const { output, calls } = await run([MX1, MX2], {
      transfer: async () => ({ stage: "local", dsn: "5.6.7", reason: "SMTPUTF8 is required, but was not offered by host", permanent: true }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "bounced", [B]: "bounced", [C]: "bounced" })
    expect(output.verdicts[A]).toMatchObject({ dsn: "5.6.7", remote: false })
    expect(output.siteFailure).toBe(false)
    expect(calls.open).toEqual([MX1])
  })

  it("data 452 on the last server → the accepted recipients deferred, RCPT-rejected ones judged on their own", async () => {
    const { output } = await run([MX1], {
      transfer: async () => ({
        stage: "data",
        reply: "452 4.3.1 Insufficient system storage",
        accepted: [A, B],
        rejected: [{ address: C, reply: "550 5.1.1 unknown" }],
      }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "bounced" })
    expect(output.verdicts[A]?.dsn).toBe("4.3.1")
    expect(output.siteFailure).toBe(false)
  })

  it("io failure after the session completed a transaction on the last server → deferred 4.4.2, no site failure", async () => {
    const { output } = await run([MX1], {
      transfer: async () => ({ stage: "io", reason: "Connection reset by peer", sessionCompleted: true }),
    })
    expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
    expect(output.verdicts[A]?.dsn).toBe("4.4.2")
    expect(output.siteFailure).toBe(false)
  })

  describe("actors that throw are treated as connection / io / lookup failures, never crash", () => {
    it("openSession throws on the first of two → the second server is used", async () => {
      const { output, calls } = await run([MX1, MX2], {
        open: async (t) => {
          if (t === MX1) throw new Error("ECONNRESET")
          return "ready"
        },
      })
      expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "sent", [C]: "sent" })
      expect(calls.open).toEqual([MX1, MX2])
    })

    it("openSession throws on the only server → deferred 4.4.1, site failure", async () => {
      const { output } = await run([MX1], {
        open: async () => {
          throw new Error("ETIMEDOUT")
        },
      })
      expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(output.verdicts[A]).toMatchObject({ dsn: "4.4.1", remote: false })
      expect(output.verdicts[A]?.reply).toContain("ETIMEDOUT")
      expect(output.siteFailure).toBe(true)
    })

    it("openSession throws a non-Error → still a connection failure", async () => {
      const { output } = await run([MX1], {
        open: () => Promise.reject("plain string"),
      })
      expect(output.verdicts[A]).toMatchObject({ verdict: "deferred", dsn: "4.4.1" })
      expect(output.verdicts[A]?.reply).toContain("plain string")
    })

    it("transfer throws on the only server → lost connection 4.4.2, site failure", async () => {
      const { output } = await run([MX1], {
        transfer: async () => {
          throw new Error("socket hang up")
        },
      })
      expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(output.verdicts[A]).toMatchObject({ dsn: "4.4.2", remote: false })
      expect(output.verdicts[A]?.reply).toContain("socket hang up")
      expect(output.siteFailure).toBe(true)
    })

    it("transfer throws on the first of two → the second server gets every recipient", async () => {
      const { output, calls } = await run([MX1, MX2], {
        transfer: async (rcpts, server) => {
          if (server === MX1) throw new Error("socket hang up")
          return ok(rcpts)
        },
      })
      expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "sent", [C]: "sent" })
      expect(calls.transfer.map((c) => c.server)).toEqual([MX1, MX2])
    })

    it("resolveTargets throws → all deferred 4.4.3, no connection attempted", async () => {
      const { output, calls } = await run([MX1], {
        resolve: async () => {
          throw new Error("resolver exploded")
        },
      })
      expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(output.verdicts[A]).toMatchObject({ dsn: "4.4.3", remote: false })
      expect(output.siteFailure).toBe(false)
      expect(calls.open).toEqual([])
    })
  })

  // Postfix smtp_proto.c (smtp_xfer): "Remember this session's 'normal completion', even if the server
  // 4xx-ed some or all recipients. Connection or handshake errors with a later MX host should not cause
  // this destination be marked as unreachable." smtp_trouble.c only sets the hop status (negative
  // feedback) when SMTP_MISC_FLAG_COMPLETE_SESSION is clear.
  describe("a completed session on an earlier server means no site failure (SMTP_MISC_FLAG_COMPLETE_SESSION)", () => {
    it("RCPT 450 on the first server, the second refuses the connection → deferred, but siteFailure false", async () => {
      const { output } = await run([MX1, MX2], {
        open: async (t) => (t === MX2 ? { stage: "connect", reason: "Connection refused" } : "ready"),
        transfer: async (rcpts) => ({
          stage: "done",
          reply: "250 2.0.0 Ok",
          accepted: rcpts.filter((r) => r !== B),
          rejected: [{ address: B, reply: "450 4.2.1 Mailbox busy" }],
        }),
      })
      expect(verdictsOf(output)).toEqual({ [A]: "sent", [B]: "deferred", [C]: "sent" })
      expect(output.verdicts[B]?.dsn).toBe("4.4.1")
      expect(output.siteFailure).toBe(false)
    })

    it("MAIL 451 on the first server, greeting 421 on the second → deferred, but siteFailure false", async () => {
      const { output } = await run([MX1, MX2], {
        open: async (t) => (t === MX2 ? { stage: "greeting", reply: "421 4.3.2 Service shutting down" } : "ready"),
        transfer: async () => ({ stage: "mail", reply: "451 4.3.0 try later" }),
      })
      expect(verdictsOf(output)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(output.siteFailure).toBe(false)
    })
  })

  it("persisted snapshot round trip: a restored delivery waits for work nobody runs (why deliveries are never restored)", async () => {
    const clock = new SimulatedClock()
    const input: DeliveryInput = { deliveryId: "d-1", nexthop: "example.net", recipients: [A, B] }
    // First run: the transfer never settles, so the snapshot is taken while it is in flight.
    const first = harness([MX1], { transfer: () => new Promise<AttemptResult>(() => undefined) })
    const a = createActor(first.machine, { clock, input })
    a.subscribe({ error: () => undefined })
    a.start()
    await waitFor(a, (s) => s.value === "transferring", { timeout: 2000 })
    const saved = JSON.parse(JSON.stringify(a.getPersistedSnapshot())) as SnapshotFrom<typeof deliveryMachine>
    a.stop()
    expect(first.calls.transfer).toHaveLength(1)

    const second = harness([MX1])
    const b = createActor(second.machine, { clock: new SimulatedClock(), input, snapshot: saved })
    const errors: Array<unknown> = []
    b.subscribe({ error: (e) => errors.push(e) })
    b.start()
    await new Promise((r) => setTimeout(r, 50))
    expect(errors).toEqual([])
    // The context (targets, index, pending) came back from JSON, but entry effects do not run again on
    // restore: nothing resolves, opens or transfers, and the attempt would wait forever. Hence deliveries
    // are never restored; after a crash their recipients come back through recovery instead.
    expect(b.getSnapshot().value).toBe("transferring")
    expect(b.getSnapshot().context.pending).toEqual([A, B])
    expect(second.calls.resolve).toEqual([])
    expect(second.calls.open).toEqual([])
    expect(second.calls.transfer).toEqual([])
    b.stop()
  })
})
