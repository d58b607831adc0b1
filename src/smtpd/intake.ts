// The content of one DATA, on its way into the queue (Postfix's cleanup, the streaming part): our
// Received: header first, then the client's bytes. Small messages stay in memory; past one chunk the body
// spills to the store chunk by chunk (the message row stays 'incoming' until end-of-data commits it), so
// memory per session is bounded whatever the size. Counts Received: headers for the hop limit and stops
// storing once the size limit is passed (the client still gets its 552 after the final dot).
import type { GroupCommitter } from "../store/group-commit.js"
import { BODY_CHUNK_BYTES, appendBodyChunk, insertIncomingMessage } from "../store/queue-store.js"

/** The header section is scanned up to this many bytes (Postfix's header_size_limit). */
const HEADER_SCAN_LIMIT = 102_400

export class MessageIntake {
  /** Bytes of the stored message (our header included). */
  size = 0
  oversize = false
  /** Chunks not yet written to the store. */
  private held: Array<Buffer> = []
  private heldBytes = 0
  /** Set once the body spilled to the store. */
  incomingId: number | null = null
  /** Chunks already in the store. */
  storedChunks = 0
  private header: Array<Buffer> = []
  private headerBytes = 0
  private headerDone = false
  private pendingWrite: Promise<void> = Promise.resolve()
  private writeError: unknown = null

  constructor(
    private readonly committer: GroupCommitter,
    private readonly queueId: string,
    private readonly arrivalTime: number,
    private readonly sizeLimit: number,
    receivedHeader: string,
  ) {
    this.take(Buffer.from(receivedHeader, "latin1"), false)
  }

  /** Feeds client bytes. Resolves when it is safe to read more (the store has caught up). */
  write(chunk: Buffer): Promise<void> {
    if (!this.headerDone) this.scanHeader(chunk)
    this.take(chunk, true)
    return this.pendingWrite
  }

  /** The number of Received: headers in the message, ours included. */
  hopCount(): number {
    const text = Buffer.concat(this.header).toString("latin1")
    return (text.match(/^received:/gim) ?? []).length + 1
  }

  /** What is left for the final commit: the tail chunks and the sequence number of the first one. */
  async finish(): Promise<{ tail: Array<Buffer>; firstSeq: number; whole: Buffer | null }> {
    await this.pendingWrite
    if (this.writeError !== null) throw this.writeError
    const tail = this.split(Buffer.concat(this.held))
    const whole = this.incomingId === null ? Buffer.concat(this.held) : null
    return { tail, firstSeq: this.storedChunks, whole }
  }

  /** Discards what was spilled (a rejected or aborted message). */
  async discard(): Promise<void> {
    this.held = []
    await this.pendingWrite.catch(() => undefined)
    const id = this.incomingId
    if (id === null) return
    await this.committer
      .run((db) => {
        db.prepare("DELETE FROM bodies WHERE message_id = ?").run(id)
        db.prepare("DELETE FROM messages WHERE id = ? AND state = 'incoming'").run(id)
      })
      .catch(() => undefined) // recovery removes 'incoming' rows anyway
  }

  private take(chunk: Buffer, counted: boolean): void {
    this.size += chunk.length
    if (counted && this.size > this.sizeLimit && this.sizeLimit > 0) {
      this.oversize = true
      this.held = []
      this.heldBytes = 0
      return
    }
    if (this.oversize) return
    this.held.push(chunk)
    this.heldBytes += chunk.length
    if (this.heldBytes >= 2 * BODY_CHUNK_BYTES) this.spill()
  }

  private spill(): void {
    const all = Buffer.concat(this.held)
    const keep = all.length % BODY_CHUNK_BYTES
    const full = this.split(all.subarray(0, all.length - keep))
    this.held = keep > 0 ? [Buffer.from(all.subarray(all.length - keep))] : []
    this.heldBytes = keep
    const firstSeq = this.storedChunks
    this.storedChunks += full.length
    const needRow = this.incomingId === null
    this.pendingWrite = this.pendingWrite.then(() =>
      this.committer
        .run((db) => {
          if (needRow) this.incomingId = insertIncomingMessage(db, this.queueId, this.arrivalTime)
          full.forEach((c, i) => appendBodyChunk(db, this.incomingId!, firstSeq + i, c))
        })
        .catch((e: unknown) => {
          this.writeError = e
        }),
    )
    if (needRow) this.incomingId = -1 // reserved: the real id arrives with the commit above
  }

  private split(buf: Buffer): Array<Buffer> {
    const out: Array<Buffer> = []
    for (let i = 0; i < buf.length; i += BODY_CHUNK_BYTES) out.push(buf.subarray(i, i + BODY_CHUNK_BYTES))
    return out
  }

  private scanHeader(chunk: Buffer): void {
    this.header.push(chunk)
    this.headerBytes += chunk.length
    const joined = Buffer.concat(this.header)
    const end = Math.min(
      ...[joined.indexOf("\r\n\r\n"), joined.indexOf("\n\n")].filter((i) => i >= 0),
      joined.length,
    )
    if (end < joined.length || this.headerBytes >= HEADER_SCAN_LIMIT || joined.subarray(0, 2).toString() === "\r\n") {
      this.header = [joined.subarray(0, Math.min(end, HEADER_SCAN_LIMIT))]
      this.headerDone = true
    }
  }
}
