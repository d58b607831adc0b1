// A machine run by its host as a transition function, for a short-lived machine with no delays, children or
// persisted state (a message in the active window, one delivery attempt): an xstate actor (its own actor
// system, mailbox and observers) costs more to create than such a machine's few transitions. Same machine, events and snapshots; entry actions
// run as an actor runs them (those of the initial state once it is set, the others inside their
// transition) and get this object as `self`; events sent while a transition runs are taken after it, in
// order; a transition that throws fails the machine once, and it takes no more events.
import { createActor, type AnyActorScope, type AnyMachineSnapshot, type AnyStateMachine, type EventFromLogic, type InputFrom, type OutputFrom, type SnapshotFrom } from "xstate"

export interface HostedObserver<L extends AnyStateMachine> {
  /** The machine took a step (its initial state included) and is still running. */
  readonly changed?: (snapshot: SnapshotFrom<L>) => void
  /** The machine reached its final state. */
  readonly done: (output: OutputFrom<L>) => void
  /** The machine threw taking an event (or computing its initial state). */
  readonly failed: (error: unknown) => void
}

/** The actor system every hosted machine reports to (it only ever hears inspection events, and has no inspector). */
const systems = new WeakMap<AnyStateMachine, AnyActorScope["system"]>()
const systemOf = (logic: AnyStateMachine): AnyActorScope["system"] => {
  let system = systems.get(logic)
  if (system === undefined) {
    system = createActor(logic, { input: undefined }).system
    systems.set(logic, system)
  }
  return system
}

export class HostedMachine<L extends AnyStateMachine> {
  private snapshot: AnyMachineSnapshot | undefined
  private stopped = false
  /** Started: actions run inside their transition (before, those of the initial state wait for it). */
  private started = false
  /** A transition (or the actions after one) is running: events wait in the mailbox. */
  private processing = false
  private readonly mailbox: Array<EventFromLogic<L>> = []
  private readonly deferred: Array<() => void> = []
  private readonly scope: AnyActorScope

  constructor(
    private readonly logic: L,
    private readonly observer: HostedObserver<L>,
  ) {
    this.scope = {
      self: this,
      id: "",
      sessionId: "",
      logger: () => undefined,
      defer: (fn: () => void) => void this.deferred.push(fn),
      system: systemOf(logic),
      stopChild: () => undefined,
      emit: () => undefined,
      actionExecutor: (action: { exec?: (info: unknown, params: unknown) => void; info: unknown; params: unknown }) => {
        if (action.exec === undefined) return
        if (this.started) action.exec(action.info, action.params)
        else this.deferred.push(() => action.exec!(action.info, action.params))
      },
    } as unknown as AnyActorScope
  }

  /** Enters the initial state; its entry actions run once it is set. */
  start(input: InputFrom<L>): void {
    try {
      this.snapshot = this.logic.getInitialSnapshot(this.scope, input) as AnyMachineSnapshot
    } catch (error) {
      return this.fail(error)
    }
    this.started = true
    this.processing = true
    this.afterStep()
    this.drain()
  }

  getSnapshot(): { readonly status: string } {
    if (this.stopped || this.snapshot === undefined) return { status: "stopped" }
    return this.snapshot
  }

  /** The machine takes an event (after the one it is taking, if any); ignored once it is done, failed or stopped. */
  send(event: EventFromLogic<L>): void {
    if (this.stopped || this.snapshot?.status !== "active") return
    this.mailbox.push(event)
    if (this.processing) return
    this.processing = true
    this.drain()
  }

  /** Takes no more events; nothing is reported. */
  stop(): void {
    this.stopped = true
    this.mailbox.length = 0
    this.deferred.length = 0
  }

  /** Takes the events in the mailbox, one transition each, until it is empty or the machine stops. */
  private drain(): void {
    for (let event = this.mailbox.shift(); event !== undefined; event = this.mailbox.shift()) {
      if (this.stopped || this.snapshot?.status !== "active") break
      try {
        this.snapshot = this.logic.transition(this.snapshot, event, this.scope) as AnyMachineSnapshot
      } catch (error) {
        this.fail(error)
        break
      }
      this.afterStep()
    }
    this.mailbox.length = 0
    this.processing = false
  }

  /** Runs the actions deferred by the last step, then tells the host when the machine is done or failed. */
  private afterStep(): void {
    for (let fn = this.deferred.shift(); fn !== undefined; fn = this.deferred.shift()) {
      try {
        fn()
      } catch (error) {
        return this.fail(error)
      }
    }
    if (this.stopped || this.snapshot === undefined) return
    if (this.snapshot.status === "done") this.observer.done(this.snapshot.output as OutputFrom<L>)
    else if (this.snapshot.status === "error") this.fail(this.snapshot.error)
    else this.observer.changed?.(this.snapshot as SnapshotFrom<L>)
  }

  private fail(error: unknown): void {
    if (this.stopped) return
    this.stopped = true
    this.mailbox.length = 0
    this.deferred.length = 0
    this.observer.failed(error)
  }
}
