import { describe, expect, test } from "vitest"
import { CheckedBodies } from "../../src/actors/checked-bodies.js"

describe("CheckedBodies", () => {
  test("remembers the bodies found whole", () => {
    const checked = new CheckedBodies()
    expect(checked.has(7)).toBe(false)
    checked.add(7)
    expect(checked.has(7)).toBe(true)
    expect(checked.has(8)).toBe(false)
  })

  test("when full it starts over: a body is checked again, never skipped unchecked", () => {
    const checked = new CheckedBodies(2)
    checked.add(1)
    checked.add(2)
    checked.add(3)
    expect(checked.has(1)).toBe(false)
    expect(checked.has(2)).toBe(false)
    expect(checked.has(3)).toBe(true)
  })
})
