// A worker for conntrack-race.test.ts: refreshes a few flows as its own peer while other workers do the
// same as theirs, and sweeps their entries as they expire, for `ms` milliseconds on the compiled table.
import { workerData, parentPort } from 'node:worker_threads'
import { ctSweep, ctTrack, PROTO_UDP } from '../../lib/src/dataplane/conntrack.js'

const { sab, peer, tuples, entries, ms } = workerData
const t = new Int32Array(sab)
const end = Date.now() + ms
let ops = 0
for (let i = 0; Date.now() < end; i++) {
  const now = 10 + (i >> 6)
  for (const lan of tuples) {
    ctTrack(t, PROTO_UDP, 0x64400001, lan, 53, peer, now, 1)
    ops++
  }
  for (const e of entries) ctSweep(t, now, e, 1)
}
parentPort.postMessage(ops)
