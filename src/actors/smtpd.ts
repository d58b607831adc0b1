// The SMTP server (Postfix's smtpd): one smtp-server instance per listener, one session actor per
// connection. Callbacks from smtp-server become session events; replies follow Postfix's texts. The
// reply to end-of-data is sent only after the group commit holding the message, its body and all its
// recipients is on disk; a store failure becomes 451/452 so the client retries and nothing is lost. A
// session actor that fails is not restarted (system.ts): its client hears 421 4.3.0 at its next command
// and is disconnected; the listener and every other session go on.
import type { AddressInfo, Server as NetServer } from "node:net"
import type { Readable } from "node:stream"
import { SMTPServer, type SMTPServerSession, type SMTPServerAddress } from "smtp-server"
import { createActor, type ActorRefFrom } from "xstate"
import type { ListenerConfig, PosternConfig } from "../config/types.js"
import { sessionMachine, type Envelope } from "../machines/session.js"
import type { ClockShape } from "../runtime/clock.js"
import type { Logger } from "../runtime/log.js"
import { rfc5322Date } from "../dsn/ndr.js"
import { StoreError } from "../store/errors.js"
import type { GroupCommitter } from "../store/group-commit.js"
import { commitMessage } from "../store/queue-store.js"
import type { ActiveMessage, MailParams, RcptParams } from "../store/types.js"
import type { ResolverShape } from "../transport/dns.js"
import { addAcceptHandles, type AcceptHandles } from "../smtpd/accept-handles.js"
import { MessageIntake } from "../smtpd/intake.js"
import { checkRecipient, isInNetworks, parseNetworks } from "../smtpd/relay-policy.js"
import { replyForStoreFailure, SmtpReply } from "../smtpd/replies.js"
import { logActorFailure } from "./failure-log.js"
import { withFaultHook, type FaultHooks } from "./fault-hooks.js"

export interface SmtpdDeps {
  readonly config: () => PosternConfig
  readonly committer: GroupCommitter
  readonly clock: ClockShape
  readonly log: Logger
  readonly dns: ResolverShape
  readonly newQueueId: () => string
  /** The queue manager's side of the hand-off. */
  readonly qmgr: { hasRoom(): boolean; admit(m: ActiveMessage): void; noteBacklog(): void; readonly leaseMs: number }
  /** Test-only: see fault-hooks.ts. */
  readonly faultHook?: FaultHooks["session"] | undefined
}

/** MAIL FROM and RCPT TO parameters Postern understands; anything else is refused (555 5.5.4). */
const MAIL_PARAMS = new Set(["SIZE", "BODY", "SMTPUTF8", "ENVID", "RET"])
const RCPT_PARAMS = new Set(["NOTIFY", "ORCPT"])

const paramsOf = (args: unknown): Record<string, string | true> => {
  const out: Record<string, string | true> = {}
  if (args !== null && typeof args === "object") {
    for (const [k, v] of Object.entries(args as Record<string, unknown>)) out[k.toUpperCase()] = v === true ? true : String(v)
  }
  return out
}

type SessionActor = ActorRefFrom<typeof sessionMachine>

/**
 * Accept handles per listener beyond its own: up to this many more new clients taken per turn of the
 * event loop (see accept-handles.ts).
 */
const EXTRA_ACCEPT_HANDLES = 3

const isLoopback = (ip: string): boolean => ip.startsWith("127.") || ip === "::1" || ip.startsWith("::ffff:127.")

export class Smtpd {
  private readonly servers: Array<SMTPServer> = []
  private readonly acceptHandles: Array<AcceptHandles> = []
  private readonly sessions = new Map<string, SessionActor>()
  /** The queue id of the message a session is receiving, while it receives it. */
  private readonly receiving = new Map<string, string>()
  private networks
  private readonly logsInfo: boolean
  private readonly sessionLogic: typeof sessionMachine

  constructor(private readonly deps: SmtpdDeps) {
    this.networks = parseNetworks(deps.config().mynetworks)
    this.logsInfo = deps.log.isLevelEnabled("info")
    this.sessionLogic = withFaultHook(sessionMachine, deps.faultHook)
  }

  isTrusted(address: string): boolean {
    return isInNetworks(address, this.networks)
  }

  /** Starts every listener; resolves once all are listening. */
  async listen(): Promise<ReadonlyArray<{ host: string; port: number }>> {
    const bound: Array<{ host: string; port: number }> = []
    for (const l of this.deps.config().listen) {
      const server = this.makeServer(l)
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject)
        server.listen(l.port, l.host, () => {
          server.removeListener("error", reject)
          resolve()
        })
      })
      server.on("error", (err) => this.deps.log.error({ actor: "smtpd", err }, "listener error"))
      const listener = (server as unknown as { server: NetServer }).server
      const addr = listener.address() as AddressInfo
      bound.push({ host: l.host, port: addr.port })
      this.servers.push(server)
      // Connections from the extra handles go where the listener's own go: smtp-server's handler.
      const extra = await addAcceptHandles(
        listener,
        EXTRA_ACCEPT_HANDLES,
        (socket) => listener.emit("connection", socket),
        (err) => this.deps.log.warn({ actor: "smtpd", err }, "extra accept handle"),
      )
      this.acceptHandles.push(extra)
      if (extra.count < EXTRA_ACCEPT_HANDLES) {
        this.deps.log.warn({ actor: "smtpd", listener: `${l.host}:${addr.port}`, extraAcceptHandles: extra.count }, "fewer accept handles than planned: new clients may wait longer under load")
      }
    }
    return bound
  }

  /** Stops accepting connections; open sessions finish (smtp-server closes them after its timeout). */
  async close(): Promise<void> {
    for (const h of this.acceptHandles.splice(0)) h.close()
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))))
    this.servers.length = 0
  }

  sessionCount(): number {
    return this.sessions.size
  }

  private makeServer(l: ListenerConfig): SMTPServer {
    const config = this.deps.config()
    return new SMTPServer({
      name: config.hostname,
      banner: "Postern", // smtp-server writes "<name> ESMTP <banner>", as Postfix's smtpd_banner
      size: config.messageSizeLimit,
      disabledCommands: ["AUTH", "STARTTLS"],
      authOptional: true,
      hideSTARTTLS: true,
      hideDSN: true,
      hideREQUIRETLS: true,
      hideENHANCEDSTATUSCODES: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      logger: false,
      socketTimeout: config.smtpdTimeout,
      closeTimeout: 10_000,
      greetingDelay: (remote: string) => (this.isTrusted(remote) ? 0 : l.greetWait),
      resolver: {
        reverse: (ip: string, cb: (err: Error | null, names?: Array<string>) => void) => {
          // A loopback client is localhost: no PTR query leaves the machine for it.
          if (isLoopback(ip)) return cb(null, ["localhost"])
          this.deps.dns.reverse(ip).then((n) => cb(null, [...n]), (e: Error) => cb(e))
        },
      },
      onConnect: (session, cb) => {
        this.openSession(session)
        cb()
      },
      onClose: (session) => this.closeSession(session),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => {
        this.onData(stream, session).then(
          (text) => cb(null, text),
          (err: SmtpReply) => cb(err),
        )
      },
    } as ConstructorParameters<typeof SMTPServer>[0])
  }

  private openSession(session: SMTPServerSession): void {
    const actor = createActor(this.sessionLogic, {
      clock: this.deps.clock,
      input: {
        sessionId: session.id,
        clientAddress: session.remoteAddress,
        trusted: this.isTrusted(session.remoteAddress),
        recipientLimit: this.deps.config().smtpdRecipientLimit,
      },
    })
    actor.subscribe({
      error: (err) => {
        const held = this.receiving.get(session.id)
        logActorFailure(
          this.deps.log,
          { actor: `session/${session.id}`, parent: "smtpd", queueIds: held === undefined ? [] : [held], restarts: 0, err },
          "the client gets 421 4.3.0 and is disconnected (not restarted; nothing unacknowledged is kept)",
        )
      },
    })
    actor.start()
    this.sessions.set(session.id, actor)
  }

  private closeSession(session: SMTPServerSession): void {
    const actor = this.sessions.get(session.id)
    if (actor === undefined) return
    actor.stop() // the connection is gone: the actor ends with it (no event needed to say so)
    this.sessions.delete(session.id)
  }

  /** A failed session actor answers nothing more: its client is told 421 and disconnected. */
  private hasFailed(actor: SessionActor): boolean {
    return actor.getSnapshot().status === "error"
  }

  private sessionFailed(): SmtpReply {
    return SmtpReply.of("SESSION_FAILED", this.deps.config().hostname)
  }

  private actorOf(session: SMTPServerSession): SessionActor {
    let actor = this.sessions.get(session.id)
    if (actor === undefined) {
      this.openSession(session)
      actor = this.sessions.get(session.id)!
    }
    return actor
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const params = paramsOf(address.args)
    const unknown = Object.keys(params).find((k) => !MAIL_PARAMS.has(k))
    if (unknown !== undefined) return cb(SmtpReply.of("UNSUPPORTED_OPTION", unknown))
    // The HELO/EHLO name rides with MAIL: one event less per session on the hot path.
    const helo = session.hostNameAppearsAs ?? ""
    const actor = this.actorOf(session)
    if (!this.hasFailed(actor)) actor.send({ type: "smtp.mail", sender: address.address, params: params as MailParams, ...(helo !== "" ? { helo } : {}) })
    cb(this.hasFailed(actor) ? this.sessionFailed() : null)
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const actor = this.actorOf(session)
    if (this.hasFailed(actor)) return cb(this.sessionFailed())
    const params = paramsOf(address.args)
    const unknown = Object.keys(params).find((k) => !RCPT_PARAMS.has(k))
    if (unknown !== undefined) return cb(SmtpReply.of("UNSUPPORTED_OPTION", unknown))
    const ctx = actor.getSnapshot().context
    if ((ctx.envelope?.recipients.length ?? 0) >= ctx.recipientLimit) {
      return cb(SmtpReply.of("TOO_MANY_RECIPIENTS"))
    }
    const decision = checkRecipient(this.deps.config(), ctx.trusted, address.address)
    if (!decision.ok) {
      actor.send({ type: "smtp.rcpt.rejected", address: address.address })
      if (this.hasFailed(actor)) return cb(this.sessionFailed())
      this.deps.log.info(
        { actor: `session/${session.id}`, client: session.remoteAddress, to: address.address, reply: SmtpReply.text("RELAY_DENIED", address.address) },
        `NOQUEUE: reject: RCPT from [${session.remoteAddress}]: 554 ${SmtpReply.text("RELAY_DENIED", address.address)}`,
      )
      return cb(SmtpReply.of("RELAY_DENIED", address.address))
    }
    actor.send({ type: "smtp.rcpt.accepted", address: address.address, params: params as RcptParams })
    cb(this.hasFailed(actor) ? this.sessionFailed() : null)
  }

  private async onData(stream: Readable, session: SMTPServerSession): Promise<string> {
    const config = this.deps.config()
    const actor = this.actorOf(session)
    const envelope = actor.getSnapshot().context.envelope
    if (this.hasFailed(actor)) {
      stream.resume()
      throw this.sessionFailed()
    }
    if (envelope === null || envelope.recipients.length === 0) {
      stream.resume()
      throw SmtpReply.of("NEED_RCPT")
    }
    actor.send({ type: "smtp.data.start" })
    if (this.hasFailed(actor)) {
      stream.resume()
      throw this.sessionFailed()
    }
    const queueId = this.deps.newQueueId()
    this.receiving.set(session.id, queueId)
    try {
      return await this.receive(stream, session, actor, envelope, queueId, config)
    } finally {
      this.receiving.delete(session.id)
    }
  }

  /** Streams the message into the store and commits it; the reply to end-of-data. */
  private async receive(
    stream: Readable,
    session: SMTPServerSession,
    actor: SessionActor,
    envelope: Envelope,
    queueId: string,
    config: PosternConfig,
  ): Promise<string> {
    const arrival = this.deps.clock.now()
    const intake = new MessageIntake(
      this.deps.committer,
      queueId,
      arrival,
      config.messageSizeLimit,
      this.receivedHeader(session, queueId, envelope.recipients, arrival, config),
    )
    try {
      for await (const chunk of stream) await intake.write(chunk as Buffer)
    } catch (err) {
      actor.send({ type: "smtp.data.aborted" })
      await intake.discard()
      throw SmtpReply.of("TRANSFER_INTERRUPTED")
    }
    actor.send({ type: "smtp.data.end" })
    if (this.hasFailed(actor)) {
      await intake.discard()
      throw this.sessionFailed()
    }
    if (intake.oversize || (stream as Readable & { sizeExceeded?: boolean }).sizeExceeded === true) {
      await intake.discard()
      actor.send({ type: "queue.message.failed", reason: "size" })
      throw SmtpReply.of("MESSAGE_TOO_BIG")
    }
    if (intake.hopCount() > config.hopcountLimit) {
      await intake.discard()
      actor.send({ type: "queue.message.failed", reason: "hops" })
      throw SmtpReply.of("TOO_MANY_HOPS")
    }
    try {
      const { tail, firstSeq, whole } = await intake.finish()
      const admit = this.deps.qmgr.hasRoom()
      const message = {
        queueId,
        arrivalTime: arrival,
        sender: envelope.sender,
        mailParams: envelope.mailParams,
        client: { address: session.remoteAddress, helo: session.hostNameAppearsAs ?? "", hostname: session.clientHostname ?? "" },
        recipients: envelope.recipients,
        size: intake.size,
      }
      const leaseUntil = arrival + this.deps.qmgr.leaseMs
      const committed = await this.deps.committer.run((db) =>
        commitMessage(db, message, tail, firstSeq, intake.incomingId, admit, leaseUntil),
      )
      actor.send({ type: "queue.message.committed", queueId })
      if (this.logsInfo) this.deps.log.info(
        { queue_id: queueId, from: envelope.sender, size: intake.size, nrcpt: envelope.recipients.length, client: session.remoteAddress },
        `${queueId}: from=<${envelope.sender}>, size=${intake.size}, nrcpt=${envelope.recipients.length} (queue active)`,
      )
      if (admit) {
        this.deps.qmgr.admit({
          id: committed.messageId,
          queueId,
          arrivalTime: arrival,
          sender: envelope.sender,
          mailParams: envelope.mailParams,
          size: intake.size,
          recipients: committed.recipients,
          body: whole,
        })
      } else {
        this.deps.qmgr.noteBacklog()
      }
      return SmtpReply.text("QUEUED", queueId)
    } catch (err) {
      const e = StoreError.from(err)
      actor.send({ type: "queue.message.failed", reason: e.reason })
      await intake.discard()
      this.deps.log.error({ actor: `session/${session.id}`, queue_id: queueId, err: e }, "could not queue the message")
      throw SmtpReply.of(replyForStoreFailure(e.reason))
    }
  }

  private receivedHeader(
    session: SMTPServerSession,
    queueId: string,
    recipients: ReadonlyArray<{ address: string }>,
    now: number,
    config: PosternConfig,
  ): string {
    const helo = (session.hostNameAppearsAs ?? "unknown").replace(/[^\x21-\x7e]/g, "")
    const host = (session.clientHostname ?? "").replace(/^\[.*\]$/, "").replace(/[^\x21-\x7e]/g, "") || "unknown"
    const proto = session.transmissionType ?? "ESMTP"
    const forPart = recipients.length === 1 ? `\r\n\tfor <${recipients[0]!.address}>` : ""
    return `Received: from ${helo} (${host} [${session.remoteAddress}])\r\n\tby ${config.hostname} (Postern) with ${proto} id ${queueId}${forPart}; ${rfc5322Date(now)}\r\n`
  }
}
