// The load: several concurrent SMTP clients, each sending one message per connection with its own
// X-Test-Id, to 1–3 of the destinations. Which destinations and how big the message is are functions of
// (seed, client, n), so a seed always asks for the same mail; what gets acknowledged depends on timing.
import { inject, makeMessage } from "../../support/inject.js"
import { mulberry32, unitHash } from "./rng.js"

export const FROM = "load@source.test"
export type Dest = "ok" | "flaky" | "hang"

export interface AckedMessage {
  readonly id: string
  readonly queueId: string | undefined
  /** recipients Postern accepted (lower case) */
  readonly recipients: ReadonlyArray<string>
  readonly at: number
}

export interface LoadOptions {
  readonly seed: number
  readonly clients: number
  /** pause after each message, per client (ms) */
  readonly pauseMs: number
  /** probability of each destination being a recipient (at least one is always chosen: ok) */
  readonly mix: Readonly<Record<Dest, number>>
  /** id prefix, e.g. "s1" */
  readonly prefix: string
  /** the SMTP port to send to (read on every message: it may change) */
  readonly port: () => number
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

export class Load {
  readonly acked = new Map<string, AckedMessage>()
  /** recipient address → when its message was acknowledged */
  readonly ackedAddresses = new Map<string, number>()
  /** ids whose injection failed (no 250): connection refused or cut, 4xx, timeout */
  readonly failed = new Map<string, string>()
  /** recipients refused at RCPT by Postern (never expected) */
  readonly refusedRecipients: Array<string> = []
  attempted = 0
  private running = false
  private workers: Array<Promise<void>> = []

  constructor(private readonly opts: LoadOptions) {}

  /** the recipients and size of message n of client c */
  plan(c: number, n: number): { id: string; to: Array<string>; bytes: number | undefined } {
    const id = `${this.opts.prefix}c${c}m${n}`
    const rng = mulberry32(Math.floor(unitHash(this.opts.seed, "plan", c, n) * 4294967296))
    const to: Array<string> = []
    for (const d of ["ok", "flaky", "hang"] as const) if (rng() < this.opts.mix[d]) to.push(`${id}@${d}.test`)
    if (to.length === 0) to.push(`${id}@ok.test`)
    // mostly small; 1 in 10 between 20 and 150 KB (several 64 KiB body chunks, a longer DATA to be killed in)
    const bytes = rng() < 0.1 ? 20_000 + Math.floor(rng() * 130_000) : undefined
    return { id, to, bytes }
  }

  start(): void {
    this.running = true
    this.workers = Array.from({ length: this.opts.clients }, (_, c) => this.worker(c))
  }

  async stop(): Promise<void> {
    this.running = false
    await Promise.all(this.workers)
  }

  private async worker(c: number): Promise<void> {
    for (let n = 0; this.running; n++) {
      const { id, to, bytes } = this.plan(c, n)
      this.attempted++
      const body = makeMessage({
        from: FROM,
        to: to[0]!,
        subject: `chaos ${id}`,
        headers: { "X-Test-Id": id },
        ...(bytes !== undefined ? { bytes } : {}),
      })
      const r = await inject(this.opts.port(), { from: FROM, to, body })
      if (r.ok) {
        const refused = new Set(r.rejected.map((x) => x.address.toLowerCase()))
        for (const a of refused) this.refusedRecipients.push(`${a}: ${r.rejected.find((x) => x.address.toLowerCase() === a)?.response ?? ""}`)
        const recipients = to.map((a) => a.toLowerCase()).filter((a) => !refused.has(a))
        const at = Date.now()
        this.acked.set(id, { id, queueId: r.queueId, recipients, at })
        for (const a of recipients) this.ackedAddresses.set(a, at)
        if (this.opts.pauseMs > 0) await sleep(this.opts.pauseMs)
      } else {
        this.failed.set(id, `${r.code} ${r.response}`)
        await sleep(Math.max(30, this.opts.pauseMs)) // Postern is down or refusing: do not spin
      }
    }
  }
}
