// Prints, as JSON, V8's optimisation status of the data path's per-packet functions before and after
// the workers' warm-up (src/dataplane/warmup.ts), and after a fresh session's first packets, in a clean
// process started with --allow-natives-syntax --no-concurrent-recompilation (a compile finishes before
// the call that asked for it returns; a deoptimised function shows unoptimised until it is hot again).
// argv[2]: 'offload' (vnet-header paths), 'plain', or 'none' (no warm-up: the control case).
// Used by test/unit/dataplane-warmup.test.ts.
import { coalesceForTun, segmentPacket } from '../../lib/src/dataplane/offload.js'
import { Pipeline } from '../../lib/src/dataplane/pipeline.js'
import { ctReply16, ctTrack16 } from '../../lib/src/dataplane/conntrack.js'
import { replayMaybeFresh } from '../../lib/src/dataplane/replay.js'
import { seal } from '../../lib/src/dataplane/transport.js'
import { DataPathWarmup, warmUp } from '../../lib/src/warmup/warmup.js'

// (open and replayCheckAndSet32 are always inlined into inbound: they never get code of their own.)
const status = new Function('f', 'return %GetOptimizationStatus(f)')
const mode = process.argv[2]
const offload = mode === 'offload'
const fns = {
  outbound: Pipeline.prototype.outbound,
  inbound: Pipeline.prototype.inbound,
  setClock: Pipeline.prototype.setClock,
  seal,
  replayMaybeFresh,
  ctTrack16,
  ctReply16,
  ...(offload ? { segmentPacket, coalesceForTun } : {}),
}
const read = () => Object.fromEntries(Object.entries(fns).map(([k, f]) => [k, status(f)]))
const before = read()
const result = mode === 'none' ? undefined : warmUp({ mtu: 1420, offload, uso: offload })
const after = read()
// A new session pair, as a real agent's first peer: its first packets (counter 0, a new conntrack, a
// reload of the tables half-way) through the same code. 40 rounds: too few to optimise anything again.
const fresh = new DataPathWarmup({ mtu: 1420, offload, uso: offload, rounds: 40 })
fresh.step(40)
console.log(JSON.stringify({ before, after, fresh: read(), result, freshResult: fresh.result }))
