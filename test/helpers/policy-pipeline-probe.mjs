// Like alloc-probe.mjs, with the exit node enforcing 100 policies: each round sends 64
// packets of established flows (a conntrack hit), 64 packets that each start a new flow (the policy
// evaluator, then tracking), and the exit node's own packets to the client (tracked as its flows).
// Prints {gcs, kinds, heapGrowth, packets} as JSON. Used by policy-pipeline.test.ts.
import { measureAllocation } from './measure-alloc.mjs'
import { A_VA, B_VA, HEADROOM, LAN, deliver, ipv4udp, sessionPair } from '../../lib/bench/testbed.js'
import { compilePolicies, policyTablesFor } from '../../lib/src/compile/policy.js'

const batch = 64
const { client: c, exit: e } = sessionPair(batch)
const lan = { addr: LAN, len: 20, text: '172.26.0.0/20' }
const policies = Array.from({ length: 100 }, (_, i) => ({
  index: i,
  enabled: true,
  senderTags: [`team${i % 10}`, ...(i === 99 ? ['laptops'] : [])],
  receiverTags: ['exit-node'],
  acls: i === 99 ? [{ protocol: 'Udp', portLo: 8000, portHi: 8100 }] : [{ protocol: 'Tcp', portLo: 10000 + i, portHi: 10000 + i }],
  gatewayRoutes: [lan],
  appliesHere: true,
}))
const compiled = compilePolicies({
  selfTags: ['exit-node'],
  selfAddress: B_VA,
  providesRoutes: [lan],
  peers: [{ slot: 0, tags: ['laptops', 'team0', 'team1', 'team2', 'team3', 'team4', 'team5', 'team6', 'team7', 'team8', 'team9'] }],
  policies,
})
e.tables = { ...e.tables, ...policyTablesFor(compiled, 1, 1) }
const template = new Uint8Array(c.slot * batch)
const sizes = Array.from({ length: batch }, (_, i) => 1400 - (i % 5) * 16)
for (let i = 0; i < batch; i++) ipv4udp(template, i * c.slot + HEADROOM, sizes[i], A_VA, LAN + 250, 40000 + i)
const fresh = new Uint8Array(c.slot * batch)
for (let i = 0; i < batch; i++) ipv4udp(fresh, i * c.slot + HEADROOM, 200, A_VA, LAN + 251, 1)
const own = new Uint8Array(e.slot * batch)
for (let i = 0; i < batch; i++) ipv4udp(own, i * e.slot + HEADROOM, 200, B_VA, A_VA, 30000 + i)
const now = Date.now()
c.setClock(now)
e.setClock(now)
let port = 1024
function round() {
  c.oSlab.set(template)
  for (let i = 0; i < batch; i++) c.oLens[i] = sizes[i]
  if (c.outbound(batch) !== batch) throw new Error('outbound dropped packets')
  deliver(c, e, batch)
  if (e.inbound(batch) !== batch) throw new Error('established packets dropped')
  c.oSlab.set(fresh)
  for (let i = 0; i < batch; i++) {
    const o = i * c.slot + HEADROOM
    port = port === 65535 ? 1024 : port + 1
    c.oSlab[o + 20] = port >> 8
    c.oSlab[o + 21] = port & 255
    c.oLens[i] = 200
  }
  if (c.outbound(batch) !== batch) throw new Error('outbound dropped new flows')
  deliver(c, e, batch)
  if (e.inbound(batch) !== batch) throw new Error('new flows dropped')
  e.oSlab.set(own)
  for (let i = 0; i < batch; i++) e.oLens[i] = 200
  if (e.outbound(batch) !== batch) throw new Error("the exit node's own packets dropped")
}
const rounds = 2100
const m = await measureAllocation(round, 2000, rounds)
console.log(JSON.stringify({ gcs: m.gcs, kinds: m.kinds, heapGrowth: m.heapGrowth, growth: m.growth, packets: rounds * batch * 3 }))
