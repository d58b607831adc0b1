// The message machine hosted by the queue manager as a transition function instead of one xstate actor per
// message. A message lives in the active window for one delivery attempt, and an actor (its own actor
// system, mailbox, observers) cost more to create than the whole of its one or two transitions. Same machine,
// same events, same snapshots, taken one at a time; a transition that throws fails the message as an actor
// failure would: the host hears it once and the message takes no more events.
import { createActor, type AnyActorScope, type SnapshotFrom } from "xstate"
import type { MessageDecision, MessageEvent, MessageInput, messageMachine } from "../machines/message.js"

type MessageLogic = typeof messageMachine
export type MessageSnapshot = SnapshotFrom<MessageLogic>

/** What the host does when a message's state changes. */
export interface MessageObserver {
  /** The message waits for its next batch of recipients to be read from the store. */
  readonly awaitingBatch: () => void
  /** The message is decided. */
  readonly settled: (decision: MessageDecision) => void
  /** Its machine threw taking an event: the message has failed. */
  readonly failed: (error: unknown) => void
}

export class MessageHost {
  /**
   * One scope for every message: the machine has no children, delays or effects of its own (its actions are
   * assigns), so nothing in a transition depends on which actor runs it.
   */
  private readonly scope: AnyActorScope

  constructor(private readonly logic: MessageLogic) {
    const self = createActor(logic, { input: undefined as unknown as MessageInput })
    this.scope = {
      self,
      id: "message",
      sessionId: "message",
      logger: () => undefined,
      defer: (fn) => fn(),
      system: self.system,
      stopChild: () => undefined,
      emit: () => undefined,
      actionExecutor: (action) => action.exec?.(action.info, action.params),
    } as AnyActorScope
  }

  /** A message entering the window: call begin() on it to put it in its initial state. */
  create(observer: MessageObserver): HostedMessage {
    return new HostedMessage(this.logic, this.scope, observer)
  }
}

export class HostedMessage {
  private snapshot: MessageSnapshot | null = null

  constructor(
    private readonly logic: MessageLogic,
    private readonly scope: AnyActorScope,
    private readonly observer: MessageObserver,
  ) {}

  /** The machine's initial state from its input (a machine that throws here fails the message). */
  begin(input: MessageInput): void {
    try {
      this.snapshot = this.logic.getInitialSnapshot(this.scope, input)
    } catch (error) {
      this.observer.failed(error)
    }
  }

  /** The machine takes one event; ignored once the message is decided, failed or stopped. */
  send(event: MessageEvent): void {
    const current = this.snapshot
    if (current === null || current.status !== "active") return
    let next: MessageSnapshot
    try {
      next = this.logic.transition(current, event, this.scope)
    } catch (error) {
      this.snapshot = null
      this.observer.failed(error)
      return
    }
    this.snapshot = next
    if (next.status === "done") this.observer.settled(next.output as MessageDecision)
    else if (next.value === "awaitingBatch") this.observer.awaitingBatch()
  }

  /** Takes no more events (the message left the window). */
  stop(): void {
    this.snapshot = null
  }
}
