/**
 * The benchmark's and the unit tests' fixture: a client/exit-node pair of Pipelines sharing a session,
 * and synthetic packets. It lives in src/warmup/synthetic.ts, since the workers' warm-up runs it too.
 */
export * from '../src/warmup/synthetic.js'
