// A machine hosted as a transition function (src/actors/hosted-machine.ts), as the delivery agent hosts one
// attempt: entry actions see `self` (the initial state's once it is set), events sent from inside a transition are
// taken after it, the host hears `done` once, and a machine that throws fails once and takes nothing more.
import { assign, setup } from "xstate"
import { describe, expect, it } from "vitest"
import { HostedMachine } from "../../src/actors/hosted-machine.js"

const machine = setup({
  types: { context: {} as { log: Array<string> }, input: {} as { first: string }, events: {} as { type: "next" } | { type: "boom" }, output: {} as Array<string> },
  actions: {
    note: assign(({ context }, step: string) => ({ log: [...context.log, step] })),
    askNext: () => undefined,
  },
}).createMachine({
  context: ({ input }) => ({ log: [input.first] }),
  initial: "one",
  output: ({ context }) => context.log,
  states: {
    one: { entry: "askNext", on: { next: { target: "two", actions: { type: "note", params: "one->two" } } } },
    two: { entry: "askNext", on: { next: { target: "done", actions: { type: "note", params: "two->done" } }, boom: { actions: () => { throw new Error("boom") } } } },
    done: { type: "final" },
  },
})

const host = (askNext: (self: HostedMachine<typeof machine>, state: string) => void) => {
  const heard: Array<string> = []
  let m!: HostedMachine<typeof machine>
  const logic = machine.provide({ actions: { askNext: ({ self }) => askNext(self as unknown as HostedMachine<typeof machine>, (self as { getSnapshot(): { value: string } }).getSnapshot().value) } })
  m = new HostedMachine(logic, { done: (out) => void heard.push(`done ${out.join(",")}`), failed: (e) => void heard.push(`failed ${(e as Error).message}`) })
  return { heard, m: () => m, start: () => m.start({ first: "start" }) }
}

describe("hosted machine", () => {
  it("runs entry actions once their state is set, takes events sent from them after the transition, and is done once", () => {
    const states: Array<string> = []
    const h = host((self, state) => {
      states.push(state)
      self.send({ type: "next" }) // sent from inside the transition (or the initial entry): taken after it
    })
    h.start()
    // The initial state is set before its entry actions run (as an actor runs them at start); later entry
    // actions run inside their transition, as an actor's do.
    expect(states[0]).toBe("one")
    expect(states).toHaveLength(2)
    expect(h.heard).toEqual(["done start,one->two,two->done"])
    expect(h.m().getSnapshot().status).toBe("done")
    h.m().send({ type: "next" })
    expect(h.heard).toHaveLength(1)
  })

  it("a transition that throws fails the machine once; a stopped one takes nothing", () => {
    const h = host(() => undefined)
    h.start()
    h.m().send({ type: "next" })
    h.m().send({ type: "boom" })
    h.m().send({ type: "next" })
    expect(h.heard).toEqual(["failed boom"])
    expect(h.m().getSnapshot().status).toBe("stopped")

    const s = host(() => undefined)
    s.start()
    s.m().stop()
    s.m().send({ type: "next" })
    s.m().send({ type: "next" })
    expect(s.heard).toEqual([])
    expect(s.m().getSnapshot().status).toBe("stopped")
  })
})
