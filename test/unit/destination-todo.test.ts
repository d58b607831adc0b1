// The fair to-do list of a destination queue: least-held-first between messages, FIFO when every message
// has one request, nothing lost or started twice.
import { describe, expect, test } from "vitest"
import { DestinationTodo } from "../../src/actors/destination-todo.js"

interface Req {
  readonly message: { readonly id: number }
  readonly name: string
}
const req = (id: number, name: string): Req => ({ message: { id }, name })

const takeAll = (todo: DestinationTodo<Req>): Array<string> => {
  const out: Array<string> = []
  for (let r = todo.take(); r !== undefined; r = todo.take()) out.push(r.name)
  return out
}

describe("DestinationTodo", () => {
  test("one request per message: exactly the order they were queued in", () => {
    const todo = new DestinationTodo<Req>()
    for (let i = 1; i <= 5; i++) todo.push(req(i, `m${i}`))
    expect(todo.size).toBe(5)
    expect(takeAll(todo)).toEqual(["m1", "m2", "m3", "m4", "m5"])
    expect(todo.size).toBe(0)
  })

  test("a one-recipient message queued behind a long list takes the next free slot", () => {
    const todo = new DestinationTodo<Req>()
    for (let i = 0; i < 200; i++) todo.push(req(1, `list${i}`))
    // the list fills a window of 3
    const running = [todo.take()!, todo.take()!, todo.take()!]
    expect(running.map((r) => r.name)).toEqual(["list0", "list1", "list2"])
    todo.push(req(2, "small"))
    todo.finished(running[0]!)
    expect(todo.take()!.name).toBe("small")
    // then the list has the window to itself again
    todo.finished(running[1]!)
    expect(todo.take()!.name).toBe("list3")
  })

  test("two lists share the window evenly instead of one waiting for the other", () => {
    const todo = new DestinationTodo<Req>()
    for (let i = 0; i < 10; i++) todo.push(req(1, `a${i}`))
    for (let i = 0; i < 10; i++) todo.push(req(2, `b${i}`))
    const started = [todo.take()!, todo.take()!, todo.take()!, todo.take()!]
    expect(started.map((r) => r.name)).toEqual(["a0", "b0", "a1", "b1"])
  })

  test("with nothing else waiting, one message may use every slot (work-conserving)", () => {
    const todo = new DestinationTodo<Req>()
    for (let i = 0; i < 4; i++) todo.push(req(7, `r${i}`))
    expect(takeAll(todo)).toEqual(["r0", "r1", "r2", "r3"])
  })

  test("drain returns every queued request once; running ones finish normally afterwards", () => {
    const todo = new DestinationTodo<Req>()
    for (let i = 0; i < 3; i++) todo.push(req(1, `a${i}`))
    todo.push(req(2, "b0"))
    const running = todo.take()!
    expect(todo.drain().map((r) => r.name).sort()).toEqual(["a1", "a2", "b0"])
    expect(todo.size).toBe(0)
    expect(todo.take()).toBeUndefined()
    todo.finished(running)
    todo.push(req(1, "a3"))
    expect(takeAll(todo)).toEqual(["a3"])
  })

  test("a message whose requests all finished is forgotten; a late finished() is harmless", () => {
    const todo = new DestinationTodo<Req>()
    todo.push(req(1, "x"))
    const x = todo.take()!
    todo.finished(x)
    todo.finished(x)
    todo.push(req(2, "y"))
    todo.push(req(1, "z"))
    expect(takeAll(todo)).toEqual(["y", "z"])
  })
})
