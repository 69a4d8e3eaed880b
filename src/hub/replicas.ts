/**
 * Several hub replicas on one PostgreSQL database (issue 22). Everything durable is in the database; this
 * is what replicas tell each other beyond it:
 *
 * - **Presence**: which replica each connected system is attached to (`presence`), kept alive by a
 *   heartbeat per replica (`replicas`). A replica whose heartbeat is older than `deadAfterMs` is dead: the
 *   leader deletes it and its presence rows (its systems read as offline until they re-attach elsewhere).
 * - **Changes**: every write NOTIFYs `enclave_hub` with its revision after commit (src/hub/store.ts); a
 *   replica follows at once, and its 100 ms revision poll covers a lost notification or LISTEN connection.
 * - **One leader** holds a session advisory lock on a dedicated connection and runs the periodic work;
 *   when it dies its connection ends, the lock is free, and another replica takes it within
 *   `leaderTryMs` (2 s) plus the time PostgreSQL needs to notice the dead connection.
 * - **One hop between replicas**: a message for a system attached to another replica (an introduction
 *   for hole punching and the relay) goes to that replica's channel by NOTIFY.
 *
 * With SQLite there is one hub: it is the leader, presence is its own connections, and nothing here
 * touches the database.
 */
import { EventEmitter } from 'node:events'
import crypto from 'node:crypto'
import pg from 'pg'
import { sql } from 'kysely'
import type { AgentLogger as Logger } from '../log/logger.js'
import type { HubStore } from './store.js'

/** The session advisory lock of the leader (distinct from the write lock, PG_WRITE_LOCK). */
export const PG_LEADER_LOCK = 0x656e636d

export interface ReplicaOptions {
  store: HubStore
  log: Logger
  /** The connection URL (PostgreSQL only): the dedicated session for LISTEN and the leader lock. */
  postgresUrl?: string
  /** How other replicas and agents reach this one (for status and logs). */
  addr: string
  heartbeatMs?: number
  deadAfterMs?: number
  leaderTryMs?: number
  leaderEveryMs?: number
  /** The leader's periodic work. */
  leaderWork: () => Promise<void>
}

export class Replicas extends EventEmitter {
  readonly id = crypto.randomBytes(6).toString('hex')
  leader = false
  /** Systems attached to other live replicas: system id -> replica id. */
  private remote = new Map<number, string>()
  /** This replica's own attached systems (re-written after the database comes back). */
  private readonly local = new Set<number>()
  private client?: pg.Client
  private timers: NodeJS.Timeout[] = []
  private stopped = false
  private connecting = false
  private dbUp = true
  private leaderBusy = false

  constructor(private readonly o: ReplicaOptions) {
    super()
  }

  get postgres(): boolean {
    return this.o.store.engine === 'postgres'
  }

  /** The database answered the last heartbeat (always true for SQLite). */
  get databaseUp(): boolean {
    return this.dbUp
  }

  async start(): Promise<void> {
    const every = (ms: number, fn: () => Promise<void>) => {
      const t = setInterval(() => void fn().catch(() => undefined), ms)
      t.unref()
      this.timers.push(t)
    }
    if (!this.postgres) {
      this.leader = true
      every(this.o.leaderEveryMs ?? 5000, () => this.runLeaderWork())
      return
    }
    await this.heartbeat()
    await this.connect()
    every(this.o.heartbeatMs ?? 2000, () => this.heartbeat())
    every(this.o.leaderTryMs ?? 2000, () => this.tryLead())
    every(this.o.leaderEveryMs ?? 5000, () => this.runLeaderWork())
    await this.tryLead()
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    if (this.postgres) {
      // A clean stop hands its systems and the lead over at once.
      await sql`delete from presence where replica_id = ${this.id}`.execute(this.o.store.db).catch(() => undefined)
      await sql`delete from replicas where id = ${this.id}`.execute(this.o.store.db).catch(() => undefined)
    }
    const c = this.client
    this.client = undefined
    this.leader = false
    await c?.end().catch(() => undefined)
  }

  /** The dedicated session: LISTEN for revisions and messages to this replica; the leader lock lives on it. */
  private async connect(): Promise<void> {
    if (this.stopped || this.connecting || this.client) return
    this.connecting = true
    const c = new pg.Client({ connectionString: this.o.postgresUrl, connectionTimeoutMillis: 5000 })
    const lost = (why: string) => this.lose(c, why)
    c.on('error', (e) => lost(e.message))
    c.on('end', () => lost('connection ended'))
    c.on('notification', (n) => {
      if (n.channel === 'enclave_hub') this.emit('revision', Number(n.payload))
      else if (n.channel === this.channel(this.id) && n.payload)
        try {
          this.emit('message', JSON.parse(n.payload))
        } catch {
          // not ours
        }
    })
    try {
      await c.connect()
      if (this.stopped) {
        await c.end().catch(() => undefined)
        return
      }
      await c.query('listen enclave_hub')
      await c.query(`listen ${this.channel(this.id)}`)
      this.client = c
      // Anything missed while the session was down: follow the revision now.
      this.emit('revision', -1)
    } catch (e) {
      c.end().catch(() => undefined)
      this.o.log.debug({ err: (e as Error).message }, 'hub replica session: cannot connect yet')
    } finally {
      this.connecting = false
    }
  }

  /** The session is gone (or cannot be trusted): so is the lead that lives on it. */
  private lose(c: pg.Client, why: string): void {
    if (this.client !== c) return
    this.client = undefined
    if (this.leader) this.o.log.warn({ replica: this.id, why }, 'hub replica lost the lead (its database session ended)')
    this.leader = false
    c.end().catch(() => undefined)
  }

  private channel(id: string): string {
    return `enclave_hub_r_${id}`
  }

  private async heartbeat(): Promise<void> {
    if (!this.postgres || this.stopped) return
    const db = this.o.store.db
    try {
      await sql`insert into replicas (id, addr, heartbeat_ms) values (${this.id}, ${this.o.addr}, (extract(epoch from clock_timestamp()) * 1000)::bigint)
        on conflict (id) do update set heartbeat_ms = excluded.heartbeat_ms`.execute(db)
      const dead = this.o.deadAfterMs ?? 10_000
      // Our systems whose presence row is missing or another's: the leader took this replica for dead (a
      // late heartbeat, an outage), or a presence write failed. Written again unless a live replica holds
      // the system now (it attached there since; the connection here is the stale one and will close).
      await this.reassertPresence(dead)
      if (!this.dbUp) {
        this.o.log.info({ replica: this.id }, 'hub database reachable again')
        this.emit('revision', -1)
      }
      this.dbUp = true
      const rows = await sql<{ system_id: number; replica_id: string }>`select p.system_id, p.replica_id from presence p
        join replicas r on r.id = p.replica_id
        where r.heartbeat_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint - ${dead}`.execute(db)
      const m = new Map<number, string>()
      for (const r of rows.rows) if (r.replica_id !== this.id) m.set(Number(r.system_id), r.replica_id)
      this.remote = m
    } catch (e) {
      if (this.dbUp)
        this.o.log.warn({ err: (e as Error).message }, 'hub database unreachable: sessions and relays go on; enrolments and changes wait')
      this.dbUp = false
    }
    if (!this.client) await this.connect()
  }

  private async tryLead(): Promise<void> {
    const c = this.client
    if (!c || this.leader || this.stopped) return
    try {
      const r = await c.query('select pg_try_advisory_lock($1) as ok', [PG_LEADER_LOCK])
      if (r.rows[0]?.ok && this.client === c) {
        this.leader = true
        this.o.log.info({ replica: this.id }, 'this hub replica leads (periodic work)')
        this.emit('leader')
        await this.runLeaderWork()
      }
    } catch {
      // the session's own error handler notices
    }
  }

  private async runLeaderWork(): Promise<void> {
    if (!this.leader || this.leaderBusy || this.stopped) return
    this.leaderBusy = true
    try {
      if (this.postgres) {
        // The lead is the session's lock. A session PostgreSQL ended without a word reaching us (a cut
        // network) would leave two leaders: each round first confirms the lock on the session itself.
        const c = this.client
        // query_timeout (node-postgres reads it per query; its types do not list it): a cut session never answers.
        const check = {
          text: `select count(*)::int as n from pg_locks where locktype = 'advisory' and granted and pid = pg_backend_pid() and objid = $1`,
          values: [PG_LEADER_LOCK],
          query_timeout: this.o.leaderTryMs ?? 2000,
        } as pg.QueryConfig
        const held = c
          ? await c.query<{ n: number }>(check).then(
              (r) => Number(r.rows[0]?.n) > 0,
              () => false,
            )
          : false
        if (!held) {
          if (c) this.lose(c, 'the lead could not be confirmed on its session')
          this.leader = false
          return
        }
        const dead = this.o.deadAfterMs ?? 10_000
        // One statement: a replica whose heartbeat comes back in between cannot lose the rows it writes again.
        const gone = await sql<{ id: string; systems: number }>`with gone as (delete from replicas
            where heartbeat_ms < (extract(epoch from clock_timestamp()) * 1000)::bigint - ${dead} returning id),
          p as (delete from presence where replica_id in (select id from gone) returning replica_id)
          select g.id, (select count(*) from p where p.replica_id = g.id)::int as systems from gone g`.execute(this.o.store.db)
        for (const r of gone.rows)
          this.o.log.info({ replica: r.id, systems: r.systems }, 'hub replica is gone: its systems read as offline')
      }
      await this.o.leaderWork()
    } catch (e) {
      this.o.log.debug({ err: (e as Error).message }, 'leader work failed (database unreachable?)')
    } finally {
      this.leaderBusy = false
    }
  }

  private async reassertPresence(deadAfterMs: number): Promise<void> {
    if (!this.local.size) return
    const db = this.o.store.db
    const missing = await sql<{ id: number }>`select x.id from unnest(${[...this.local]}::int[]) as x(id)
      where not exists (select 1 from presence p where p.system_id = x.id and p.replica_id = ${this.id})`.execute(db)
    if (!missing.rows.length) return
    await sql`insert into presence (system_id, replica_id, since)
      select x.id, ${this.id}, ${new Date().toISOString()} from unnest(${missing.rows.map((r) => Number(r.id))}::int[]) as x(id)
      on conflict (system_id) do update set replica_id = excluded.replica_id, since = excluded.since
      where not exists (select 1 from replicas r where r.id = presence.replica_id
        and r.heartbeat_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint - ${deadAfterMs})`.execute(db)
  }

  private async writePresence(systemId: number): Promise<void> {
    await sql`insert into presence (system_id, replica_id, since) values (${systemId}, ${this.id}, ${new Date().toISOString()})
      on conflict (system_id) do update set replica_id = excluded.replica_id, since = excluded.since`.execute(this.o.store.db)
  }

  /** A system attached to this replica. */
  attached(systemId: number): void {
    this.local.add(systemId)
    this.remote.delete(systemId)
    if (this.postgres) this.writePresence(systemId).catch(() => undefined)
  }

  /** A system's connection to this replica closed (it may already be attached elsewhere). */
  detached(systemId: number): void {
    this.local.delete(systemId)
    if (this.postgres)
      sql`delete from presence where system_id = ${systemId} and replica_id = ${this.id}`.execute(this.o.store.db).catch(() => undefined)
  }

  /** The other replica a system is attached to, if any. */
  where(systemId: number): string | undefined {
    return this.remote.get(systemId)
  }

  /** Systems attached to other live replicas. */
  remoteSystems(): number[] {
    return [...this.remote.keys()]
  }

  /** One message to another replica (NOTIFY on its channel; at most 7,900 bytes). */
  async send(replicaId: string, msg: object): Promise<boolean> {
    const payload = JSON.stringify({ ...msg, from: this.id })
    if (payload.length > 7900 || !/^[0-9a-f]{12}$/.test(replicaId)) return false
    try {
      await sql`select pg_notify(${this.channel(replicaId)}, ${payload})`.execute(this.o.store.db)
      return true
    } catch {
      return false
    }
  }
}
