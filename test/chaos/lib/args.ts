// `--name value` / `--name=value` / `--flag` command-line options, nothing more.
export const parseArgs = (argv: ReadonlyArray<string>): Map<string, string> => {
  const out = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${JSON.stringify(a)}`)
    const eq = a.indexOf("=")
    if (eq >= 0) out.set(a.slice(2, eq), a.slice(eq + 1))
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith("--")) out.set(a.slice(2), argv[++i]!)
    else out.set(a.slice(2), "true")
  }
  return out
}

export const numberArg = (args: Map<string, string>, name: string, dflt: number): number => {
  const v = args.get(name)
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isFinite(n)) throw new Error(`--${name}: not a number: ${v}`)
  return n
}

export const checkKnown = (args: Map<string, string>, known: ReadonlyArray<string>): void => {
  for (const k of args.keys()) if (!known.includes(k)) throw new Error(`unknown option --${k} (known: ${known.map((x) => `--${x}`).join(" ")})`)
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `probe` every `everyMs` until it returns true or `timeoutMs` passes; returns whether it did. */
export const waitUntil = async (probe: () => boolean, timeoutMs: number, everyMs = 250): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (probe()) return true
    if (Date.now() >= deadline) return false
    await sleep(everyMs)
  }
}
