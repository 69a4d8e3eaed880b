/**
 * The agent's time as a worker reads it: from the control thread's anchor (src/common/agent-time.ts, so
 * control and workers read the same time, and a step of the wall clock moves neither), plus an offset in
 * shared memory that only the agent's Clock writes (src/platform/clock.ts OffsetClock), so a test that
 * moves time moves the workers' too.
 */
import { type TimeAnchor, agentTimeReader } from '../common/agent-time.js'

export function workerClock(anchor: TimeAnchor, shared: SharedArrayBuffer | undefined): () => number {
  const base = agentTimeReader(anchor)
  if (!shared) return base
  const off = new Float64Array(shared)
  return () => base() + off[0]
}
