// Runs 2M new-flow policy decisions (100 policies, 1,000 peers, the benchmark's scenario) through the
// compiled evaluator (lib/) in a clean process started with --expose-gc, and prints
// {gcs, heapGrowth, decisions, allowed} as JSON. Used by policy-alloc.test.ts.
import { measureAllocation } from './measure-alloc.mjs'
import { policyScenario } from '../../lib/bench/policy.js'
import { compilePolicies } from '../../lib/src/compile/policy.js'
import { evaluatePolicy } from '../../lib/src/dataplane/policy.js'

const s = policyScenario(100, 1000)
const c = compilePolicies({
  selfTags: ['exit-node'],
  selfAddress: 0x64640001,
  providesRoutes: s.provides,
  peers: s.peers,
  policies: s.configs,
})
const t = c.table
const q = s.queries
const n = q.peer.length
function round() {
  let allowed = 0
  for (let i = 0; i < n; i++) if (evaluatePolicy(t, q.peer[i], q.proto[i], q.hi[i], q.lo[i], q.port[i]) >= 0) allowed++
  return allowed
}
const rounds = 32
const m = await measureAllocation(round, 10, rounds)
console.log(JSON.stringify({ gcs: m.gcs, heapGrowth: m.heapGrowth, growth: m.growth, decisions: rounds * n, allowed: m.total }))
