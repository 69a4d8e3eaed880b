/**
 * Presence rows of hub replicas (src/hub/replicas.ts) on a real PostgreSQL (test/helpers/postgres.ts), with
 * Replicas objects in this process (no hub, no agents):
 * - a replica the leader took for dead (its heartbeat late) while its own session never failed says where
 *   its systems are again once its heartbeat is back;
 * - a replica back from a database outage does not claim a system that has since attached to another
 *   replica (the newer attachment wins);
 * - a leader whose session PostgreSQL ended without a word reaching it (a cut network: here a TCP proxy on
 *   loopback that stops forwarding) stops believing it leads once another replica has the lock.
 * Needs root (PostgreSQL runs as the postgres user).
 */
import net from 'node:net'
import path from 'node:path'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import t from 'tap'
import { PG_LEADER_LOCK, Replicas } from '../../src/hub/replicas.js'
import { type HubDb, HubStore } from '../../src/hub/store.js'
import { createLogger } from '../../src/log/logger.js'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'

const skip = postgresSkipReason()
if (skip) t.plan(0, skip)

const quiet = createLogger(0, 'logfmt', { out: { write: () => {} } })

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const t0 = Date.now()
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

if (!skip) {
  const server = await startPostgres('enclave-pg-presence')
  const open: { stop(): Promise<void> }[] = []
  const stores: HubStore[] = []
  t.teardown(async () => {
    for (const r of open) await r.stop()
    for (const s of stores) await s.close()
    await server.stop()
  })

  const holder = async (store: HubStore, systemId: number) =>
    (await store.db.selectFrom('presence').select('replica_id').where('system_id', '=', systemId).executeTakeFirst())?.replica_id

  t.test('a replica taken for dead while its session stayed up writes its presence again', async (t) => {
    const url = await server.database('presence_dead')
    const store = await HubStore.open({ postgresUrl: url })
    stores.push(store)
    // B leads (started first) and removes replicas whose heartbeat is older than 2 s; A beats every second.
    const b = new Replicas({
      store,
      log: quiet,
      postgresUrl: url,
      addr: 'b',
      heartbeatMs: 100,
      deadAfterMs: 2000,
      leaderEveryMs: 50,
      leaderWork: async () => {},
    })
    await b.start()
    open.push(b)
    t.ok(b.leader, 'B leads')
    const a = new Replicas({
      store,
      log: quiet,
      postgresUrl: url,
      addr: 'a',
      heartbeatMs: 1000,
      deadAfterMs: 2000,
      leaderWork: async () => {},
    })
    await a.start()
    open.push(a)
    t.notOk(a.leader, 'A does not lead')
    a.attached(7)
    await until('presence of system 7 on A', async () => (await holder(store, 7)) === a.id, 2000)
    // One of A's heartbeats is late (a stalled event loop, a slow pool): the leader removes A and its
    // presence rows. Nothing fails on A's side, and it still holds system 7.
    await until(
      'the leader removes A as dead',
      async () => {
        await store.db.updateTable('replicas').set({ heartbeat_ms: 0 }).where('id', '=', a.id).execute()
        return (await holder(store, 7)) === undefined
      },
      3000,
    )
    await until('system 7 reads as attached to A again', async () => (await holder(store, 7)) === a.id, 4000)
    t.pass('system 7 reads as attached to A again')
  })

  t.test('a replica back from an outage does not claim a system that attached elsewhere since', async (t) => {
    const url = await server.database('presence_moved')
    const store = await HubStore.open({ postgresUrl: url })
    stores.push(store)
    // A's own view of the database, which this test can cut (as a network partition would).
    const storeA = await HubStore.open({ postgresUrl: url })
    stores.push(storeA)
    const realDb = storeA.db
    const deadPool = new pg.Pool({
      connectionString: 'postgresql://postgres@/nowhere?host=/nonexistent-enclave-socket',
      connectionTimeoutMillis: 500,
    })
    deadPool.on('error', () => undefined)
    const deadDb = new Kysely<HubDb>({ dialect: new PostgresDialect({ pool: deadPool }) })
    t.teardown(() => deadDb.destroy())
    const a = new Replicas({ store: storeA, log: quiet, postgresUrl: url, addr: 'a', heartbeatMs: 100, leaderWork: async () => {} })
    await a.start()
    open.push(a)
    const b = new Replicas({ store, log: quiet, postgresUrl: url, addr: 'b', heartbeatMs: 100, leaderWork: async () => {} })
    await b.start()
    open.push(b)
    a.attached(9)
    await until('presence of system 9 on A', async () => (await holder(store, 9)) === a.id, 2000)
    // A loses the database; the system's agent moves to B (A's old connection not yet closed).
    ;(storeA as { db: Kysely<HubDb> }).db = deadDb
    await until('A notices the outage', () => !a.databaseUp, 3000)
    await new Promise((r) => setTimeout(r, 20))
    b.attached(9)
    await until('presence of system 9 on B', async () => (await holder(store, 9)) === b.id, 2000)
    ;(storeA as { db: Kysely<HubDb> }).db = realDb
    await until('A reaches the database again', () => a.databaseUp, 3000)
    await new Promise((r) => setTimeout(r, 300))
    t.equal(await holder(store, 9), b.id, 'system 9 stays attached to B (its newer attachment)')
    // A system attached to A only is written again after the outage.
    a.attached(10)
    await until('presence of system 10 on A', async () => (await holder(store, 10)) === a.id, 2000)
  })

  t.test('a leader whose session was cut without a word stops leading', async (t) => {
    const url = await server.database('lead_cut')
    const store = await HubStore.open({ postgresUrl: url })
    stores.push(store)
    // A TCP proxy on loopback to the server's socket; `cut` stops it forwarding anything, closes included.
    let cut = false
    const sockets: net.Socket[] = []
    const proxy = net.createServer((down) => {
      const up = net.connect(path.join(server.socketDir, '.s.PGSQL.5432'))
      sockets.push(down, up)
      down.on('error', () => undefined)
      up.on('error', () => undefined)
      down.on('data', (d) => !cut && up.write(d))
      up.on('data', (d) => !cut && down.write(d))
      down.on('close', () => !cut && up.destroy())
      up.on('close', () => !cut && down.destroy())
    })
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()))
    t.teardown(() => {
      for (const s of sockets) s.destroy()
      proxy.close()
    })
    const viaProxy = `postgresql://postgres@127.0.0.1:${(proxy.address() as net.AddressInfo).port}/lead_cut`
    const fast = { heartbeatMs: 100, leaderTryMs: 100, leaderEveryMs: 100, leaderWork: async () => {} }
    const a = new Replicas({ store, log: quiet, postgresUrl: viaProxy, addr: 'a', ...fast })
    await a.start()
    open.push(a)
    t.ok(a.leader, 'A leads')
    const b = new Replicas({ store, log: quiet, postgresUrl: url, addr: 'b', ...fast })
    await b.start()
    open.push(b)
    t.notOk(b.leader, 'B does not')
    cut = true
    // PostgreSQL ends A's session (its keepalive, an operator, a restart of a pooler): nothing reaches A.
    await sql`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and objid = ${PG_LEADER_LOCK} and granted`.execute(
      store.db,
    )
    await until('B to lead', () => b.leader, 5000)
    await until('A to stop believing it leads', () => !a.leader, 5000)
    t.pass('one leader')
  })
}
