// The stored bodies this process has already found whole. A message's body is checked the first time it is
// loaded from the store, not again on every retry, so a deferred message costs no body read per attempt
// (a damaged one is still quarantined on its first load). Bounded: when full it starts over, and a body
// is then checked once more (never skipped).
export class CheckedBodies {
  private readonly ids = new Set<number>()

  constructor(private readonly limit = 100_000) {}

  has(messageId: number): boolean {
    return this.ids.has(messageId)
  }

  add(messageId: number): void {
    if (this.ids.size >= this.limit) this.ids.clear()
    this.ids.add(messageId)
  }
}
