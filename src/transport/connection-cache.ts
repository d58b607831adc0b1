// Postfix's SMTP connection cache (scache): idle sessions kept per destination for reuse by the next
// delivery, with an idle time limit (smtp_connection_cache_time_limit, 2 s) and a reuse time limit
// (smtp_connection_reuse_time_limit, 300 s). A session is checked with RSET before it is reused, unless
// its last transaction ended cleanly less than `freshMs` ago: then the check would cost a round trip per
// message under load and tell nothing new (a server that dropped it since shows at MAIL, which defers).
import type { ClockShape } from "../runtime/clock.js"
import type { OutboundSession } from "./smtp-session.js"

interface Idle {
  readonly session: OutboundSession
  readonly timer: unknown
  readonly since: number
}

export class ConnectionCache {
  private readonly idle = new Map<string, Array<Idle>>()

  constructor(
    private readonly clock: ClockShape,
    private readonly idleLimitMs = 2_000,
    private readonly reuseLimitMs = 300_000,
    private readonly freshMs = 1_000,
  ) {}

  /** Takes an idle, RSET-checked session for `key`, or null. */
  async take(key: string): Promise<OutboundSession | null> {
    const list = this.idle.get(key)
    while (list !== undefined && list.length > 0) {
      const entry = list.pop()!
      this.clock.clearTimeout(entry.timer)
      if (list.length === 0) this.idle.delete(key)
      if (!entry.session.usable) {
        entry.session.close()
        continue
      }
      const fresh = entry.session.lastClean && this.clock.now() - entry.since < this.freshMs
      if (fresh || (await entry.session.reset())) return entry.session
      entry.session.close()
    }
    return null
  }

  /** Returns a session after a transaction; it is closed instead when it is too old or broken. */
  put(key: string, session: OutboundSession): void {
    if (!session.usable || this.clock.now() - session.openedAt >= this.reuseLimitMs) {
      session.close()
      return
    }
    const timer = this.clock.setTimeout(() => {
      const list = this.idle.get(key)
      const i = list?.findIndex((e) => e.session === session) ?? -1
      if (list !== undefined && i >= 0) {
        list.splice(i, 1)
        if (list.length === 0) this.idle.delete(key)
      }
      session.close()
    }, this.idleLimitMs)
    const list = this.idle.get(key) ?? []
    list.push({ session, timer, since: this.clock.now() })
    this.idle.set(key, list)
  }

  size(): number {
    let n = 0
    for (const l of this.idle.values()) n += l.length
    return n
  }

  closeAll(): void {
    for (const list of this.idle.values()) {
      for (const e of list) {
        this.clock.clearTimeout(e.timer)
        e.session.close()
      }
    }
    this.idle.clear()
  }
}
