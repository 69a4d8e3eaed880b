/**
 * In-process benchmark of the policy evaluator (src/dataplane/policy.ts): new-flow decisions per second
 * with 100 policies and 1,000 peers (an exit node: ~70 policies for this system itself, ~30 granting
 * parts of two provided routes), against the compatibility-mode table (no Policies key).
 * Run alone: `node lib/bench/policy.js [seconds]` after tsc; prints one JSON line per case.
 * From bench/run.ts: `for (const r of await runPolicyBench(2)) emit(r)` (import from './policy.js').
 */
import { PerformanceObserver } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { type Cidr, parseCidr } from '../src/common/ipv4.js'
import { type RawPolicy, checkPolicies } from '../src/config/policies.js'
import { type PolicyPeer, compilePolicies } from '../src/compile/policy.js'
import { type PolicyTable, evaluatePolicy } from '../src/dataplane/policy.js'

export interface PolicyBenchResult {
  case: string
  policies: number
  peers: number
  decisions: number
  decisions_per_s: number
  ns_per_decision: number
  allowed_pct: number
  table_bytes: number
  compile_ms: number
  gcs: number
}

const SELF = 0x64640001 // 100.100.0.1
const QUERIES = 1 << 16

function lcg(seed: number): (n: number) => number {
  let s = seed >>> 0
  return (n) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return (s >>> 8) % n
  }
}

/** The scenario: 50 team tags, each peer in 1-3 teams, each policy from 1-3 teams to this exit node. */
export function policyScenario(policies: number, peers: number) {
  const rnd = lcg(42)
  const team = () => `team-${rnd(50)}`
  const provides = ['172.26.0.0/20', '10.9.0.0/16'].map((s) => parseCidr(s) as Cidr)
  const raw: RawPolicy[] = []
  for (let i = 0; i < policies; i++) {
    const acls = []
    for (let j = 0; j < 1 + rnd(4); j++) {
      const k = rnd(4)
      const lo = 1 + rnd(10000)
      if (k === 0) acls.push({ Protocol: 'Icmp' })
      else if (k === 1) acls.push({ Protocol: 'Udp', Ports: String(lo) })
      else acls.push({ Protocol: 'Tcp', Ports: rnd(2) ? String(lo) : `${lo}-${lo + rnd(500)}` })
    }
    const p: RawPolicy = {
      Description: `policy ${i}`,
      SenderTags: [team(), team(), team()].slice(0, 1 + rnd(3)),
      ReceiverTags: ['exit-node'],
      Acls: acls,
    }
    if (rnd(10) < 3) {
      p.GatewayRoutes = ['172.26.0.0/20']
      if (rnd(2)) p.GatewayAllowedIpRanges = [{ IpRange: `172.26.${rnd(16)}.0/24` }]
    }
    raw.push(p)
  }
  const peerList: PolicyPeer[] = []
  for (let slot = 0; slot < peers; slot++) peerList.push({ slot, tags: [team(), team(), team()].slice(0, 1 + rnd(3)) })
  const problems: { path: string; reason: string }[] = []
  const configs = checkPolicies(raw, ['exit-node'], provides, problems)
  if (problems.length) throw new Error(`scenario: ${problems[0].path}: ${problems[0].reason}`)
  // New flows: half to this system, half into the LAN; ports drawn near the ACLs' so some are allowed.
  const q = {
    peer: new Int32Array(QUERIES),
    proto: new Int32Array(QUERIES),
    hi: new Int32Array(QUERIES),
    lo: new Int32Array(QUERIES),
    port: new Int32Array(QUERIES),
  }
  for (let i = 0; i < QUERIES; i++) {
    const dst = rnd(2) ? SELF : (0xac1a0000 | rnd(4096)) >>> 0
    const proto = [1, 6, 6, 17][rnd(4)]
    q.peer[i] = rnd(peers)
    q.proto[i] = proto
    q.hi[i] = dst >>> 16
    q.lo[i] = dst & 0xffff
    q.port[i] = proto === 1 ? 0 : 1 + rnd(10500)
  }
  return { provides, configs, peers: peerList, queries: q }
}

function tableBytes(t: PolicyTable): number {
  return [t.peerMask, t.dstChild, t.dstVal, t.dstMask, t.dstKind, t.aclStart, t.aclProto, t.aclLo, t.aclHi].reduce(
    (s, a) => s + a.byteLength,
    0,
  )
}

function measure(
  t: PolicyTable,
  q: ReturnType<typeof policyScenario>['queries'],
  seconds: number,
): { n: number; ns: number; allowed: number } {
  let n = 0
  let allowed = 0
  const until = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9))
  const t0 = process.hrtime.bigint()
  let now = t0
  while (now < until) {
    for (let i = 0; i < QUERIES; i++) if (evaluatePolicy(t, q.peer[i], q.proto[i], q.hi[i], q.lo[i], q.port[i]) >= 0) allowed++
    n += QUERIES
    now = process.hrtime.bigint()
  }
  return { n, ns: Number(now - t0), allowed }
}

export async function runPolicyBench(seconds = 2, policies = 100, peers = 1000): Promise<PolicyBenchResult[]> {
  const s = policyScenario(policies, peers)
  const out: PolicyBenchResult[] = []
  for (const mode of ['enforce', 'compat'] as const) {
    const c0 = process.hrtime.bigint()
    const c = compilePolicies({
      selfTags: ['exit-node'],
      selfAddress: SELF,
      providesRoutes: s.provides,
      peers: s.peers,
      policies: mode === 'enforce' ? s.configs : undefined,
    })
    const compileMs = Number(process.hrtime.bigint() - c0) / 1e6
    measure(c.table, s.queries, Math.min(0.3, seconds)) // warm-up: let V8 optimise first
    let gcs = 0
    const obs = new PerformanceObserver((list) => {
      gcs += list.getEntries().length
    })
    obs.observe({ entryTypes: ['gc'] })
    const r = measure(c.table, s.queries, seconds)
    await new Promise((resolve) => setTimeout(resolve, 50)) // GC entries arrive from the event loop
    obs.disconnect()
    out.push({
      case: mode === 'enforce' ? 'policy' : 'policy-compat',
      policies: mode === 'enforce' ? policies : 0,
      peers,
      decisions: r.n,
      decisions_per_s: Math.round(r.n / (r.ns / 1e9)),
      ns_per_decision: +(r.ns / r.n).toFixed(1),
      allowed_pct: +((100 * r.allowed) / r.n).toFixed(1),
      table_bytes: tableBytes(c.table),
      compile_ms: +compileMs.toFixed(1),
      gcs,
    })
  }
  return out
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const seconds = Number(process.argv[2] ?? 2)
  for (const r of await runPolicyBench(seconds)) console.log(JSON.stringify(r))
}
