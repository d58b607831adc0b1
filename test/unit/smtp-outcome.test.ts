// Postfix's SMTP client failure policy (smtp_trouble.c) as src/transport/smtp-outcome.ts encodes it:
// table-driven over enhancedCode, replyCode and classifyAttempt.
import { describe, expect, it } from "vitest"
import {
  classifyAttempt,
  enhancedCode,
  oneLine,
  replyCode,
  type AttemptResult,
  type Classification,
} from "../../src/transport/smtp-outcome.js"

const SERVER = "mx1.example.net[192.0.2.1]:25"
const A = "a@example.net"
const B = "b@example.net"
const C = "c@example.net"
const ALL = [A, B, C] as const

const classify = (result: AttemptResult, finalServer: boolean, recipients: ReadonlyArray<string> = ALL): Classification =>
  classifyAttempt(result, recipients, finalServer, SERVER)

const verdicts = (c: Classification) => Object.fromEntries([...c.verdicts].map(([k, v]) => [k, v.verdict]))

describe("replyCode", () => {
  it.each([
    ["250 2.0.0 Ok", 250],
    ["451 x", 451],
    ["550-first line\r\n550 last line", 550],
    ["", 0],
    ["garbage", 0],
    ["55 short", 0],
  ])("%j → %i", (reply, code) => {
    expect(replyCode(reply)).toBe(code)
  })
})

describe("enhancedCode", () => {
  it.each([
    ["550 5.1.1 x", "5.1.1"],
    ["550 5.1.1", "5.1.1"],
    ["550 no", "5.0.0"],
    ["451 x", "4.0.0"],
    ["421 4.3.2 Service shutting down", "4.3.2"],
    ["250 2.0.0 Ok: queued", "2.0.0"],
    ["250 Ok", "2.0.0"],
    ["250 2.1.5 Ok", "2.1.5"],
    ["550-5.7.1 first line\r\n550 5.7.1 last line", "5.7.1"],
    ["554 5.7.100 three-digit detail", "5.7.100"],
    // Not a valid enhanced code: fall back to the basic code's class.
    ["550 5.1.1x", "5.0.0"],
    ["550 5.1234.1 too long", "5.0.0"],
    ["550 6.1.1 bad class", "5.0.0"],
    ["550 user 5.1.1 later in the text", "5.0.0"],
    // The enhanced code is returned as given, even when its class disagrees with the basic code.
    ["450 5.2.0 odd", "5.2.0"],
  ])("%j → %s", (reply, code) => {
    expect(enhancedCode(reply)).toBe(code)
  })
})

describe("oneLine", () => {
  it("joins a multi-line reply and squeezes white space", () => {
    expect(oneLine("550-5.7.1 first\r\n550 5.7.1   last \n")).toBe("550-5.7.1 first 550 5.7.1 last")
  })
})

describe("classifyAttempt", () => {
  describe("connect failures", () => {
    it("not the final server → every recipient goes to the next server, no verdict, no site failure", () => {
      const c = classify({ stage: "connect", reason: "Connection refused" }, false)
      expect(c.verdicts.size).toBe(0)
      expect(c.tryNextServer).toEqual(ALL)
      expect(c.siteFailure).toBe(false)
    })

    it("the final server → all deferred 4.4.1 (our own text), site failure", () => {
      const c = classify({ stage: "connect", reason: "Connection refused" }, true)
      expect(verdicts(c)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(c.verdicts.get(A)).toEqual({
        verdict: "deferred",
        dsn: "4.4.1",
        reply: `connect to ${SERVER}: Connection refused`,
        remote: false,
      })
      expect(c.tryNextServer).toEqual([])
      expect(c.siteFailure).toBe(true)
    })
  })

  describe("greeting: a 5xx greeting never bounces (smtp_skip_5xx_greeting = yes)", () => {
    it.each([
      ["554 5.7.1 No SMTP service here", "4.7.1"],
      ["550 go away", "4.0.0"],
      ["421 4.3.2 Service not available", "4.3.2"],
      ["421 busy", "4.0.0"],
    ])("%j on the final server → all deferred %s, site failure", (reply, dsn) => {
      const c = classify({ stage: "greeting", reply }, true)
      expect(verdicts(c)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(c.verdicts.get(B)).toMatchObject({ dsn, remote: true })
      expect(c.verdicts.get(B)?.reply).toBe(`host ${SERVER} refused to talk to me: ${reply}`)
      expect(c.siteFailure).toBe(true)
    })

    it.each(["554 5.7.1 No SMTP service here", "421 4.3.2 busy"])("%j on a non-final server → next server", (reply) => {
      const c = classify({ stage: "greeting", reply }, false)
      expect(c.verdicts.size).toBe(0)
      expect(c.tryNextServer).toEqual(ALL)
      expect(c.siteFailure).toBe(false)
    })
  })

  describe("io (lost connection, timeout)", () => {
    it.each([
      [false, true],
      [true, false],
    ])("on the final server with sessionCompleted %s → deferred 4.4.2, siteFailure %s", (sessionCompleted, site) => {
      const c = classify({ stage: "io", reason: "Connection timed out", sessionCompleted }, true)
      expect(verdicts(c)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(c.verdicts.get(A)).toMatchObject({ dsn: "4.4.2", remote: false })
      expect(c.verdicts.get(A)?.reply).toBe(`lost connection with ${SERVER}: Connection timed out`)
      expect(c.siteFailure).toBe(site)
    })

    it("on a non-final server → next server", () => {
      const c = classify({ stage: "io", reason: "reset", sessionCompleted: false }, false)
      expect(c.tryNextServer).toEqual(ALL)
      expect(c.verdicts.size).toBe(0)
    })
  })

  describe("MAIL FROM", () => {
    it("4xx on a non-final server → next server", () => {
      const c = classify({ stage: "mail", reply: "451 4.3.0 try later" }, false)
      expect(c.tryNextServer).toEqual(ALL)
      expect(c.verdicts.size).toBe(0)
      expect(c.siteFailure).toBe(false)
    })

    it("4xx on the final server → all deferred, no site failure (positive feedback)", () => {
      const c = classify({ stage: "mail", reply: "451 4.3.0 try later" }, true)
      expect(verdicts(c)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(c.verdicts.get(A)).toMatchObject({ dsn: "4.3.0", remote: true, reply: `host ${SERVER} said: 451 4.3.0 try later` })
      expect(c.siteFailure).toBe(false)
    })

    it.each([false, true])("5xx → all bounced at once (finalServer %s), nothing for the next server", (finalServer) => {
      const c = classify({ stage: "mail", reply: "553 5.7.1 Sender address rejected" }, finalServer)
      expect(verdicts(c)).toEqual({ [A]: "bounced", [B]: "bounced", [C]: "bounced" })
      expect(c.verdicts.get(C)?.dsn).toBe("5.7.1")
      expect(c.tryNextServer).toEqual([])
      expect(c.siteFailure).toBe(false)
    })
  })

  describe("RCPT TO (stage done with rejections)", () => {
    const rcptResult = (reply: string): AttemptResult => ({
      stage: "done",
      reply: "250 2.0.0 Ok: queued",
      accepted: [A, C],
      rejected: [{ address: B, reply }],
    })

    it("4xx on a non-final server → that recipient to the next server, the others sent", () => {
      const c = classify(rcptResult("450 4.2.1 Mailbox busy"), false)
      expect(verdicts(c)).toEqual({ [A]: "sent", [C]: "sent" })
      expect(c.tryNextServer).toEqual([B])
      expect(c.siteFailure).toBe(false)
    })

    it("4xx on the final server → that recipient deferred, the others sent", () => {
      const c = classify(rcptResult("450 4.2.1 Mailbox busy"), true)
      expect(verdicts(c)).toEqual({ [A]: "sent", [B]: "deferred", [C]: "sent" })
      expect(c.verdicts.get(B)).toMatchObject({
        dsn: "4.2.1",
        remote: true,
        reply: `host ${SERVER} said: 450 4.2.1 Mailbox busy (in reply to RCPT TO command)`,
      })
      expect(c.verdicts.get(A)).toEqual({ verdict: "sent", dsn: "2.0.0", reply: `${SERVER} said: 250 2.0.0 Ok: queued`, remote: true })
    })

    it.each([false, true])("5xx → that recipient bounced with its code, not retried (finalServer %s)", (finalServer) => {
      const c = classify(rcptResult("550 5.1.1 <b@example.net>: User unknown"), finalServer)
      expect(verdicts(c)).toEqual({ [A]: "sent", [B]: "bounced", [C]: "sent" })
      expect(c.verdicts.get(B)?.dsn).toBe("5.1.1")
      expect(c.tryNextServer).toEqual([])
    })

    it("every recipient rejected (no DATA was sent, reply empty) → each judged on its own", () => {
      const c = classify(
        {
          stage: "done",
          reply: "",
          accepted: [],
          rejected: [
            { address: A, reply: "550 5.1.1 unknown" },
            { address: B, reply: "452 4.5.3 too many recipients" },
          ],
        },
        true,
        [A, B],
      )
      expect(verdicts(c)).toEqual({ [A]: "bounced", [B]: "deferred" })
      expect(c.verdicts.get(B)?.dsn).toBe("4.5.3")
    })
  })

  describe("end of DATA", () => {
    const dataResult = (reply: string): AttemptResult => ({
      stage: "data",
      reply,
      accepted: [A, B],
      rejected: [{ address: C, reply: "450 4.2.1 busy" }],
    })

    it("4xx on a non-final server → the accepted and the 4xx-rejected go to the next server", () => {
      const c = classify(dataResult("452 4.3.1 Insufficient storage"), false)
      expect(c.verdicts.size).toBe(0)
      expect([...c.tryNextServer].sort()).toEqual([A, B, C])
    })

    it("4xx on the final server → all deferred", () => {
      const c = classify(dataResult("452 4.3.1 Insufficient storage"), true)
      expect(verdicts(c)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(c.verdicts.get(A)?.reply).toBe(`host ${SERVER} said: 452 4.3.1 Insufficient storage (in reply to end of DATA command)`)
    })

    it("5xx → the accepted recipients bounced (content rejected)", () => {
      const c = classify(dataResult("554 5.6.0 Message content rejected"), true)
      expect(verdicts(c)).toEqual({ [A]: "bounced", [B]: "bounced", [C]: "deferred" })
      expect(c.verdicts.get(A)?.dsn).toBe("5.6.0")
    })
  })

  it("LMTP: one reply per accepted recipient after DATA", () => {
    const c = classify(
      {
        stage: "done",
        reply: "250 2.0.0 Ok",
        accepted: [A, B, C],
        rejected: [],
        perRecipient: [
          { address: A, reply: "250 2.1.5 Delivered" },
          { address: B, reply: "452 4.2.2 Mailbox full" },
          { address: C, reply: "550 5.2.1 Mailbox disabled" },
        ],
      },
      true,
    )
    expect(verdicts(c)).toEqual({ [A]: "sent", [B]: "deferred", [C]: "bounced" })
    expect(c.verdicts.get(A)?.dsn).toBe("2.1.5")
    expect(c.verdicts.get(B)?.dsn).toBe("4.2.2")
    expect(c.verdicts.get(C)?.dsn).toBe("5.2.1")
    // each with the server's own text, and where it was said
    expect(c.verdicts.get(A)?.reply).toBe(`${SERVER} said: 250 2.1.5 Delivered`)
    expect(c.verdicts.get(B)?.reply).toBe(`host ${SERVER} said: 452 4.2.2 Mailbox full (in reply to end of DATA command)`)
    expect(c.verdicts.get(C)?.reply).toBe(`host ${SERVER} said: 550 5.2.1 Mailbox disabled (in reply to end of DATA command)`)
  })

  it("LMTP: a refusal at RCPT and replies after DATA in one transaction", () => {
    const c = classify(
      {
        stage: "done",
        reply: "250 2.0.0 ok",
        accepted: [A, B],
        rejected: [{ address: C, reply: "550 5.1.1 <c@example.net> User doesn't exist: c@example.net" }],
        perRecipient: [
          { address: A, reply: "250 2.0.0 <a@example.net> Saved" },
          { address: B, reply: "452 4.2.2 Quota exceeded" },
        ],
      },
      true,
    )
    expect(verdicts(c)).toEqual({ [A]: "sent", [B]: "deferred", [C]: "bounced" })
    expect(c.verdicts.get(C)?.reply).toBe(`host ${SERVER} said: 550 5.1.1 <c@example.net> User doesn't exist: c@example.net (in reply to RCPT TO command)`)
    expect(c.siteFailure).toBe(false)
  })

  describe("TLS (not offered, refused, handshake, certificate): Postfix's smtp_site_fail", () => {
    const tls: AttemptResult = { stage: "tls", dsn: "4.7.4", reason: `TLS is required, but was not offered by host ${SERVER}`, handshake: false }
    it("not the final server: everyone goes to the next one, no verdict yet, not a site failure yet", () => {
      const c = classify(tls, false)
      expect(c.verdicts.size).toBe(0)
      expect(c.tryNextServer).toEqual(ALL)
      expect(c.siteFailure).toBe(false)
    })
    it("the final server: everyone deferred with our reason, and the whole site failed", () => {
      const c = classify(tls, true)
      expect(verdicts(c)).toEqual({ [A]: "deferred", [B]: "deferred", [C]: "deferred" })
      expect(c.verdicts.get(A)).toEqual({ verdict: "deferred", dsn: "4.7.4", reply: `TLS is required, but was not offered by host ${SERVER}`, remote: false })
      expect(c.siteFailure).toBe(true)
    })
  })

  describe("local decisions", () => {
    it.each([
      [true, "bounced"],
      [false, "deferred"],
    ] as const)("permanent %s → all %s, never the next server, no site failure", (permanent, verdict) => {
      const c = classify({ stage: "local", dsn: permanent ? "5.6.7" : "4.3.5", reason: "SMTPUTF8 required", permanent }, false)
      expect(verdicts(c)).toEqual({ [A]: verdict, [B]: verdict, [C]: verdict })
      expect(c.verdicts.get(A)).toEqual({ verdict, dsn: permanent ? "5.6.7" : "4.3.5", reply: "SMTPUTF8 required", remote: false })
      expect(c.tryNextServer).toEqual([])
      expect(c.siteFailure).toBe(false)
    })
  })

  describe("a 4xx reply never bounces, at any stage, on any server", () => {
    const FOUR = ["421 4.3.2 shutting down", "450 4.2.1 busy", "451 no enhanced code", "452 5.3.4 mismatched class"]
    const results = (reply: string): Array<[string, AttemptResult]> => [
      ["greeting", { stage: "greeting", reply }],
      ["mail", { stage: "mail", reply }],
      ["rcpt", { stage: "done", reply: "250 Ok", accepted: [A], rejected: [{ address: B, reply }, { address: C, reply }] }],
      ["data", { stage: "data", reply, accepted: [A, B, C], rejected: [] }],
      ["lmtp", { stage: "done", reply: "250 Ok", accepted: [A, B, C], rejected: [], perRecipient: ALL.map((address) => ({ address, reply })) }],
    ]
    const cases = FOUR.flatMap((reply) => results(reply).flatMap(([stage, r]) => [true, false].map((finalServer) => [stage, reply, finalServer, r] as const)))

    it.each(cases)("%s %j, finalServer %s", (_stage, _reply, finalServer, result) => {
      const c = classify(result, finalServer)
      for (const [, v] of c.verdicts) {
        expect(v.verdict).not.toBe("bounced")
        if (v.verdict === "deferred") expect(v.dsn.startsWith("4.")).toBe(true)
      }
      // Nobody is lost: every recipient has a verdict or goes to the next server.
      const covered = new Set([...c.verdicts.keys(), ...c.tryNextServer])
      expect([...covered].sort()).toEqual([...ALL].sort())
      if (finalServer) expect(c.tryNextServer).toEqual([])
    })
  })

  describe("a 5xx greeting never bounces", () => {
    it.each(
      ["550 5.7.1 no", "554 no service", "521 5.3.2 does not accept mail"].flatMap((reply) => [true, false].map((f) => [reply, f] as const)),
    )("%j, finalServer %s", (reply, finalServer) => {
      const c = classify({ stage: "greeting", reply }, finalServer)
      for (const [, v] of c.verdicts) {
        expect(v.verdict).toBe("deferred")
        expect(v.dsn.startsWith("4.")).toBe(true)
      }
      expect(c.verdicts.size + c.tryNextServer.length).toBe(ALL.length)
    })
  })
})
