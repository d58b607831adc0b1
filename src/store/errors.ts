// Store failures as typed values. Each reason knows whether it is temporary, which is exactly the choice
// between a 4xx and a 5xx for the SMTP client waiting on the commit.
import { Data } from "effect"

export type StoreFailure = "disk-full" | "busy" | "io" | "read-only" | "corrupt" | "constraint" | "unknown"

export class StoreError extends Data.TaggedError("StoreError")<{
  readonly reason: StoreFailure
  readonly detail: string
}> {
  override get message(): string {
    return `store ${this.reason}: ${this.detail}`
  }

  static from(error: unknown): StoreError {
    if (error instanceof StoreError) return error
    const code = (error as { code?: unknown })?.code
    const detail = error instanceof Error ? error.message : String(error)
    switch (code) {
      case "SQLITE_FULL":
        return new StoreError({ reason: "disk-full", detail })
      case "SQLITE_BUSY":
      case "SQLITE_BUSY_RECOVERY":
      case "SQLITE_BUSY_SNAPSHOT":
      case "SQLITE_BUSY_TIMEOUT":
      case "SQLITE_LOCKED":
      case "SQLITE_LOCKED_SHAREDCACHE":
        return new StoreError({ reason: "busy", detail })
      case "SQLITE_READONLY":
        return new StoreError({ reason: "read-only", detail })
      case "SQLITE_CORRUPT":
      case "SQLITE_NOTADB":
        return new StoreError({ reason: "corrupt", detail })
      case "SQLITE_CONSTRAINT":
      case "SQLITE_CONSTRAINT_UNIQUE":
      case "SQLITE_CONSTRAINT_PRIMARYKEY":
        return new StoreError({ reason: "constraint", detail })
      default:
        if (typeof code === "string" && code.startsWith("SQLITE_IOERR")) {
          return detail.includes("full") || code === "SQLITE_IOERR_WRITE"
            ? new StoreError({ reason: "disk-full", detail })
            : new StoreError({ reason: "io", detail })
        }
        return new StoreError({ reason: "unknown", detail })
    }
  }
}
