// A handshake flood through the compiled Pipeline (lib/) in a clean process started with --expose-gc:
// per batch of 64, 32 right-sized initiations with a bad mac1 (dropped) and 32 with a valid mac1 and no
// mac2 from 32 addresses (the worker is under load: each gets a cookie reply). Prints
// {gcs, kinds, heapGrowth, messages, cookies, badMac1} as JSON. Used by no-allocation.test.ts.
import { measureAllocation } from './measure-alloc.mjs'
import { sessionPair } from '../../lib/bench/testbed.js'
import { MAC } from '../../lib/src/protocol/primitives.js'
import { R } from '../../lib/src/ipc/layout.js'

const batch = 64
const { exit: e, e: side } = sessionPair(batch)
const template = new Uint8Array(e.slot * batch)
for (let i = 0; i < batch; i++) {
  const o = i * e.slot
  template[o] = 1
  for (let j = 4; j < 116; j++) template[o + j] = (i * 31 + j) & 255
  if (i % 2 === 0) template.set(MAC(side.local.mac1Key, template.subarray(o, o + 116)), o + 116)
  else template[o + 116] = i // a bad mac1
}
e.setClock(Date.now()) // once: the clock stands still, so the flood keeps the worker under load
let cookies = 0
function round() {
  e.iSlab.set(template)
  for (let i = 0; i < batch; i++) {
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
