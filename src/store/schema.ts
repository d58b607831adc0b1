// The queue's schema, as numbered migrations applied in order at open. A migration never changes once
// released; a new one is appended. The version applied is kept in `schema_migrations`.
import type Database from "better-sqlite3"

export interface Migration {
  readonly version: number
  readonly description: string
  readonly sql: string
}

export const migrations: ReadonlyArray<Migration> = [
  {
    version: 1,
    description: "messages, recipients, bodies, attempts log",
    sql: `
      -- AUTOINCREMENT: ids are never reused, so a late write about a finished message or recipient
      -- can never land on a new one that happens to get the same rowid.
      CREATE TABLE messages (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id      TEXT    NOT NULL UNIQUE,
        -- 'incoming': body still streaming in (never acknowledged; recovery removes it)
        -- 'queued': acknowledged with 250, owned by the queue manager
        -- 'hold', 'corrupt': kept aside, never scheduled
        state         TEXT    NOT NULL,
        arrival_time  INTEGER NOT NULL,            -- epoch ms
        sender        TEXT    NOT NULL,            -- '' is the null sender <>
        size          INTEGER NOT NULL DEFAULT 0,  -- bytes of the stored message
        body_chunks   INTEGER NOT NULL DEFAULT 0,
        mail_params   TEXT    NOT NULL DEFAULT '{}', -- MAIL FROM parameters as given (BODY, SIZE, SMTPUTF8, ENVID, RET)
        client        TEXT    NOT NULL DEFAULT '{}'  -- who handed it to us: address, helo, hostname
      );
      CREATE TABLE recipients (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id      INTEGER NOT NULL,
        address         TEXT    NOT NULL,
        rcpt_params     TEXT    NOT NULL DEFAULT '{}', -- RCPT TO parameters as given (NOTIFY, ORCPT)
        -- 'pending': waits for next_attempt_at; 'active': in the queue manager's active window
        state           TEXT    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,            -- epoch ms
        destination     TEXT,                        -- service:nexthop of the last attempt
        last_reply      TEXT,                        -- why it waits (Postfix's delay_reason)
        lease_until     INTEGER                      -- while 'active': when the lease runs out
      );
      CREATE INDEX recipients_due ON recipients (next_attempt_at) WHERE state = 'pending';
      CREATE INDEX recipients_by_message ON recipients (message_id);
      CREATE TABLE bodies (
        message_id INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        data       BLOB    NOT NULL,
        PRIMARY KEY (message_id, seq)
      ) WITHOUT ROWID;
      CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,   -- epoch ms when the attempt ended
        queue_id    TEXT    NOT NULL,
        recipient   TEXT    NOT NULL,
        attempt     INTEGER NOT NULL,   -- 1 for the first attempt of this recipient
        destination TEXT    NOT NULL,   -- service:nexthop
        relay       TEXT,               -- host[ip]:port actually spoken to
        outcome     TEXT    NOT NULL,   -- sent | deferred | bounced | expired
        dsn         TEXT    NOT NULL,   -- enhanced status code
        reply       TEXT    NOT NULL,   -- remote reply or our reason
        duration_ms INTEGER NOT NULL
      );
      CREATE INDEX attempts_by_queue_id ON attempts (queue_id);
    `,
  },
  {
    version: 2,
    description: "attempts by time, for attemptLogRetention",
    sql: `CREATE INDEX attempts_by_time ON attempts (at);`,
  },
  {
    version: 3,
    description: "bodies as a rowid table: seeks compare two integers, not whole chunks",
    // WITHOUT ROWID keeps each row in its key's b-tree, where a chunk over ~1 KB overflows and every key
    // comparison of a seek (insert, delete, the damage check) reads the whole chunk; here the primary-key
    // index holds only (message_id, seq). Inserting and deleting a 4-20 KB body: 30 -> 12 µs.
    sql: `
      CREATE TABLE bodies_v3 (
        message_id INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        data       BLOB    NOT NULL,
        PRIMARY KEY (message_id, seq)
      );
      INSERT INTO bodies_v3 (message_id, seq, data) SELECT message_id, seq, data FROM bodies ORDER BY message_id, seq;
      DROP TABLE bodies;
      ALTER TABLE bodies_v3 RENAME TO bodies;
    `,
  },
]

/** Applies every migration newer than the database's version, each in its own transaction. */
export const migrate = (db: Database.Database): number => {
  db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
  const row = db.prepare("SELECT max(version) AS v FROM schema_migrations").get() as { v: number | null }
  let current = row.v ?? 0
  const newest = migrations[migrations.length - 1]?.version ?? 0
  if (current > newest) {
    throw new Error(
      `the queue database has schema version ${current}, newer than this Postern knows (${newest}); ` +
        "run a newer Postern or point dataDir at another folder",
    )
  }
  for (const m of migrations) {
    if (m.version <= current) continue
    db.transaction(() => {
      db.exec(m.sql)
      db.prepare("INSERT INTO schema_migrations (version, description) VALUES (?, ?)").run(m.version, m.description)
    })()
    current = m.version
  }
  return current
}
