// Evidence kept when a run fails: the lines of Postern's logs that mention some queue ids or addresses.
import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"

/** Up to `max` log lines (from every *.log in `dir`, prefixed with the file name) that contain one of `needles`. */
export const grepLogs = (dir: string, needles: ReadonlyArray<string>, max = 400): Array<string> => {
  if (needles.length === 0) return []
  const out: Array<string> = []
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".log") || f.endsWith(".log.stderr"))
    .sort()
  for (const f of files) {
    let text: string
    try {
      text = readFileSync(join(dir, f), "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n")) {
      if (needles.some((n) => line.includes(n))) {
        out.push(`${f}: ${line}`)
        if (out.length >= max) return out
      }
    }
  }
  return out
}

/** Lines at level error (50) or fatal (60) in the logs, and the count of each. */
export const severeLines = (dir: string, max = 50): { errors: number; fatals: number; sample: Array<string> } => {
  let errors = 0
  let fatals = 0
  const sample: Array<string> = []
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".log")).sort()) {
    const text = readFileSync(join(dir, f), "utf8")
    for (const line of text.split("\n")) {
      const e = line.includes('"level":50')
      const ft = line.includes('"level":60')
      if (e) errors++
      if (ft) fatals++
      if ((e || ft) && sample.length < max) sample.push(`${f}: ${line}`)
    }
  }
  return { errors, fatals, sample }
}
