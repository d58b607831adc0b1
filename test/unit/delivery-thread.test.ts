// Where the delivery agents run: `auto` takes a thread of their own when there is a second CPU;
// `worker` and `main` are obeyed as written.
import { describe, expect, test } from "vitest"
import { deliveryThreadOf, WORKER_MIN_CPUS } from "../../src/actors/delivery-pool.js"

describe("deliveryThread", () => {
  test("auto keeps delivery on the main thread with one CPU and moves it to a worker from WORKER_MIN_CPUS (2) on", () => {
    expect(deliveryThreadOf("auto", 1)).toBe("main")
    expect(deliveryThreadOf("auto", WORKER_MIN_CPUS - 1)).toBe("main")
    expect(deliveryThreadOf("auto", 2)).toBe("worker")
    expect(deliveryThreadOf("auto", WORKER_MIN_CPUS)).toBe("worker")
    expect(deliveryThreadOf("auto", 64)).toBe("worker")
  })

  test("an explicit setting wins whatever the host", () => {
    expect(deliveryThreadOf("worker", 1)).toBe("worker")
    expect(deliveryThreadOf("main", 64)).toBe("main")
  })
})
