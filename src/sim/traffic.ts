// The traffic of a scenario: when each message arrives, to whom, and how big it is. Drawn once per seed
// from its own stream, so every policy of a run sees exactly the same messages at the same times.
import type { RngShape } from "../runtime/rng.js"
import { pickWeighted, sample, stream } from "./random.js"
import { groupDomains, type ArrivalSpec, type Scenario } from "./scenario.js"

export interface SimMessage {
  /** 1-based, in order of arrival. */
  readonly index: number
  /** Arrival, ms after time 0. */
  readonly at: number
  readonly recipients: ReadonlyArray<string>
  readonly size: number
}

const HOUR = 3_600_000
const DAY = 86_400_000

const arrivalTimes = (a: ArrivalSpec, count: number, rng: RngShape): Array<number> => {
  const times: Array<number> = []
  switch (a.process) {
    case "burst":
      for (let i = 0; i < count; i++) times.push(a.at + (a.spread > 0 ? Math.floor(rng.next() * a.spread) : 0))
      break
    case "poisson": {
      const meanGap = 1000 / a.perSecond
      let t = a.start
      for (let i = 0; i < count; i++) {
        t += -Math.log(1 - rng.next()) * meanGap
        times.push(Math.round(t))
      }
      break
    }
    case "daily": {
      const cumulative: Array<number> = []
      a.curve.reduce((sum, w) => (cumulative.push(sum + w), sum + w), 0)
      for (let i = 0; i < count; i++) {
        const day = Math.floor(rng.next() * a.days)
        const hour = pickWeighted(cumulative, rng)
        times.push(a.start + day * DAY + hour * HOUR + Math.floor(rng.next() * HOUR))
      }
      break
    }
  }
  return times.sort((x, y) => x - y)
}

/** The weight of every single domain, groups split uniformly or by Zipf's law over their members. */
export const domainMix = (scenario: Scenario): Array<{ domain: string; weight: number }> => {
  const out: Array<{ domain: string; weight: number }> = []
  for (const { target, weight } of scenario.traffic.domains) {
    const group = scenario.groups.find((g) => g.name === target)
    if (group === undefined) {
      out.push({ domain: target, weight })
      continue
    }
    const members = groupDomains(group)
    const raw = members.map((_, i) => (group.split.kind === "zipf" ? 1 / Math.pow(i + 1, group.split.exponent) : 1))
    const total = raw.reduce((s, x) => s + x, 0)
    members.forEach((domain, i) => out.push({ domain, weight: (weight * raw[i]!) / total }))
  }
  return out
}

/** Every message of the scenario (count overridable), in order of arrival. */
export const generateTraffic = (
  scenario: Scenario,
  seed: number,
  mix: ReadonlyArray<{ domain: string; weight: number }>,
  messages = scenario.traffic.messages,
): Array<SimMessage> => {
  const rng = stream(seed, "traffic")
  const times = arrivalTimes(scenario.traffic.arrival, messages, rng)
  const cumulative: Array<number> = []
  mix.reduce((sum, m) => (cumulative.push(sum + m.weight), sum + m.weight), 0)
  const width = String(messages * 4).length
  let recipientNo = 0
  return times.map((at, i) => {
    const n = Math.max(1, sample(scenario.traffic.recipients, rng))
    const recipients: Array<string> = []
    for (let k = 0; k < n; k++) {
      const domain = mix[pickWeighted(cumulative, rng)]!.domain
      recipients.push(`user${String(++recipientNo).padStart(width, "0")}@${domain}`)
    }
    return { index: i + 1, at, recipients, size: Math.max(400, sample(scenario.traffic.size, rng)) }
  })
}
