/**
 * The hub's database: the source of truth. SQLite through better-sqlite3 (one file, WAL) by default,
 * through kysely so that the same migrations and queries serve PostgreSQL for several replicas.
 *
 * Every change that affects a map is one write transaction that first bumps the global revision (a
 * single row: its lock serialises writers, so revisions commit in order) and records a `changes` row
 * and an `audit` row. A running hub follows the revision (src/hub/hub.ts) and sends each connected
 * agent what changed for it; admin commands on the same host write here directly.
 */
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import {
  type ColumnDefinitionBuilder,
  type Generated,
  Kysely,
  type Migration,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  type Transaction,
  sql,
} from 'kysely'
import pg from 'pg'
import { EnclaveError } from '../errors.js'

export interface MetaTable {
  key: string
  value: string
}

export interface SystemTable {
  id: Generated<number>
  public_key: string
  identity: string
  virtual_address: number
  hostname: string
  state: string
  tags: string
  ephemeral: number
  enrolment_key_id: number | null
  enrolled_at: string
  approved_at: string | null
  approved_by: string | null
  last_seen_at: string | null
  allow_gateway: number
  accept_default_route: number
  last_hello_ts: string
  listen_port: number
  endpoint: string | null
  advertised_routes: string
}

export interface EnrolmentKeyTable {
  id: Generated<number>
  key_id: string
  secret_sha256: string
  description: string
  auto_approve: number
  ephemeral: number
  uses_remaining: number | null
  used_count: number
  expires_at: string | null
  enabled: number
  tags: string
  created_at: string
  created_by: string
}

export interface PolicyTable {
  id: Generated<number>
  description: string
  enabled: number
  body: string
  updated_rev: number
}

export interface RouteTable {
  system_id: number
  cidr: string
  source: string
  approved: number
}

export interface AuditTable {
  id: Generated<number>
  at: string
  rev: number
  actor: string
  action: string
  target: string
  details: string
}

/** The newest hello seen from a key the hub no longer knows (removed or declined): replays stay refused. */
export interface HelloFloorTable {
  public_key: string
  last_hello_ts: string
}

/** Portal accounts (issue 21): scrypt hashes, role admin or viewer. */
export interface AdminTable {
  id: Generated<number>
  username: string
  role: string
  password: string
  created_at: string
}

/** Portal sessions: only the SHA-256 of the cookie is stored, with the session's CSRF token. */
export interface SessionTable {
  id_sha256: string
  admin_id: number
  csrf: string
  created_at: string
  seen_at: string
}

/** API bearer tokens (`ehub_<id>_<secret>`): the secret's SHA-256 only. */
export interface ApiTokenTable {
  id: Generated<number>
  token_id: string
  secret_sha256: string
  description: string
  role: string
  created_at: string
  created_by: string
  expires_at: string | null
  revoked_at: string | null
  last_used_at: string | null
}

/** Hub replicas (PostgreSQL): each one's heartbeat, in the database's milliseconds. */
export interface ReplicaTable {
  id: string
  addr: string
  heartbeat_ms: number
}

/** Which replica each connected system is attached to (PostgreSQL). */
export interface PresenceTable {
  system_id: number
  replica_id: string
  since: string
}

export interface HubDb {
  replicas: ReplicaTable
  presence: PresenceTable
  admins: AdminTable
  sessions: SessionTable
  api_tokens: ApiTokenTable
  hello_floors: HelloFloorTable
  meta: MetaTable
  systems: SystemTable
  enrolment_keys: EnrolmentKeyTable
  policies: PolicyTable
  routes: RouteTable
  audit: AuditTable
}

export type Tx = Transaction<HubDb> | Kysely<HubDb>

export type Engine = 'sqlite' | 'postgres'

/**
 * Forward-only migrations, the same for both engines (an id column is SQLite's `integer primary key
 * autoincrement` or PostgreSQL's `serial primary key`); the Migrator records which ran and locks itself.
 */
export function migrations(engine: Engine): Record<string, Migration> {
  const ID =
    engine === 'postgres'
      ? { type: 'serial' as const, def: (c: ColumnDefinitionBuilder) => c.primaryKey() }
      : { type: 'integer' as const, def: (c: ColumnDefinitionBuilder) => c.primaryKey().autoIncrement() }
  return {
    '0001_initial': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('meta')
          .addColumn('key', 'varchar(64)', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('systems')
          .addColumn('id', ID.type, ID.def)
          .addColumn('public_key', 'varchar(64)', (c) => c.notNull().unique())
          .addColumn('identity', 'varchar(8)', (c) => c.notNull().unique())
          .addColumn('virtual_address', 'bigint', (c) => c.notNull().unique())
          .addColumn('hostname', 'text', (c) => c.notNull())
          .addColumn('state', 'varchar(16)', (c) => c.notNull())
          .addColumn('tags', 'text', (c) => c.notNull())
          .addColumn('ephemeral', 'integer', (c) => c.notNull())
          .addColumn('enrolment_key_id', 'integer')
          .addColumn('enrolled_at', 'text', (c) => c.notNull())
          .addColumn('approved_at', 'text')
          .addColumn('approved_by', 'text')
          .addColumn('last_seen_at', 'text')
          .addColumn('allow_gateway', 'integer', (c) => c.notNull())
          .addColumn('accept_default_route', 'integer', (c) => c.notNull())
          .addColumn('last_hello_ts', 'varchar(32)', (c) => c.notNull())
          .addColumn('listen_port', 'integer', (c) => c.notNull())
          .addColumn('endpoint', 'text')
          .addColumn('advertised_routes', 'text', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('enrolment_keys')
          .addColumn('id', ID.type, ID.def)
          .addColumn('key_id', 'varchar(8)', (c) => c.notNull().unique())
          .addColumn('secret_sha256', 'varchar(64)', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull().unique())
          .addColumn('auto_approve', 'integer', (c) => c.notNull())
          .addColumn('ephemeral', 'integer', (c) => c.notNull())
          .addColumn('uses_remaining', 'integer')
          .addColumn('used_count', 'integer', (c) => c.notNull())
          .addColumn('expires_at', 'text')
          .addColumn('enabled', 'integer', (c) => c.notNull())
          .addColumn('tags', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('policies')
          .addColumn('id', ID.type, ID.def)
          .addColumn('description', 'text', (c) => c.notNull().unique())
          .addColumn('enabled', 'integer', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .addColumn('updated_rev', 'integer', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('routes')
          .addColumn('system_id', 'integer', (c) => c.notNull().references('systems.id').onDelete('cascade'))
          .addColumn('cidr', 'varchar(20)', (c) => c.notNull())
          .addColumn('source', 'varchar(8)', (c) => c.notNull())
          .addColumn('approved', 'integer', (c) => c.notNull())
          .addPrimaryKeyConstraint('routes_pk', ['system_id', 'cidr'])
          .execute()
        await db.schema
          .createTable('audit')
          .addColumn('id', ID.type, ID.def)
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('rev', 'integer', (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('details', 'text', (c) => c.notNull())
          .execute()
        await db.schema.createIndex('audit_at').on('audit').column('at').execute()
      },
    },
    '0002_hello_floors': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('hello_floors')
          .addColumn('public_key', 'varchar(64)', (c) => c.primaryKey())
          .addColumn('last_hello_ts', 'varchar(32)', (c) => c.notNull())
          .execute()
      },
    },
    '0003_portal': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('admins')
          .addColumn('id', ID.type, ID.def)
          .addColumn('username', 'varchar(64)', (c) => c.notNull().unique())
          .addColumn('role', 'varchar(16)', (c) => c.notNull())
          .addColumn('password', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('sessions')
          .addColumn('id_sha256', 'varchar(64)', (c) => c.primaryKey())
          .addColumn('admin_id', 'integer', (c) => c.notNull().references('admins.id').onDelete('cascade'))
          .addColumn('csrf', 'varchar(64)', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('seen_at', 'text', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('api_tokens')
          .addColumn('id', ID.type, ID.def)
          .addColumn('token_id', 'varchar(16)', (c) => c.notNull().unique())
          .addColumn('secret_sha256', 'varchar(64)', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull().unique())
          .addColumn('role', 'varchar(16)', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text')
          .addColumn('revoked_at', 'text')
          .addColumn('last_used_at', 'text')
          .execute()
      },
    },
    '0004_replicas': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('replicas')
          .addColumn('id', 'varchar(16)', (c) => c.primaryKey())
          .addColumn('addr', 'text', (c) => c.notNull())
          .addColumn('heartbeat_ms', 'bigint', (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('presence')
          .addColumn('system_id', 'integer', (c) => c.primaryKey())
          .addColumn('replica_id', 'varchar(16)', (c) => c.notNull())
          .addColumn('since', 'text', (c) => c.notNull())
          .execute()
      },
    },
  }
}

export interface StoreOptions {
  /** SQLite database file. */
  file?: string
  /** PostgreSQL instead: postgres://user:pass@host:5432/db or postgresql:///db?host=/run/postgresql (a socket). */
  postgresUrl?: string
  /** Create the file (hub init); otherwise it must exist. */
  create?: boolean
}

/** A PostgreSQL URL without its password (user-info, or a `password`/`sslpassword` parameter), for messages and logs. */
export function redactUrl(u: string): string {
  try {
    const x = new URL(u)
    if (x.password) x.password = '***'
    for (const k of [...x.searchParams.keys()]) if (/password/i.test(k)) x.searchParams.set(k, '***')
    return x.toString()
  } catch {
    return '(an unreadable URL)'
  }
}

/** An error that says the database cannot be reached now (PostgreSQL down or restarting, a broken socket). */
export function isDatabaseDown(e: unknown): boolean {
  const err = e as { code?: string; message?: string }
  if (
    ['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'ETIMEDOUT', 'EPIPE', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08006'].includes(
      err?.code ?? '',
    )
  )
    return true
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|the database system is (starting up|shutting down)/i.test(
    err?.message ?? '',
  )
}

/** Every write transaction of a PostgreSQL hub takes this lock first: writes commit one at a time, as in SQLite. */
export const PG_WRITE_LOCK = 0x656e636c

export class HubStore {
  private constructor(
    readonly db: Kysely<HubDb>,
    readonly engine: Engine,
    private readonly raw: Database.Database | null,
    /** The SQLite file, or the PostgreSQL URL without its password. */
    readonly file: string,
    readonly pool: pg.Pool | null = null,
  ) {}

  static async open(opts: StoreOptions): Promise<HubStore> {
    if (opts.postgresUrl) return HubStore.openPostgres(opts.postgresUrl)
    const file = opts.file as string
    if (!opts.create && !fs.existsSync(file))
      throw new EnclaveError('ENOHUB', `no hub database at ${file}: run \`enclave hub init --data-dir ${path.dirname(file)}\` first`)
    let raw: Database.Database
    try {
      raw = new Database(file, { fileMustExist: !opts.create })
    } catch (e) {
      const err = e as NodeJS.ErrnoException
      throw new EnclaveError(
        err.code === 'SQLITE_CANTOPEN' ? 'EPERM' : 'ESTORE',
        `cannot open the hub database ${file}: ${err.message}${err.code === 'SQLITE_CANTOPEN' ? ' (hub administration needs the hub user or root)' : ''}`,
      )
    }
    if (opts.create) fs.chmodSync(file, 0o600)
    raw.pragma('journal_mode = WAL')
    raw.pragma('synchronous = NORMAL')
    raw.pragma('foreign_keys = ON')
    raw.pragma('busy_timeout = 5000')
    const db = new Kysely<HubDb>({ dialect: new SqliteDialect({ database: raw }) })
    const store = new HubStore(db, 'sqlite', raw, file)
    await store.migrate()
    return store
  }

  private static async openPostgres(url: string): Promise<HubStore> {
    const pool = new pg.Pool({
      connectionString: url,
      max: 8,
      connectionTimeoutMillis: 5000,
      // bigint (addresses) and counts as numbers: every value the hub keeps fits in 2^53.
      types: {
        getTypeParser: ((oid: number, format?: string) =>
          oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
      },
    })
    // An idle connection that breaks (PostgreSQL restarted) is dropped from the pool, not thrown.
    pool.on('error', () => undefined)
    // A connection that breaks while checked out (in a transaction, a heartbeat) emits 'error' on its client,
    // where the pool has no listener then: without this one, PostgreSQL going down could end the process.
    // The query in flight still fails, and its caller sees that.
    pool.on('connect', (client) => client.on('error', () => undefined))
    const store = new HubStore(new Kysely<HubDb>({ dialect: new PostgresDialect({ pool }) }), 'postgres', null, redactUrl(url), pool)
    try {
      await store.migrate()
    } catch (e) {
      await store.close()
      throw e
    }
    return store
  }

  async migrate(): Promise<string[]> {
    const m = migrations(this.engine)
    const migrator = new Migrator({ db: this.db, provider: { getMigrations: async () => m } })
    let out: Awaited<ReturnType<Migrator['migrateToLatest']>>
    try {
      out = await migrator.migrateToLatest()
    } catch (e) {
      throw new EnclaveError('ESTORE', `cannot reach the hub database ${this.file}: ${(e as Error).message}`)
    }
    const { error, results } = out
    if (error) throw new EnclaveError('ESTORE', `hub database migration failed (${this.file}): ${(error as Error).message}`)
    return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
  }

  async close(): Promise<void> {
    await this.db.destroy()
  }

  async getMeta(key: string, trx: Tx = this.db): Promise<string | undefined> {
    const r = await trx.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst()
    return r?.value
  }

  async setMeta(key: string, value: string, trx: Tx = this.db): Promise<void> {
    await trx
      .insertInto('meta')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute()
  }

  /** The revision every write so far reached (followers poll this). */
  async revision(): Promise<number> {
    return Number((await this.getMeta('rev')) ?? 0)
  }

  /**
   * One write transaction: takes the write lock first (SQLite: BEGIN IMMEDIATE, so two processes never
   * deadlock upgrading a read lock), bumps the revision when `bump`, runs `fn`, and records the audit row.
   */
  async write<T>(
    audit: { actor: string; action: string; target: string; details?: unknown } | null,
    fn: (trx: Tx, rev: number) => Promise<T>,
  ): Promise<T> {
    return this.db.connection().execute(async (conn) => {
      // SQLite: BEGIN IMMEDIATE takes the write lock at once. PostgreSQL: a transaction advisory lock, so
      // that writes from every replica run one at a time (a key's uses, address allocation) and their
      // revisions commit in order.
      if (this.engine === 'postgres') {
        await sql`begin`.execute(conn)
      } else await sql`begin immediate`.execute(conn)
      try {
        if (this.engine === 'postgres') await sql`select pg_advisory_xact_lock(${PG_WRITE_LOCK})`.execute(conn)
        let rev = 0
        if (audit) {
          await sql`update meta set value = cast(cast(value as integer) + 1 as text) where key = 'rev'`.execute(conn)
          rev = Number((await conn.selectFrom('meta').select('value').where('key', '=', 'rev').executeTakeFirstOrThrow()).value)
        }
        const out = await fn(conn, rev)
        if (audit)
          await conn
            .insertInto('audit')
            .values({
              at: new Date().toISOString(),
              rev,
              actor: audit.actor,
              action: audit.action,
              target: audit.target,
              details: JSON.stringify(audit.details ?? {}),
            })
            .execute()
        if (audit && this.engine === 'postgres') await sql`select pg_notify('enclave_hub', ${String(rev)})`.execute(conn)
        await sql`commit`.execute(conn)
        return out
      } catch (e) {
        await sql`rollback`.execute(conn).catch(() => undefined)
        throw e
      }
    })
  }

  /** The SQLite file's own online backup. */
  async backup(to: string): Promise<void> {
    if (!this.raw) throw new EnclaveError('EUSAGE', 'a PostgreSQL hub is backed up with pg_dump', 2)
    await this.raw.backup(to)
  }
}
