// The control channel between the `postern` command and a running Postern (Postfix's triggers and showq,
// in one place): a Unix socket in the data folder, one JSON request per line, one JSON reply per line.
// Access is the data folder's: only who may write the queue may talk to it.
import { join } from "node:path"

export const CONTROL_SOCKET = "postern.sock"
export const controlSocketPath = (dataDir: string): string => join(dataDir, CONTROL_SOCKET)

export type ControlRequest =
  /** Clear dead marks and make deferred mail due now (all, or one destination: a nexthop or a domain). */
  | { readonly command: "flush"; readonly destination?: string }
  /** The state of every destination queue the queue manager holds. */
  | { readonly command: "status" }

export interface DestinationState {
  readonly key: string
  readonly state: "active" | "dead" | "rate-delayed"
  readonly window?: number
  readonly busy?: number
  readonly queued: number
  /** Epoch ms when a dead destination is tried again. */
  readonly deadUntil?: number
  /** Epoch ms when a rate-delayed destination may take its next delivery. */
  readonly rateDelayedUntil?: number
  readonly reason?: string
}

export type ControlReply =
  | { readonly ok: true; readonly flushed?: number; readonly destinations?: ReadonlyArray<DestinationState> }
  | { readonly ok: false; readonly error: string }
