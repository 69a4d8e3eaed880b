/**
 * PostgreSQL going down while the hub holds a connection in a transaction: the transaction fails with an
 * error the hub reads as "database down", and the process lives on (test/helpers/postgres.ts).
 */
import { sql } from 'kysely'
import t from 'tap'
import { HubStore, isDatabaseDown } from '../../src/hub/store.js'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'

const skip = postgresSkipReason()
if (skip) t.plan(0, skip)
else
  t.test('a transaction in flight when PostgreSQL stops fails cleanly; the process lives on', async (t) => {
    const pg = await startPostgres('enclave-pg-down')
    t.teardown(() => pg.stop())
    const store = await HubStore.open({ postgresUrl: await pg.database('hub') })
    t.teardown(() => store.close().catch(() => undefined))
    await store.setMeta('rev', '0')
    const inFlight = store.write({ actor: 'test', action: 'wait', target: 'x' }, async (trx) => {
      await sql`select pg_sleep(10)`.execute(trx)
    })
    const failed = inFlight.then(
      () => null,
      (e: unknown) => e,
    )
    await new Promise((r) => setTimeout(r, 300))
    await pg.stopServer()
    const err = await failed
    t.ok(err, 'the transaction failed')
    t.ok(isDatabaseDown(err), `and reads as the database being down (${(err as Error)?.message})`)
    await new Promise((r) => setTimeout(r, 500))
    t.pass('the process is still alive after the connection broke')
    await pg.startServer()
    await t.resolves(store.revision(), 'the store works again once PostgreSQL is back')
  })
