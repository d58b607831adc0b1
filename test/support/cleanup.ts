// What an integration test starts, stopped after each test in reverse order: receivers, Postern instances
// and anything else registered with `onCleanup`. Call `withCleanup()` once at the top of a test file.
import { afterEach } from "vitest"
import { startPostern, type TestPostern } from "./postern.js"
import { startReceiver, type Receiver } from "./receiver.js"

export const withCleanup = () => {
  const closers: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c()
  })
  const onCleanup = (close: () => Promise<void> | void): void => void closers.push(close)
  const receiverWith = async (...args: Parameters<typeof startReceiver>): Promise<Receiver> => {
    const r = await startReceiver(...args)
    onCleanup(() => r.close())
    return r
  }
  const posternWith = async (...args: Parameters<typeof startPostern>): Promise<TestPostern> => {
    const p = await startPostern(...args)
    onCleanup(() => p.close())
    return p
  }
  return { onCleanup, receiverWith, posternWith }
}
