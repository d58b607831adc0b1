// Restart intensity for one supervised child (Erlang/OTP's, as Postfix's master throttles a failing
// service): at most `maxRestarts` failures within `withinMs`; each restart waits an exponentially growing
// backoff; past the limit the supervisor escalates to its own parent. Takes `child.failed` and
// `child.started`; emits nothing itself; the host reads `restarting` / `escalated` from the snapshot.
import { assign, setup } from "xstate"

export interface RestartPolicy {
  readonly maxRestarts: number
  readonly withinMs: number
  readonly backoffMs: number
  readonly maxBackoffMs: number
}

export interface SupervisorContext {
  readonly child: string
  readonly policy: RestartPolicy
  /** Times of recent failures (epoch ms), newest last, only those inside the window. */
  readonly failures: ReadonlyArray<number>
  readonly restarts: number
}

export type SupervisorEvent = { type: "child.failed"; now: number } | { type: "child.started" }

/** Whether one more failure at `now` stays within the restart intensity, given the earlier failure times. */
export const isWithinIntensity = (policy: RestartPolicy, failures: ReadonlyArray<number>, now: number): boolean =>
  failures.filter((t) => now - t < policy.withinMs).length + 1 <= policy.maxRestarts

export const restartBackoff = (policy: RestartPolicy, failuresInWindow: number): number =>
  Math.min(policy.backoffMs * 2 ** Math.max(0, failuresInWindow - 1), policy.maxBackoffMs)

export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    input: {} as { child: string; policy: RestartPolicy },
    events: {} as SupervisorEvent,
  },
  guards: {
    isWithinIntensity: ({ context, event }) =>
      event.type !== "child.failed" || isWithinIntensity(context.policy, context.failures, event.now),
  },
  actions: {
    recordFailure: assign({
      failures: ({ context, event }) =>
        event.type === "child.failed"
          ? [...context.failures.filter((t) => event.now - t < context.policy.withinMs), event.now]
          : context.failures,
    }),
    countRestart: assign({ restarts: ({ context }) => context.restarts + 1 }),
  },
  delays: {
    backoff: ({ context }) => restartBackoff(context.policy, context.failures.length),
  },
}).createMachine({
  id: "supervisor",
  context: ({ input }) => ({ child: input.child, policy: input.policy, failures: [], restarts: 0 }),
  initial: "running",
  states: {
    running: {
      description: "The child runs.",
      on: {
        "child.failed": [
          { guard: "isWithinIntensity", target: "restarting", actions: "recordFailure" },
          { target: "escalated", actions: "recordFailure" },
        ],
      },
    },
    restarting: {
      description: "The child failed within its restart intensity; it is restarted after the backoff.",
      after: { backoff: { target: "running", actions: "countRestart" } },
      on: { "child.failed": { actions: "recordFailure" } },
    },
    escalated: {
      description: "Too many failures in the window: the failure goes to this supervisor's parent.",
      type: "final",
    },
  },
})
