// What crosses between the queue manager's thread and the delivery thread, batched per turn of the event
// loop: a group commit admits a dozen messages at once, and they cross as one postMessage, so the other
// thread is woken once per turn rather than once per delivery (each wake-up can cost a context switch).

/** Collects what one turn posts and sends it as one batch when the turn's microtasks are done. */
export class Outbox<T> {
  private items: Array<T> = []
  constructor(private readonly send: (batch: ReadonlyArray<T>) => void) {}

  post(item: T): void {
    if (this.items.push(item) === 1) queueMicrotask(this.flush)
  }

  private readonly flush = (): void => {
    const batch = this.items
    this.items = []
    if (batch.length > 0) this.send(batch)
  }
}
