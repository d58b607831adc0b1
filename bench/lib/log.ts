// Progress and diagnostics of the bench harness: one line per event on stderr (stdout stays free), each
// stamped with the wall-clock time and the seconds since the harness started.
import { performance } from "node:perf_hooks"

const started = performance.now()

const stamp = (): string => {
  const d = new Date()
  const hh = String(d.getHours()).padStart(2, "0")
  const mm = String(d.getMinutes()).padStart(2, "0")
  const ss = String(d.getSeconds()).padStart(2, "0")
  return `${hh}:${mm}:${ss} +${((performance.now() - started) / 1000).toFixed(0)}s`
}

export const progress = (message: string): void => {
  process.stderr.write(`[bench ${stamp()}] ${message}\n`)
}

export const warn = (message: string): void => {
  process.stderr.write(`[bench ${stamp()}] warning: ${message}\n`)
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Milliseconds on a monotonic clock. */
export const now = (): number => performance.now()

/** 12345.6 → "12,346" */
export const fmtInt = (n: number): string => Math.round(n).toLocaleString("en-US")

export const fmtNum = (n: number, digits: number): string =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
