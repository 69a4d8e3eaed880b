// Runs 400k packets through the compiled Pipeline (lib/) in a clean process started with
// --expose-gc, and prints {gcs, kinds, heapGrowth, packets} as JSON. Used by no-allocation.test.ts.
import { measureAllocation } from './measure-alloc.mjs'
import { A_VA, HEADROOM, LAN, deliver, ipv4udp, sessionPair } from '../../lib/bench/testbed.js'

const batch = 64
const { client: c, exit: e } = sessionPair(batch)
const template = new Uint8Array(c.slot * batch)
const sizes = Array.from({ length: batch }, (_, i) => 1400 - (i % 5) * 16)
for (let i = 0; i < batch; i++) ipv4udp(template, i * c.slot + HEADROOM, sizes[i], A_VA, LAN + 250, 40000 + i)
// The LAN's replies (reply-only firewall, conntrack lookup): ports swapped.
const replies = new Uint8Array(e.slot * batch)
for (let i = 0; i < batch; i++) {
  const o = i * e.slot + HEADROOM
  ipv4udp(replies, o, sizes[i], LAN + 250, A_VA, 8080)
  replies[o + 22] = (40000 + i) >> 8
  replies[o + 23] = (40000 + i) & 255
}
// The clock is set once here (per batch in the worker): Date.now() returns a boxed double.
const now = Date.now()
c.setClock(now)
e.setClock(now)
function round() {
  c.oSlab.set(template)
  for (let i = 0; i < batch; i++) c.oLens[i] = sizes[i]
  if (c.outbound(batch) !== batch) throw new Error('outbound dropped packets')
  deliver(c, e, batch)
  if (e.inbound(batch) !== batch) throw new Error('inbound dropped packets')
  e.oSlab.set(replies)
  for (let i = 0; i < batch; i++) e.oLens[i] = sizes[i]
  if (e.outbound(batch) !== batch) throw new Error('replies dropped')
}
const rounds = 6250
const m = await measureAllocation(round, 2000, rounds)
console.log(JSON.stringify({ gcs: m.gcs, kinds: m.kinds, heapGrowth: m.heapGrowth, growth: m.growth, packets: rounds * batch }))
