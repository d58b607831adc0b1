// report.html's plots: a destination whose name is too long for the legend is cut short there, with the
// whole name as the label's tooltip, so no label runs off the picture.
import { expect, test } from "vitest"
import { plotOf, renderReport } from "../../src/sim/report.js"
import { decodeScenario } from "../../src/sim/scenario.js"
import { runAll } from "../../src/sim/simulate.js"

test("a long destination name is cut in the legend and whole in its tooltip", async () => {
  const scenario = decodeScenario(
    {
      traffic: { messages: 5, arrival: { process: "burst", at: 0 }, sender: "s@sender.example", domains: { "t.example": 1 } },
      destinations: [{ domain: "t.example", mx: ["mx1.a-rather-long-provider-name.example", "mx2.a-rather-long-provider-name.example"], latency: "1s" }],
      policies: { p: {} },
    },
    "report",
  )
  const { results } = await runAll({ scenario, seed: 1 })
  const r = results[0]!
  r.run.db.close()
  const html = renderReport({ scenario: "report", description: "", seed: 1, version: "test", start: scenario.start, policies: [plotOf(r)] })
  const full = "mx:mx1.a-rather-long-provider-name.example,mx2.a-rather-long-provider-name.example"
  expect(html).toContain(`class="lg"><title>${full}</title>mx:mx1.a-rather-lon…</text>`)
  const legends = [...html.matchAll(/class="lg">(?:<title>[^<]*<\/title>)?([^<]*)<\/text>/g)].map((m) => m[1]!)
  expect(legends.length).toBeGreaterThan(0)
  for (const label of legends) expect(label.length).toBeLessThanOrEqual(20)
})
