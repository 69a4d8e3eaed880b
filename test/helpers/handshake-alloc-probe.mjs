// A handshake flood through the compiled Pipeline (lib/) in a clean process started with --expose-gc:
// per batch of 64, 32 right-sized initiations with a bad mac1 (dropped) and 32 distinct ones with a valid
// mac1 and no mac2 from 32 addresses (the worker is under load: each gets a cookie reply). Prints
// {gcs, kinds, heapGrowth, messages, cookies, badMac1} as JSON. Used by no-allocation.test.ts.
import { measureAllocation } from './measure-alloc.mjs'
import { sessionPair } from '../../lib/bench/testbed.js'
import { MAC } from '../../lib/src/protocol/primitives.js'
import { R } from '../../lib/src/ipc/layout.js'

const batch = 64
const { exit: e, e: side } = sessionPair(batch)
// 4,096 distinct valid initiations, cycled (a verbatim repeat the worker still remembers is dropped as
// handshake_repeat, which allocates nothing either), and one bad-mac1 message per odd position.
const DISTINCT = 4096
const pool = new Uint8Array(DISTINCT * 148)
const valid = []
for (let k = 0; k < DISTINCT; k++) {
  const o = k * 148
  pool[o] = 1
  for (let j = 4; j < 116; j++) pool[o + j] = (k * 31 + j * 7 + (k >> 8)) & 255
  pool[o + 8] = k & 255
  pool[o + 9] = k >> 8
  pool.set(MAC(side.local.mac1Key, pool.subarray(o, o + 116)), o + 116)
  valid.push(pool.subarray(o, o + 148))
}
const bad = []
for (let i = 0; i < batch; i++) {
  const m = new Uint8Array(148)
  m[0] = 1
  for (let j = 4; j < 116; j++) m[j] = (i * 31 + j) & 255
  m[116] = i // a bad mac1
  bad.push(m)
}
e.setClock(Date.now()) // once: the clock stands still, so the flood keeps the worker under load
let cookies = 0
let next = 0
function round() {
  for (let i = 0; i < batch; i++) {
    if (i % 2 === 0) {
      e.iSlab.set(valid[next], i * e.slot)
      next = (next + 1) & (DISTINCT - 1)
    } else e.iSlab.set(bad[i], i * e.slot)
    e.iLens[i] = 148
    e.iAddrs[2 * i] = 0x0b000000 + i
    e.iAddrs[2 * i + 1] = 40000 + i
  }
  e.inbound(batch)
  cookies += e.cCount
}
const rounds = 4000
const m = await measureAllocation(round, 2000, rounds)
const badMac1 = side.v.reasons[R.bad_mac1]
console.log(JSON.stringify({ gcs: m.gcs, kinds: m.kinds, heapGrowth: m.heapGrowth, messages: rounds * batch, cookies, badMac1 }))
