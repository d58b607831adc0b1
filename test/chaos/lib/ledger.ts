// What arrived where. Every test message carries `X-Test-Id: <id>` and every recipient address is
// `<id>@<destination>.test`, so an address alone names one delivery (message × recipient). The ledger
// consumes the receivers' message lists as it goes (splicing them, so that a long soak does not keep every
// body in the driver's memory) and counts copies per address.
import type { BadServer } from "../../support/bad-server.js"
import type { Receiver } from "../../support/receiver.js"

interface Arrival {
  readonly to: ReadonlyArray<string>
  readonly body: Buffer
  readonly at: number
}

export type Sink = { readonly name: string; readonly list: () => ReadonlyArray<Arrival> }

export const receiverSink = (name: string, r: Receiver): Sink => ({ name, list: () => r.messages })
export const badServerSink = (name: string, b: BadServer): Sink => ({ name, list: () => b.messages })

const testIdOf = (body: Buffer): string | undefined => /^X-Test-Id: (\S+)\r?$/m.exec(body.subarray(0, 4096).toString("latin1"))?.[1]

export class Ledger {
  /** address (lower case) → copies received */
  readonly copies = new Map<string, number>()
  /** address → Date.now() of the first copy */
  readonly firstAt = new Map<string, number>()
  /** messages without an X-Test-Id (a bounce would be one) */
  unknown = 0
  /** a recipient that does not belong to the X-Test-Id of its body, or arrived at the wrong destination */
  readonly mismatches: Array<string> = []
  /** total copies (recipient deliveries) received */
  total = 0

  constructor(private readonly sinks: ReadonlyArray<Sink>) {}

  /** Moves everything the sinks received so far into the ledger. Synchronous: call it at a point in time. */
  collect(): void {
    for (const sink of this.sinks) {
      const list = sink.list() as Array<Arrival>
      if (list.length === 0) continue
      const batch = list.splice(0, list.length)
      for (const m of batch) {
        const id = testIdOf(m.body)
        if (id === undefined) {
          this.unknown++
          continue
        }
        for (const raw of m.to) {
          const a = raw.toLowerCase()
          const [local, domain] = a.split("@")
          if (local !== id.toLowerCase() || domain !== `${sink.name}.test`) this.mismatches.push(`${sink.name}: ${a} in message ${id}`)
          this.copies.set(a, (this.copies.get(a) ?? 0) + 1)
          if (!this.firstAt.has(a)) this.firstAt.set(a, m.at)
          this.total++
        }
      }
    }
  }

  has(address: string): boolean {
    return this.copies.has(address.toLowerCase())
  }

  /** [address, copies] for every address received more than once */
  duplicates(): Array<[string, number]> {
    return [...this.copies].filter(([, n]) => n > 1)
  }
}
