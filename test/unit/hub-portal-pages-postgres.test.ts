/** hub-portal-pages.test.ts again, on a real PostgreSQL (test/helpers/postgres.ts): every page's queries on both engines. */
import t from 'tap'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'

const skip = postgresSkipReason()
if (skip) {
  t.plan(0, skip)
} else {
  const pg = await startPostgres('enclave-pg-portal')
  t.teardown(() => pg.stop())
  ;(globalThis as { ENCLAVE_TEST_HUB_DB?: (name: string) => Promise<string> }).ENCLAVE_TEST_HUB_DB = (name) => pg.database(name)
  await import('./hub-portal-pages.test.js')
}
