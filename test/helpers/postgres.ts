/** A real PostgreSQL for tests (src/lab/postgres.ts, shared with the benchmarks). */
export * from '../../src/lab/postgres.js'
