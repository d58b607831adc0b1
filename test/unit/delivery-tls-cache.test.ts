// The delivery agent's connection cache and TLS: a session is reused only by a delivery with the same TLS
// policy, so a config change to `encrypt` never rides an idle plaintext session opened under `may`.
// Sessions here are fakes behind the agent's Connector seam (the real ones are in test/integration/tls.test.ts).
import { afterEach, describe, expect, test } from "vitest"
import { DeliveryAgent, type DeliveryRequest } from "../../src/actors/delivery.js"
import { decodeConfig } from "../../src/config/index.js"
import type { PosternConfig } from "../../src/config/types.js"
import { Clock } from "../../src/runtime/clock.js"
import { silentLogger } from "../../src/runtime/log.js"
import { seededRng } from "../../src/runtime/rng.js"
import { tableResolver } from "../../src/transport/dns.js"
import type { Target } from "../../src/transport/mx.js"
import { resolveRoute } from "../../src/transport/route.js"
import type { AttemptResult } from "../../src/transport/smtp-outcome.js"
import type { Connector, OutboundSession, SessionOptions } from "../../src/transport/smtp-session.js"

const configAt = (level: string): PosternConfig =>
  decodeConfig({ hostname: "postern.test", transports: { "*": "smtp:[127.0.0.1]:2525" }, smtpTlsSecurityLevel: level }, "/tmp")

/** A server that does not offer STARTTLS: every session is plaintext, and encrypt/verify get no session. */
class PlaintextSession implements OutboundSession {
  readonly usable = true
  readonly lastClean = true
  readonly tls = null
  constructor(
    readonly target: Target,
    readonly openedAt: number,
  ) {}
  get relay() {
    return `${this.target.hostname}[${this.target.address}]:${this.target.port}`
  }
  supports() {
    return false
  }
  async send(envelope: { to: ReadonlyArray<string> }): Promise<AttemptResult> {
    return { stage: "done", reply: "250 2.0.0 Ok", accepted: [...envelope.to], rejected: [] }
  }
  async reset() {
    return true
  }
  close() {}
}

const opened: Array<string> = []
const connector: Connector = async (options: SessionOptions, now: number) => {
  opened.push(options.tls.level)
  if (options.tls.level === "encrypt" || options.tls.level === "verify") {
    return { stage: "tls", dsn: "4.7.4", reason: "TLS is required, but was not offered by host test", handshake: false }
  }
  return new PlaintextSession(options.target, now)
}

let config = configAt("may")
const agent = new DeliveryAgent({
  config: () => config,
  clock: Clock.system,
  rng: seededRng(1),
  dns: tableResolver({}),
  log: silentLogger(),
  connector,
})
afterEach(() => agent.abortAll())

let n = 0
const requestTo = (address: string): DeliveryRequest => ({
  id: `r${++n}`,
  route: resolveRoute(config, address),
  message: { id: n, queueId: `Q${n}`, arrivalTime: 0, sender: "s@source.test", mailParams: {}, size: 20, recipients: [], body: null },
  recipients: [{ id: n, address, params: {}, attempts: 0 }],
  body: () => Buffer.from("Subject: t\r\n\r\nhi\r\n"),
})

describe("connection cache and TLS levels", () => {
  test("an idle plaintext session from `may` is not handed to an `encrypt` delivery; `may` reuses it", async () => {
    const first = await agent.deliver(requestTo("a@dest.test"))
    expect(first.verdicts["a@dest.test"]?.verdict).toBe("sent")
    expect(agent.cache.size()).toBe(1)

    config = configAt("encrypt")
    const second = await agent.deliver(requestTo("b@dest.test"))
    expect(second.verdicts["b@dest.test"]).toMatchObject({ verdict: "deferred", dsn: "4.7.4" })
    expect(second.siteFailure).toBe(true)

    config = configAt("may")
    const third = await agent.deliver(requestTo("c@dest.test"))
    expect(third.verdicts["c@dest.test"]?.verdict).toBe("sent")
    // may opened one session and reused it; encrypt had to open its own (and was refused)
    expect(opened).toEqual(["may", "encrypt"])
  })
})
