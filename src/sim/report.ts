// report.html: one self-contained page (inline SVG, no script, no external resource) with the summary
// table and three plots per run: the delivery-latency CDF per policy, the queue size over time, and the
// attempts per destination over time. Deterministic text: same results, same bytes.
import type { PolicyResult, PolicySummary } from "./results.js"

export interface ReportInput {
  readonly scenario: string
  readonly description: string
  readonly seed: number
  readonly version: string
  readonly start: number
  readonly policies: ReadonlyArray<PolicyPlot>
}

/** What the report needs of one policy's run, kept compact (a run's rows are let go once written). */
export interface PolicyPlot {
  readonly name: string
  readonly overrides: Readonly<Record<string, unknown>>
  readonly summary: PolicySummary
  /** When the run ended, ms after time 0. */
  readonly endedAt: number
  readonly recipients: number
  /** Arrival-to-delivery times of delivered recipients, seconds, ascending. */
  readonly delays: Float64Array
  /** Arrival times of all recipients and final times of those that ended, ms, ascending. */
  readonly arrivals: Float64Array
  readonly finals: Float64Array
  /** Each attempt (expiries aside): when it ended (ms) and the index of its destination in `destinations`. */
  readonly attemptAt: Float64Array
  readonly attemptDestination: Int32Array
  readonly destinations: ReadonlyArray<string>
}

const sorted = (values: Array<number>): Float64Array => Float64Array.from(values).sort()

export const plotOf = (r: PolicyResult): PolicyPlot => {
  const destinations: Array<string> = []
  const index = new Map<string, number>()
  const tries = r.attempts.filter((a) => a.outcome !== "expired")
  const attemptDestination = Int32Array.from(tries, (a) => {
    let i = index.get(a.destination)
    if (i === undefined) {
      i = destinations.push(a.destination) - 1
      index.set(a.destination, i)
    }
    return i
  })
  return {
    name: r.run.policy.name,
    overrides: r.run.policy.overrides,
    summary: r.summary,
    endedAt: r.run.endedAt,
    recipients: r.recipients.length,
    delays: sorted(r.recipients.filter((x) => x.state === "delivered").map((x) => (x.finalAt! - x.arrival) / 1000)),
    arrivals: sorted(r.recipients.map((x) => x.arrival)),
    finals: sorted(r.recipients.flatMap((x) => (x.finalAt === null ? [] : [x.finalAt]))),
    attemptAt: Float64Array.from(tries, (a) => a.at),
    attemptDestination,
    destinations,
  }
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
const n1 = (x: number): string => (Math.round(x * 10) / 10).toString()

/** A duration in seconds, short: 45s, 5m, 1.5h, 2.3d. */
export const shortDuration = (s: number): string => {
  if (s < 1) return `${Math.round(s * 1000)}ms`
  if (s < 60) return `${Number(s.toFixed(1))}s`
  if (s < 3600) return `${Number((s / 60).toFixed(1))}m`
  if (s < 86400) return `${Number((s / 3600).toFixed(1))}h`
  return `${Number((s / 86400).toFixed(2))}d`
}

const niceStep = (span: number, count: number): number => {
  const raw = span / Math.max(1, count)
  const mag = Math.pow(10, Math.floor(Math.log10(raw)))
  const f = raw / mag
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag
}

const linearTicks = (max: number, count = 6): Array<number> => {
  if (max <= 0) return [0]
  const step = niceStep(max, count)
  const out: Array<number> = []
  for (let v = 0; v <= max * 1.0001; v += step) out.push(Number(v.toPrecision(12)))
  return out
}

interface Series {
  readonly name: string
  readonly color: string
  readonly points: ReadonlyArray<readonly [number, number]>
}

interface ChartSpec {
  readonly title: string
  readonly xLabel: string
  readonly yLabel: string
  readonly series: ReadonlyArray<Series>
  readonly xMax: number
  readonly yMax: number
  readonly log?: boolean
  /** Minimum of a log x axis. */
  readonly xMin?: number
  readonly xTicks: ReadonlyArray<{ readonly at: number; readonly label: string }>
  readonly yFormat?: (v: number) => string
  readonly step?: boolean
}

const W = 1080
const H = 340
const M = { left: 70, right: 200, top: 34, bottom: 46 }

/** Legend labels longer than this are cut (with "…"); the full name is the label's tooltip. */
const LEGEND_CHARS = 20
const legendLabel = (name: string): string => (name.length <= LEGEND_CHARS ? esc(name) : `<title>${esc(name)}</title>${esc(name.slice(0, LEGEND_CHARS - 1))}…`)

const chart = (c: ChartSpec): string => {
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const xMin = c.log === true ? Math.max(c.xMin ?? 1, 1e-3) : 0
  const xMax = Math.max(c.xMax, xMin * 10, 1e-9)
  const yMax = c.yMax > 0 ? c.yMax : 1
  const sx = (x: number) =>
    M.left + (c.log === true ? ((Math.log10(Math.max(x, xMin)) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * pw : (x / xMax) * pw)
  const sy = (y: number) => M.top + ph - (y / yMax) * ph
  const out: Array<string> = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(c.title)}">`)
  out.push(`<text x="${M.left}" y="20" class="t">${esc(c.title)}</text>`)
  out.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" class="frame"/>`)
  const yFormat = c.yFormat ?? ((v: number) => String(v))
  for (const v of linearTicks(yMax, 5)) {
    const y = n1(sy(v))
    out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${y}" y2="${y}" class="grid"/><text x="${M.left - 6}" y="${y}" class="yl">${esc(yFormat(v))}</text>`)
  }
  for (const t of c.xTicks) {
    if (t.at < xMin || t.at > xMax * 1.0001) continue
    const x = n1(sx(t.at))
    out.push(`<line x1="${x}" x2="${x}" y1="${M.top}" y2="${M.top + ph}" class="grid"/><text x="${x}" y="${M.top + ph + 16}" class="xl">${esc(t.label)}</text>`)
  }
  out.push(`<text x="${M.left + pw / 2}" y="${H - 6}" class="al">${esc(c.xLabel)}</text>`)
  out.push(`<text transform="translate(16 ${M.top + ph / 2}) rotate(-90)" class="al">${esc(c.yLabel)}</text>`)
  c.series.forEach((s, i) => {
    if (s.points.length > 0) {
      let d = ""
      let prevY: string | null = null
      for (const [x, y] of s.points) {
        const px = n1(sx(x))
        const py = n1(sy(y))
        if (d === "") d = `M${px} ${py}`
        else if (c.step === true && prevY !== null) d += `H${px}V${py}`
        else d += `L${px} ${py}`
        prevY = py
      }
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`)
    }
    const ly = M.top + 10 + i * 18
    out.push(`<line x1="${W - M.right + 14}" x2="${W - M.right + 34}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="3"/>`)
    out.push(`<text x="${W - M.right + 40}" y="${ly + 4}" class="lg">${legendLabel(s.name)}</text>`)
  })
  out.push(`</svg>`)
  return out.join("\n")
}

const LOG_TICKS: ReadonlyArray<{ at: number; label: string }> = [
  { at: 1, label: "1s" }, { at: 10, label: "10s" }, { at: 60, label: "1m" }, { at: 300, label: "5m" }, { at: 900, label: "15m" },
  { at: 3600, label: "1h" }, { at: 4 * 3600, label: "4h" }, { at: 12 * 3600, label: "12h" }, { at: 86400, label: "1d" },
  { at: 2 * 86400, label: "2d" }, { at: 5 * 86400, label: "5d" }, { at: 10 * 86400, label: "10d" },
]

/** Time axis ticks in hours or days, for a span of `seconds`. */
const timeAxis = (seconds: number): { unit: number; label: string; ticks: Array<{ at: number; label: string }> } => {
  const days = seconds > 3 * 86400
  const unit = days ? 86400 : 3600
  const ticks = linearTicks(seconds / unit, 10).map((v) => ({ at: v * unit, label: `${v}${days ? "d" : "h"}` }))
  return { unit, label: `virtual time since start (${days ? "days" : "hours"})`, ticks }
}

/** Downsampled CDF: fraction of all recipients delivered within x seconds. */
const cdf = (p: PolicyPlot): Array<readonly [number, number]> => {
  const delays = p.delays
  if (delays.length === 0 || p.recipients === 0) return []
  const pts: Array<readonly [number, number]> = []
  const steps = Math.min(400, delays.length)
  for (let k = 0; k < steps; k++) {
    const i = Math.floor(((k + 1) / steps) * delays.length) - 1
    pts.push([Math.max(delays[i]!, 0.001), (i + 1) / p.recipients])
  }
  return pts
}

/** Recipients arrived and not yet delivered, bounced or expired, at 400 points of [0, end]. */
const queueSize = (p: PolicyPlot, end: number): Array<readonly [number, number]> => {
  const pts: Array<readonly [number, number]> = []
  let a = 0
  let f = 0
  const steps = 400
  for (let k = 0; k <= steps; k++) {
    const t = (end * k) / steps
    while (a < p.arrivals.length && p.arrivals[a]! <= t) a++
    while (f < p.finals.length && p.finals[f]! <= t) f++
    pts.push([t / 1000, a - f])
  }
  return pts
}

const BUCKETS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]

/** Attempts per bucket for the busiest destinations (and the rest as "others"). */
const attemptsByDestination = (p: PolicyPlot, end: number): { series: Array<Series>; bucket: number; yMax: number } => {
  // Only attempts up to `end` count (and pick the busiest destinations).
  const endS = Math.max(end / 1000, 1)
  const bucket = BUCKETS.find((b) => endS / b <= 150) ?? 86400
  const n = Math.floor(endS / bucket) + 1
  const totals = new Array<number>(p.destinations.length).fill(0)
  p.attemptDestination.forEach((d, k) => {
    if (p.attemptAt[k]! <= end) totals[d]!++
  })
  const top = totals
    .map((count, i) => ({ count, i, name: p.destinations[i]! }))
    .sort((x, y) => y.count - x.count || (x.name < y.name ? -1 : 1))
    .slice(0, 7)
  const slot = new Array<number>(p.destinations.length).fill(top.length)
  top.forEach((t, k) => (slot[t.i] = k))
  const counts = Array.from({ length: top.length + 1 }, () => new Array<number>(n).fill(0))
  p.attemptAt.forEach((at, k) => {
    if (at <= end) counts[slot[p.attemptDestination[k]!]!]![Math.min(n - 1, Math.floor(at / 1000 / bucket))]!++
  })
  let yMax = 0
  const series: Array<Series> = []
  counts.forEach((c, k) => {
    if (k === top.length && c.every((x) => x === 0)) return
    yMax = Math.max(yMax, ...c)
    const name = k === top.length ? "others" : top[k]!.name.replace(/^smtp:/, "")
    series.push({ name, color: PALETTE[k % PALETTE.length]!, points: c.map((v, j) => [j * bucket, v] as const) })
  })
  return { series, bucket, yMax }
}

const fmt = (x: number | undefined | null, f: (v: number) => string = String): string => (x === undefined || x === null ? "–" : f(x))

const table = (results: ReadonlyArray<PolicyPlot>): string => {
  const head = ["policy", "recipients", "delivered", "bounced", "expired", "still queued", "delivered %", "latency p50", "p90", "p99", "max",
    "attempts per rcpt", "most attempts per msg", "NDRs sent", "connections", "simulated time"]
  const rows = results.map((r, i) => {
    const s = r.summary
    const conns = Object.values(s.destinations).reduce((t, d) => t + (d["connections"] ?? 0), 0)
    const cells = [
      `<span class="sw" style="background:${PALETTE[i % PALETTE.length]}"></span>${esc(r.name)}`,
      String(s.recipients), String(s.delivered), String(s.bounced), String(s.expired), String(s.deferred + s.queued),
      (s.deliveredShare * 100).toFixed(2), fmt(s.latency?.p50, shortDuration), fmt(s.latency?.p90, shortDuration),
      fmt(s.latency?.p99, shortDuration), fmt(s.latency?.max, shortDuration), fmt(s.attemptsPerRecipient?.mean, (v) => v.toFixed(2)),
      fmt(s.attemptsPerMessage?.max), String(s.nonDeliveryReports), String(conns), shortDuration(s.simulatedSeconds),
    ]
    return `<tr>${cells.map((c, k) => (k === 0 ? `<td class="l">${c}</td>` : `<td>${c}</td>`)).join("")}</tr>`
  })
  const configs = results.map((r) => {
    const o = r.overrides
    const text = Object.keys(o).length === 0 ? "Postfix's defaults" : Object.entries(o).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ")
    return `<li><b>${esc(r.name)}</b>: ${esc(text)}</li>`
  })
  return `<table><thead><tr>${head.map((h, k) => (k === 0 ? `<th class="l">${h}</th>` : `<th>${h}</th>`)).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>\n<ul class="pol">${configs.join("")}</ul>`
}

const CSS = `body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}.meta{color:#555}
table{border-collapse:collapse;font-size:12px;margin-top:8px}th,td{padding:4px 6px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}.l{text-align:left}.sw{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.pol{font-size:13px;color:#444}svg{display:block;margin:6px 0}
svg .t{font-size:14px;font-weight:600}svg .frame{fill:none;stroke:#999}svg .grid{stroke:#e6e6e6}
svg .xl{font-size:11px;text-anchor:middle;fill:#444}svg .yl{font-size:11px;text-anchor:end;dominant-baseline:middle;fill:#444}
svg .al{font-size:12px;text-anchor:middle;fill:#333}svg .lg{font-size:12px;fill:#222}`

/**
 * When a long tail (retries of dead destinations until they expire) would squeeze the interesting part
 * into a sliver: the time by which every message had arrived and 99% of the recipients were done.
 */
const zoomOf = (results: ReadonlyArray<PolicyPlot>, end: number): number | null => {
  let t = 0
  for (const r of results) {
    if (r.arrivals.length > 0) t = Math.max(t, r.arrivals[r.arrivals.length - 1]!)
    if (r.finals.length > 0) t = Math.max(t, r.finals[Math.max(0, Math.ceil(0.99 * r.finals.length) - 1)]!)
  }
  const zoom = t * 1.1 + 60_000
  return zoom < end * 0.5 ? zoom : null
}

export const renderReport = (input: ReportInput): string => {
  const results = input.policies
  const end = Math.max(1, ...results.map((r) => r.endedAt))
  const axis = timeAxis(end / 1000)
  const zoom = zoomOf(results, end)
  const window = zoom ?? end
  const windowAxis = timeAxis(window / 1000)
  const maxDelay = Math.max(60, ...results.map((r) => r.summary.latency?.max ?? 0))
  const latency = chart({
    title: "Delivery latency: share of all recipients delivered within a time after arrival",
    xLabel: "time from arrival to delivery (log scale)",
    yLabel: "share of recipients",
    series: results.map((r, i) => ({ name: r.name, color: PALETTE[i % PALETTE.length]!, points: cdf(r) })),
    xMax: maxDelay * 1.2,
    yMax: 1,
    log: true,
    xMin: 1,
    xTicks: LOG_TICKS,
    yFormat: (v) => `${Math.round(v * 100)}%`,
    step: true,
  })
  const queues = results.map((r, i) => ({ name: r.name, color: PALETTE[i % PALETTE.length]!, points: queueSize(r, end) }))
  const queue = chart({
    title: "Queue size: recipients arrived and not yet delivered, bounced or expired",
    xLabel: axis.label,
    yLabel: "recipients in the queue",
    series: queues,
    xMax: end / 1000,
    yMax: Math.max(1, ...queues.flatMap((s) => s.points.map((p) => p[1]))) * 1.05,
    xTicks: axis.ticks,
  })
  let queueZoom = ""
  if (zoom !== null) {
    const zoomed = results.map((r, i) => ({ name: r.name, color: PALETTE[i % PALETTE.length]!, points: queueSize(r, zoom) }))
    queueZoom = chart({
      title: `Queue size, the first ${shortDuration(zoom / 1000)}: until every message had arrived and 99% of recipients were done`,
      xLabel: windowAxis.label,
      yLabel: "recipients in the queue",
      series: zoomed,
      xMax: zoom / 1000,
      yMax: Math.max(1, ...zoomed.flatMap((s) => s.points.map((p) => p[1]))) * 1.05,
      xTicks: windowAxis.ticks,
    })
  }
  const perDestination = results.map((r) => {
    const a = attemptsByDestination(r, window)
    return chart({
      title: `Attempts per destination over time: ${r.name} (per ${shortDuration(a.bucket)}${zoom === null ? "" : `, the first ${shortDuration(zoom / 1000)}`})`,
      xLabel: windowAxis.label,
      yLabel: `attempts per ${shortDuration(a.bucket)}`,
      series: a.series,
      xMax: window / 1000,
      yMax: a.yMax * 1.05,
      xTicks: windowAxis.ticks,
      step: true,
    })
  })
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Postern simulation: ${esc(input.scenario)}</title>
<style>${CSS}</style></head><body>
<h1>Postern simulation: ${esc(input.scenario)}</h1>
<div class="meta">seed ${input.seed} · Postern ${esc(input.version)} · virtual start ${new Date(input.start).toISOString()} · ${results[0]?.summary.messages ?? 0} messages</div>
${input.description === "" ? "" : `<p>${esc(input.description)}</p>`}
<h2>Summary</h2>
${table(results)}
<h2>Delivery latency</h2>
${latency}
<h2>Queue size</h2>
${queue}
${queueZoom}
<h2>Attempts per destination</h2>
${zoom === null ? "" : `<p class="meta">Up to ${shortDuration(zoom / 1000)} after time 0; the rest (retries until expiry) is in attempts.csv.</p>`}
${perDestination.join("\n")}
</body></html>
`
}
