// The edge of the program: runs the root Effect, turns SIGTERM/SIGINT into an interruption (which runs
// every finalizer: listeners close, deliveries finish or time out, the store closes), and exits 0 after a
// signalled stop, non-zero after a failure. @effect/platform-node needs Node 22, so this is ours.
import { Runtime } from "effect"

export const runMain = Runtime.makeRunMain(({ fiber, teardown }) => {
  let signalled = false
  const onSignal = () => {
    if (signalled) return
    signalled = true
    fiber.interruptUnsafe(fiber.id)
  }
  fiber.addObserver((exit) => {
    process.removeListener("SIGINT", onSignal)
    process.removeListener("SIGTERM", onSignal)
    teardown(exit, (code) => process.exit(signalled && exit._tag === "Failure" && isInterruptOnly(exit) ? 0 : code))
  })
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
})

const isInterruptOnly = (exit: { _tag: string; cause?: unknown }): boolean => {
  const cause = exit.cause as { failures?: ReadonlyArray<{ _tag: string }> } | undefined
  return cause?.failures?.every((f) => f._tag === "Interrupt") ?? true
}
