/**
 * hub-store.test.ts again, on a real PostgreSQL (test/helpers/postgres.ts: Debian's server, initdb as the
 * postgres user in a temporary directory, a Unix socket only): the same migrations, queries and rules on
 * both engines. Each hub gets a fresh database of its own.
 */
import t from 'tap'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'

const skip = postgresSkipReason()
if (skip) {
  t.plan(0, skip)
} else {
  const pg = await startPostgres('enclave-pg-store')
  t.teardown(() => pg.stop())
  ;(globalThis as { ENCLAVE_TEST_HUB_DB?: (name: string) => Promise<string> }).ENCLAVE_TEST_HUB_DB = (name) => pg.database(name)
  await import('./hub-store.test.js')
}
