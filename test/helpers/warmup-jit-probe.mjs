// Prints, as JSON, V8's optimisation status of the data path's per-packet functions before and after
// the workers' warm-up (src/dataplane/warmup.ts), in a clean process started with
// --allow-natives-syntax --no-concurrent-recompilation (so a compile finishes before the call returns).
// argv[2]: 'offload' (vnet-header paths), 'plain', or 'none' (no warm-up: the control case).
// Used by test/unit/dataplane-warmup.test.ts.
import { Pipeline } from '../../lib/src/dataplane/pipeline.js'
import { coalesceForTun, segmentPacket } from '../../lib/src/dataplane/offload.js'
import { warmUp } from '../../lib/src/dataplane/warmup.js'

const status = new Function('f', 'return %GetOptimizationStatus(f)')
const fns = {
  outbound: Pipeline.prototype.outbound,
  inbound: Pipeline.prototype.inbound,
  setClock: Pipeline.prototype.setClock,
  segmentPacket,
  coalesceForTun,
}
const read = () => Object.fromEntries(Object.entries(fns).map(([k, f]) => [k, status(f)]))
const before = read()
const mode = process.argv[2]
const result = mode === 'none' ? undefined : warmUp({ mtu: 1420, offload: mode === 'offload', uso: mode === 'offload' })
console.log(JSON.stringify({ before, after: read(), result }))
