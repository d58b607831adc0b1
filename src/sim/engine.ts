// One policy of a scenario, run: the production queue manager, destination queues, delivery agent and
// machines, group committer and SQLite schema, assembled as src/actors/system.ts assembles them but
// with a ManualClock, seeded Rng streams, a DNS table and modelled destinations behind the Connector
// seam. Time moves only when nothing else can happen: flush the committer, drain the microtasks, repeat
// until quiet, then jump to the next timer or arrival. Same inputs, same seed: the same run, every time.
import Database from "better-sqlite3"
import { pino } from "pino"
import { startEngine } from "../actors/system.js"
import type { Logger } from "../runtime/log.js"
import { openQueueInMemory } from "../store/open.js"
import { BODY_CHUNK_BYTES, commitMessage } from "../store/queue-store.js"
import { migrate } from "../store/schema.js"
import type { NewMessage } from "../store/types.js"
import { SimClock } from "./clock.js"
import { ModelledInternet, type DestinationStats } from "./destinations.js"
import { stream } from "./random.js"
import type { DestinationSpec, PolicySpec, Scenario } from "./scenario.js"
import type { SimMessage } from "./traffic.js"

export interface PolicyRunInput {
  readonly scenario: Scenario
  readonly policy: PolicySpec
  readonly seed: number
  readonly traffic: ReadonlyArray<SimMessage>
  readonly destinations: ReadonlyArray<DestinationSpec>
  /** A database file to run on instead of memory (it is replaced). */
  readonly dbFile?: string
  /** Progress lines (for stderr). */
  readonly progress?: (line: string) => void
}

export interface PolicyRun {
  readonly policy: PolicySpec
  /** The run's queue database (production schema), still open: the caller reads and closes it. */
  readonly db: Database.Database
  /** Queue id → the traffic message it carries; other queue ids are Postern's own reports. */
  readonly queueIds: ReadonlyMap<string, number>
  /** When the run ended, ms after time 0. */
  readonly endedAt: number
  /** Why it ended: no work left, or the scenario's `until`. */
  readonly ended: "idle" | "until"
  readonly destinations: ReadonlyArray<{ readonly name: string; readonly stats: DestinationStats }>
  /** Errors the engine logged (there should be none). */
  readonly errors: ReadonlyArray<string>
}

/** A run with no `until` stops here anyway: past the longest queue lifetime anyone would simulate. */
const SAFETY_HORIZON = 60 * 86_400_000
const PROGRESS_EVERY = 86_400_000

/** Where the simulated mail comes from (the messages' `client` column). */
const SIM_CLIENT = { address: "192.0.2.1", helo: "injector.sim.example", hostname: "injector.sim.example" }

const openDatabase = (file: string | undefined): Database.Database => {
  if (file === undefined) return openQueueInMemory()
  const db = new Database(file)
  db.pragma("journal_mode = WAL")
  db.pragma("synchronous = OFF") // a simulation needs no durability, only the same schema
  migrate(db)
  return db
}

/** Logs the engine's errors (and worse) into a list, for the summary; nothing else is logged. */
const errorCollector = (errors: Array<string>): Logger =>
  pino({ level: "error", base: null, timestamp: false }, { write: (line: string) => void errors.push(line.trim()) })

let filler: Buffer = Buffer.alloc(0)
const fillerOf = (size: number): Buffer => {
  if (filler.length < size) filler = Buffer.from("x".repeat(74).concat("\r\n").repeat(Math.ceil((size * 2) / 76)), "latin1")
  return filler
}

/** A plain message of the traffic's size, headers first. */
const bodyOf = (m: SimMessage, sender: string, seed: number): Buffer => {
  const head = Buffer.from(
    `From: <${sender}>\r\nTo: ${m.recipients.map((r) => `<${r}>`).join(", ")}\r\nSubject: simulated message ${m.index}\r\n` +
      `Message-ID: <${m.index}.${seed}@sim.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`,
    "latin1",
  )
  const size = Math.max(m.size, head.length + 2)
  const body = Buffer.allocUnsafe(size)
  head.copy(body, 0)
  fillerOf(size).copy(body, head.length, 0, size - head.length - 2)
  body.write("\r\n", size - 2, "latin1")
  return body
}

const chunksOf = (body: Buffer): Array<Buffer> => {
  const out: Array<Buffer> = []
  for (let i = 0; i < body.length; i += BODY_CHUNK_BYTES) out.push(body.subarray(i, i + BODY_CHUNK_BYTES))
  return out
}

/**
 * Resolves once every microtask queued before it, and every microtask those queue, has run: Node runs a
 * nextTick callback only when the microtask queue is empty. The engine and the modelled world schedule
 * their work with promises, queueMicrotask and the virtual clock alone (no stream, no setImmediate on this
 * path), so that is "nothing else can happen now", without a turn of the event loop (a turn costs ~3 µs,
 * and a run takes hundreds of thousands of steps).
 */
const microtasksDrained = () => new Promise<void>((resolve) => process.nextTick(resolve))
/** A real turn of the event loop, now and then, so that signals and stderr are served during a long run. */
const eventLoopTurn = () => new Promise<void>((resolve) => setImmediate(resolve))
const STEPS_PER_TURN = 1_000

export const runPolicy = async (input: PolicyRunInput): Promise<PolicyRun> => {
  const { scenario, policy, seed, traffic } = input
  const config = policy.config
  const start = scenario.start
  const clock = new SimClock(start)
  const db = openDatabase(input.dbFile)
  const errors: Array<string> = []
  const log = errorCollector(errors)
  const net = new ModelledInternet(input.destinations, seed, clock)
  // The same engine `postern start` runs; only time, chance, DNS and the far ends are modelled. Its
  // attempts-log pruner is never started: every attempt is this run's output (attemptLogRetention is moot).
  const { committer, qmgr, newQueueId, agent } = startEngine({
    config: () => config,
    db,
    clock,
    rng: stream(seed, "engine/queue-ids"),
    dns: net.dns,
    log,
    connector: net.connector,
    groupCommit: { windowMs: 0, lazyWindowMs: 0, maxBatch: 1_000_000, flushedByOwner: true },
    exit: (_code, err) => void errors.push(`escalated to the root: ${String(err)}`),
  })
  qmgr.start()

  const committed = () => {
    const s = committer.stats()
    return s.operations + s.failures
  }
  /** Runs everything that can run without time moving: microtasks, then a commit, until both are quiet. */
  let steps = 0
  const settle = async () => {
    if (++steps % STEPS_PER_TURN === 0) await eventLoopTurn()
    for (;;) {
      await microtasksDrained()
      const before = committed()
      committer.flush()
      if (committed() === before) return
    }
  }

  // Mail enters as smtpd hands it over: committed (admitted to the active window when it has room), then
  // given to the queue manager, or left pending in the store for its scan.
  const queueIds = new Map<string, number>()
  const sender = scenario.traffic.sender
  let admitting = 0
  const inject = (m: SimMessage) => {
    const now = clock.now()
    const queueId = newQueueId()
    queueIds.set(queueId, m.index)
    const body = bodyOf(m, sender, seed)
    const admit = qmgr.activeCount() + admitting < config.qmgrMessageActiveLimit
    if (admit) admitting++
    const message: NewMessage = {
      queueId,
      arrivalTime: now,
      sender,
      mailParams: {},
      client: SIM_CLIENT,
      recipients: m.recipients.map((address) => ({ address, params: {} })),
      size: body.length,
    }
    committer.run((tx) => commitMessage(tx, message, chunksOf(body), 0, null, admit, now + qmgr.leaseMs)).then(
      (c) => {
        if (!admit) return qmgr.noteBacklog()
        admitting--
        qmgr.admit({ id: c.messageId, queueId, arrivalTime: now, sender, mailParams: {}, size: body.length, recipients: c.recipients, body })
      },
      (err: unknown) => void errors.push(`could not queue message ${m.index}: ${String(err)}`),
    )
  }

  const horizon = start + (scenario.until ?? SAFETY_HORIZON)
  let ended: "idle" | "until" = "idle"
  let nextReport = start + PROGRESS_EVERY
  let ai = 0
  await settle()
  for (;;) {
    const timerAt = clock.nextDueAt()
    const arrivalAt = ai < traffic.length ? start + traffic[ai]!.at : null
    const next = timerAt === null ? arrivalAt : arrivalAt === null ? timerAt : Math.min(timerAt, arrivalAt)
    if (next === null) break
    if (next > horizon) {
      clock.advanceTo(horizon)
      await settle()
      ended = "until"
      break
    }
    clock.advanceTo(next)
    while (ai < traffic.length && start + traffic[ai]!.at <= clock.now()) inject(traffic[ai++]!)
    await settle()
    if (clock.now() >= nextReport && input.progress !== undefined) {
      while (nextReport <= clock.now()) nextReport += PROGRESS_EVERY
      const { n } = db.prepare("SELECT count(*) AS n FROM recipients").get() as { n: number }
      input.progress(`${policy.name}: ${hours(clock.now() - start)} simulated, ${ai}/${traffic.length} messages in, ${n} recipients queued`)
    }
  }
  const endedAt = clock.now() - start
  await qmgr.stop(0)
  agent.abortAll()
  await settle()
  committer.close()
  return { policy, db, queueIds, endedAt, ended, destinations: net.stats(), errors }
}

const hours = (ms: number): string => `${Math.floor(ms / 86_400_000)}d${String(Math.floor((ms % 86_400_000) / 3_600_000)).padStart(2, "0")}h`
