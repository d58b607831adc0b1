// Summarizes a V8 CPU profile (.cpuprofile, from `node --cpu-prof`) of Postern on the terminal: where the
// time went by package / Postern file, and the functions with the most self time. For the full picture
// open the file in Chrome DevTools (Performance → Load profile) or https://www.speedscope.app.
//
//   node --import tsx bench/read-profile.ts bench/out/prof/CPU.*.cpuprofile [--top 30]
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}

interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** Where a frame belongs: a package in node_modules, a Postern file, a node: module, or V8/native. */
const groupOf = (url: string, fn: string): string => {
  if (url === "") return fn.startsWith("(") ? fn : "(native)"
  if (url.startsWith("node:")) return url
  const nm = url.lastIndexOf("/node_modules/")
  if (nm >= 0) {
    const rest = url.slice(nm + "/node_modules/".length).split("/")
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!
  }
  const dist = url.indexOf("/dist/")
  if (dist >= 0) return `postern ${url.slice(dist + 1)}`
  return url.replace(/^file:\/\//, "")
}

export const summarize = (p: Profile, top: number): string => {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0))
  }
  const totalUs = [...self.values()].reduce((a, b) => a + b, 0)
  const idleUs = [...self.entries()].filter(([id]) => byId.get(id)?.callFrame.functionName === "(idle)").reduce((a, [, v]) => a + v, 0)
  const busyUs = totalUs - idleUs
  const groups = new Map<string, number>()
  const fns = new Map<string, number>()
  for (const [id, us] of self) {
    const n = byId.get(id)
    if (n === undefined) continue
    const { functionName, url, lineNumber } = n.callFrame
    if (functionName === "(idle)") continue
    const g = groupOf(url, functionName)
    groups.set(g, (groups.get(g) ?? 0) + us)
    const key = `${functionName || "(anonymous)"}  ${g === url ? url : g}${url === "" ? "" : `:${lineNumber + 1}`}`
    fns.set(key, (fns.get(key) ?? 0) + us)
  }
  const pct = (us: number) => `${((100 * us) / Math.max(1, busyUs)).toFixed(1).padStart(5)}%`
  const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`
  const lines = [
    `profile: ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s wall, ${(busyUs / 1e6).toFixed(2)} s on CPU (not idle), ${(idleUs / 1e6).toFixed(1)} s idle`,
    "",
    "self time by package / file (share of the non-idle time):",
    ...[...groups.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([g, us]) => `${ms(us)} ${pct(us)}  ${g}`),
    "",
    `top ${top} functions by self time:`,
    ...[...fns.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([f, us]) => `${ms(us)} ${pct(us)}  ${f}`),
  ]
  return lines.join("\n")
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: "string", default: "25" } } })
if (positionals.length === 0) {
  process.stderr.write("usage: node --import tsx bench/read-profile.ts FILE.cpuprofile [...] [--top N]\n")
  process.exit(64)
}
for (const file of positionals) {
  process.stdout.write(`== ${file}\n${summarize(JSON.parse(readFileSync(file, "utf8")) as Profile, Number(values.top) || 25)}\n\n`)
}
