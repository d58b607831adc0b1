// Scenario files: every shipped scenario decodes; a bad one is refused with every problem listed by its
// key path, policy overrides checked by the production config decoder.
import { readdirSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { ScenarioError, decodeScenario, loadScenario, parseScenario } from "../../src/sim/scenario.js"

const dir = join(import.meta.dirname, "../../scenarios")

describe("scenarios", () => {
  test.each(readdirSync(dir).filter((f) => f.endsWith(".yaml")))("%s decodes", (file) => {
    const s = loadScenario(join(dir, file))
    expect(s.name).toBe(file.replace(/\.yaml$/, ""))
    expect(s.policies.length).toBeGreaterThan(0)
    for (const p of s.policies) expect(p.config.hostname).toBe("postern.sim.example")
  })

  test("the shipped set covers the issue's list", () => {
    const names = readdirSync(dir).map((f) => f.replace(/\.yaml$/, ""))
    for (const n of ["greylisting", "rate-limit", "outage-6h", "bulk-campaign", "long-tail"]) expect(names).toContain(n)
    const tail = loadScenario(join(dir, "long-tail.yaml"))
    expect(tail.groups[0]!.count).toBe(1000)
  })

  test("every problem is reported with its key path", () => {
    const bad = `
traffic:
  messages: 0
  arrival: { process: poisson, rate: fast }
  domains: { nowhere.example: 1 }
destinations:
  - domain: a.example
    latency: { distribution: lognormal, median: 1s, p90: 10ms }
    greylist: { delay: soon }
    outages: [{ start: 1h, duration: 1h, mode: sleep }]
    rateLimit: { limit: 10, window: 1h, reply: "250 ok" }
    colour: blue
policies:
  tight: { maximalBackoffTime: 1m }
  "bad name": {}
`
    let error: unknown
    try {
      parseScenario(bad, "bad")
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ScenarioError)
    const keys = (error as ScenarioError).issues.map((i) => i.key)
    expect(keys).toEqual(
      expect.arrayContaining([
        "traffic.messages",
        "traffic.arrival.rate",
        'traffic.domains["nowhere.example"]',
        "destinations[0].latency.p90",
        "destinations[0].greylist.delay",
        "destinations[0].outages[0].mode",
        "destinations[0].rateLimit.reply",
        "destinations[0].colour",
        "policies.tight.maximalBackoffTime",
        'policies["bad name"]',
      ]),
    )
    expect((error as ScenarioError).message).toMatch(/^invalid scenario \(\d+ problems\)/)
  })

  test("defaults: one Postfix-defaults policy, one recipient per message, a burst at time 0", () => {
    const s = decodeScenario({ traffic: { messages: 3, domains: { "a.example": 1 } }, destinations: [{ domain: "a.example" }] }, "tiny")
    expect(s.policies.map((p) => p.name)).toEqual(["postfix-defaults"])
    expect(s.policies[0]!.config.minimalBackoffTime).toBe(300_000)
    expect(s.traffic.arrival).toEqual({ process: "burst", at: 0, spread: 0 })
    expect(s.destinations[0]!.mx).toEqual([{ host: "mx.a.example", priority: 10 }])
  })
})
