/**
 * The connection table is shared by every worker thread. Workers that refresh the same flows as
 * different peers (peers allowed the same sources) while entries expire and are swept must leave the
 * per-peer counts, the count of peers holding entries and the total equal to what the table holds:
 * a count that drifts up makes a peer look over its fair share (others may evict it), one that drifts
 * below zero lets a peer past its cap. Real threads on the compiled table (lib/).
 */
import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'
import { ROOT } from '../helpers/netns.js'
import {
  CT_COUNT_SLOTS,
  CT_ENTRIES,
  CT_PROBE,
  createConntrack,
  ctCountByPeer,
  ctCutPeer,
  ctPeerCount,
  ctTotals,
  PROTO_UDP,
} from '../../src/dataplane/conntrack.js'
import { halfSipHash4 } from '../../src/dataplane/siphash.js'

const compiled = path.join(ROOT, 'lib/src/dataplane/conntrack.js')
const skip = fs.existsSync(compiled) ? false : 'run `npm run build` first (npm test does)'

/** Workers for peers 1, 2 and 3 refresh six flows each (colliding in one region) and sweep them. */
function hammer(ms: number) {
  const key = Int32Array.of(0x2468ace, 0x13579bd)
  const sab = createConntrack(key)
  const tuples = Array.from({ length: 6 }, (_, i) => 0xac1a0000 + i)
  const entries = [
    ...new Set(
      tuples.flatMap((lan) => {
        const h = halfSipHash4(key[0], key[1], 4, 0x64400001, lan, 53, PROTO_UDP) & (CT_ENTRIES - 1)
        return Array.from({ length: CT_PROBE }, (_, i) => (h + i) & (CT_ENTRIES - 1))
      }),
    ),
  ]
  const ops = Promise.all(
    [1, 2, 3].map(
      (peer) =>
        new Promise<number>((resolve, reject) => {
          const w = new Worker(path.join(ROOT, 'test/helpers/conntrack-hammer.mjs'), {
            workerData: { sab, peer, tuples, entries, ms },
          })
          w.once('message', resolve)
          w.once('error', reject)
        }),
    ),
  )
  return { ct: new Int32Array(sab), ops }
}

/** The per-peer counts, the count of peers holding entries and the total equal what the table holds. */
function countsExact(t: Test, ct: Int32Array, ops: number[]): void {
  const held = ctCountByPeer(ct, -(2 ** 31)) // every entry in use, expired or not: what the counts cover
  let active = 0
  let total = 0
  for (let p = 0; p < CT_COUNT_SLOTS; p++) {
    const c = ctPeerCount(ct, p)
    if (c !== 0) active++
    total += c
    if (c !== (held.get(p) ?? 0)) t.fail(`peer ${p}: counted ${c}, holds ${held.get(p) ?? 0}`)
  }
  t.same(
    [1, 2, 3].map((p) => ctPeerCount(ct, p)),
    [1, 2, 3].map((p) => held.get(p) ?? 0),
    `per-peer counts match the entries after ${ops.join(' + ')} refreshes`,
  )
  t.same(ctTotals(ct), { active, total }, 'the peers holding entries and the total match the counts')
}

t.test('conntrack counts stay exact under concurrent refreshes and sweeps', { skip }, async (t) => {
  const { ct, ops } = hammer(2500)
  countsExact(t, ct, await ops)
})

t.test("cutting a removed peer's entries while workers refresh and sweep keeps the counts exact", { skip }, async (t) => {
  const { ct, ops } = hammer(1500)
  let done = false
  const finished = ops.then((n) => {
    done = true
    return n
  })
  let cut = 0
  while (!done) {
    cut += ctCutPeer(ct, 2) // control removing peer 2, again and again (it keeps coming back)
    await new Promise((r) => setImmediate(r))
  }
  t.ok(cut > 0, `entries of peer 2 were cut while the workers ran (${cut})`)
  countsExact(t, ct, await finished)
})
