// Sites and MX roll-up over real sockets, with a DNS table (never real DNS): domains whose MX hosts match
// one site share that site's window; domains with the same MX host set share a queue without config;
// delivery still goes per recipient domain; bracketed nexthops, the relayhost and failed lookups keep
// their own queue. Every MX host resolves to 127.0.0.1, where one test receiver counts connections.
import { describe, expect, test } from "vitest"
import { queueList } from "../../src/cli/queue-list.js"
import type { DnsTable } from "../../src/transport/dns.js"
import { inject, makeMessage } from "../support/inject.js"
import { waitFor, type TestPostern } from "../support/postern.js"
import { withCleanup } from "../support/cleanup.js"

const { receiverWith, posternWith } = withCleanup()

const mx = (...hosts: Array<string>) => hosts.map((exchange, i) => ({ exchange, priority: 10 * (i + 1) }))
const loopback = (...hosts: Array<string>) => Object.fromEntries(hosts.map((h) => [h, ["127.0.0.1"]]))
/** Each domain goes to its own name as nexthop (an MX lookup) on the receiver's port. */
const viaMx = (port: number, ...domains: Array<string>) => Object.fromEntries(domains.map((d) => [d, `smtp:${d}:${port}`]))

const send = (p: TestPostern, to: Array<string>) =>
  inject(p.port, { from: "s@s.test", to, body: makeMessage({ from: "s@s.test", to: to[0]! }) }).then((r) => expect(r.ok).toBe(true))

const destinations = (p: TestPostern) =>
  (p.queue.db.prepare("SELECT recipient, destination FROM attempts ORDER BY recipient").all() as Array<{ recipient: string; destination: string }>)
/** Outcomes are committed lazily, after the receiver has the mail: waits for `n` attempt rows. */
const attempts = async (p: TestPostern, n: number) => {
  await waitFor(`${n} attempts logged`, () => destinations(p).length >= n)
  return destinations(p)
}

describe("sites (MX roll-up per provider)", () => {
  test("two domains whose MX hosts match one site share one window: never more connections than the site's limit", async () => {
    const receiver = await receiverWith({ dataDelayMs: 100 })
    const dns: DnsTable = { mx: { "a.test": mx("mx1.provider.test"), "b.test": mx("mx2.provider.test", "mx3.provider.test") }, addresses: loopback("mx1.provider.test", "mx2.provider.test", "mx3.provider.test") }
    const postern = await posternWith(
      {
        transports: viaMx(receiver.port, "a.test", "b.test"),
        // Each domain alone would be allowed 5 connections at once (the defaults); the site allows 2 in all.
        sites: { provider: { mx: ["*.provider.test"], initialDestinationConcurrency: 2, destinationConcurrencyLimit: 2 } },
      },
      { dns },
    )
    await Promise.all(Array.from({ length: 10 }, (_, i) => [send(postern, [`a${i}@a.test`]), send(postern, [`b${i}@b.test`])]).flat())
    await receiver.waitForMessages(20, 20_000)
    expect(receiver.peakConnections).toBeGreaterThan(0)
    expect(receiver.peakConnections).toBeLessThanOrEqual(2)
    expect(new Set((await attempts(postern, 20)).map((d) => d.destination))).toEqual(new Set(["smtp:site:provider"]))
    expect(postern.system.qmgr.destinationStates().map((d) => d.key)).toEqual(["smtp:site:provider"])
  })

  test("one message to two domains of a site: one queue, but each domain gets its own transaction", async () => {
    const receiver = await receiverWith()
    const dns: DnsTable = { mx: { "a.test": mx("mx1.provider.test"), "b.test": mx("mx2.provider.test") }, addresses: loopback("mx1.provider.test", "mx2.provider.test") }
    const postern = await posternWith({ transports: viaMx(receiver.port, "a.test", "b.test"), sites: { provider: { mx: "*.provider.test" } } }, { dns })
    await send(postern, ["x@a.test", "y@a.test", "z@b.test"])
    await receiver.waitForMessages(2)
    expect(receiver.messages.map((m) => [...m.to].sort()).sort()).toEqual([["x@a.test", "y@a.test"], ["z@b.test"]])
    expect((await attempts(postern, 3)).map((d) => d.destination)).toEqual(["smtp:site:provider", "smtp:site:provider", "smtp:site:provider"])
  })

  test("postern queue list --json shows the site as a deferred recipient's destination", async () => {
    const receiver = await receiverWith({ rcpt: () => ({ code: 451, message: "4.7.0 try later" }) })
    const dns: DnsTable = { mx: { "a.test": mx("mx1.provider.test") }, addresses: loopback("mx1.provider.test") }
    const postern = await posternWith(
      { transports: viaMx(receiver.port, "a.test"), sites: { provider: { mx: ["*.provider.test"] } }, minimalBackoffTime: "10m", maximalBackoffTime: "10m" },
      { dns },
    )
    await send(postern, ["x@a.test"])
    await waitFor("the deferral", () => (postern.queue.db.prepare("SELECT count(*) AS n FROM recipients WHERE state = 'pending' AND attempts = 1").get() as { n: number }).n === 1)
    let out = ""
    queueList(postern.dataDir, true, { write: (s: string) => ((out += s), true) } as unknown as NodeJS.WritableStream)
    const listed = JSON.parse(out.trim()) as { recipients: Array<{ address: string; destination: string }> }
    expect(listed.recipients[0]).toMatchObject({ address: "x@a.test", destination: "smtp:site:provider" })
  })
})

describe("MX roll-up without config", () => {
  test("domains with the same MX host set share one queue and its window; another MX set has its own", async () => {
    const receiver = await receiverWith({ dataDelayMs: 100 })
    const shared = mx("mx1.shared.test", "mx2.shared.test")
    const dns: DnsTable = {
      mx: { "c.test": shared, "d.test": [...shared].reverse(), "e.test": mx("mx.other.test") },
      addresses: loopback("mx1.shared.test", "mx2.shared.test", "mx.other.test"),
    }
    const postern = await posternWith(
      { transports: viaMx(receiver.port, "c.test", "d.test", "e.test"), initialDestinationConcurrency: 2, defaultDestinationConcurrencyLimit: 2 },
      { dns },
    )
    await Promise.all(Array.from({ length: 8 }, (_, i) => [send(postern, [`c${i}@c.test`]), send(postern, [`d${i}@d.test`])]).flat())
    await receiver.waitForMessages(16, 20_000)
    // c.test and d.test: one window of 2 (two separate queues could hold 4 connections).
    expect(receiver.peakConnections).toBeLessThanOrEqual(2)
    await send(postern, ["x@e.test"])
    await receiver.waitForMessages(17)
    const keys = new Map((await attempts(postern, 17)).map((d) => [d.recipient.split("@")[1], d.destination]))
    expect(keys.get("c.test")).toBe(`smtp:mx:mx1.shared.test,mx2.shared.test:${receiver.port}`)
    expect(keys.get("d.test")).toBe(keys.get("c.test"))
    expect(keys.get("e.test")).toBe(`smtp:mx:mx.other.test:${receiver.port}`)
  })

  test("a bracketed nexthop and the relayhost are never rolled up, even when their host matches a site", async () => {
    const receiver = await receiverWith()
    const dns: DnsTable = { mx: { "g.test": mx("mx1.provider.test") }, addresses: loopback("mx1.provider.test") }
    const sites = { provider: { mx: ["*.provider.test"], destinationConcurrencyLimit: 1 } }
    const bracketed = await posternWith({ transports: { "f.test": `smtp:[mx1.provider.test]:${receiver.port}` }, sites }, { dns })
    await send(bracketed, ["x@f.test"])
    await receiver.waitForMessages(1)
    expect(await attempts(bracketed, 1)).toEqual([{ recipient: "x@f.test", destination: `smtp:[mx1.provider.test]:${receiver.port}` }])

    const relayed = await posternWith({ relayhost: `g.test:${receiver.port}`, sites }, { dns })
    await send(relayed, ["y@h.test"])
    await receiver.waitForMessages(2)
    expect(await attempts(relayed, 1)).toEqual([{ recipient: "y@h.test", destination: `smtp:g.test:${receiver.port}` }])
  })

  test("a resolver failure keeps the domain's own queue; delivery reports the lookup failure as usual (4.4.3)", async () => {
    const dns: DnsTable = { temporaryFailures: ["broken.test"] }
    const postern = await posternWith({ transports: { "broken.test": "smtp:broken.test:2599" }, minimalBackoffTime: "10m", maximalBackoffTime: "10m" }, { dns })
    await send(postern, ["x@broken.test"])
    await waitFor("the attempt", () => destinations(postern).length === 1)
    const row = postern.queue.db.prepare("SELECT destination, outcome, dsn FROM attempts").get()
    expect(row).toEqual({ destination: "smtp:broken.test:2599", outcome: "deferred", dsn: "4.4.3" })
  })
})
