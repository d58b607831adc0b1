// The reply catalogue and its documentation stay in step: every reply is documented with its exact
// code and enhanced status code.
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { expect, test } from "vitest"
import { REPLIES, SmtpReply, type ReplyName } from "../../src/smtpd/replies.js"

const doc = readFileSync(join(import.meta.dirname, "../../docs/replies.md"), "utf8")

test.each(Object.keys(REPLIES) as Array<ReplyName>)("%s is documented with its code", (name) => {
  const r = REPLIES[name]
  const row = doc.split("\n").find((l) => l.startsWith(`| \`${name}\` |`))
  expect(row, `docs/replies.md has no row for ${name}`).toBeDefined()
  expect(row).toContain(`${r.code} ${r.enhanced}`)
})

test("a reply carries its code and the enhanced status code before its text", () => {
  const r = SmtpReply.of("RELAY_DENIED", "x@y.test")
  expect(r.responseCode).toBe(554)
  expect(r.message).toBe("5.7.1 <x@y.test>: Relay access denied")
  expect(SmtpReply.text("QUEUED", "ABC")).toBe("2.0.0 Ok: queued as ABC")
})
