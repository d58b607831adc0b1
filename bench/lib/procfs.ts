// CPU time and memory of processes, read from /proc. CPU is utime+stime in clock ticks (USER_HZ, 100 on
// Linux); a process tree's CPU also counts its reaped children (cutime+cstime), so short-lived workers
// such as Postfix's smtpd/cleanup/smtp processes are included once their master has reaped them.
import { readFileSync, readdirSync } from "node:fs"
import { execFileSync } from "node:child_process"

let ticksPerSecond: number | null = null
const clkTck = (): number => {
  if (ticksPerSecond === null) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
    } catch {
      ticksPerSecond = 100
    }
  }
  return ticksPerSecond
}

interface StatFields {
  readonly ppid: number
  readonly utime: number
  readonly stime: number
  readonly cutime: number
  readonly cstime: number
}

const readStat = (pid: number): StatFields | null => {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return null
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
  // rest[0] is field 3 (state); field N is rest[N - 3].
  return {
    ppid: Number(rest[1]),
    utime: Number(rest[11]),
    stime: Number(rest[12]),
    cutime: Number(rest[13]),
    cstime: Number(rest[14]),
  }
}

/** CPU milliseconds (user + system) of one process so far, or null when it is gone. */
export const processCpuMs = (pid: number): number | null => {
  const s = readStat(pid)
  return s === null ? null : ((s.utime + s.stime) * 1000) / clkTck()
}

/** The PIDs of `root` and all its live descendants. */
export const processTree = (root: number): Array<number> => {
  const children = new Map<number, Array<number>>()
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    const s = readStat(pid)
    if (s === null) continue
    const list = children.get(s.ppid)
    if (list === undefined) children.set(s.ppid, [pid])
    else list.push(pid)
  }
  const out: Array<number> = []
  const stack = [root]
  while (stack.length > 0) {
    const pid = stack.pop()!
    out.push(pid)
    for (const c of children.get(pid) ?? []) stack.push(c)
  }
  return out
}

/**
 * CPU milliseconds of a whole process tree: every live member's own time plus the time of the children
 * it has reaped. Differences of two readings give the tree's CPU between them.
 */
export const treeCpuMs = (root: number): number | null => {
  if (readStat(root) === null) return null
  let ticks = 0
  for (const pid of processTree(root)) {
    const s = readStat(pid)
    if (s !== null) ticks += s.utime + s.stime + s.cutime + s.cstime
  }
  return (ticks * 1000) / clkTck()
}

const statusField = (pid: number, field: string): number | null => {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return m === null ? null : Number(m[1])
  } catch {
    return null
  }
}

/** Peak resident set size (VmHWM) in KiB, or null when the process is gone. */
export const peakRssKb = (pid: number): number | null => statusField(pid, "VmHWM")

export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
