/**
 * The agent's time as a worker reads it: the wall clock plus an offset in shared memory that only the
 * agent's Clock writes (src/platform/clock.ts OffsetClock), so a test that moves time moves the workers'
 * too. Without a shared offset, the wall clock.
 */
export function workerClock(shared: SharedArrayBuffer | undefined): () => number {
  if (!shared) return Date.now
  const off = new Float64Array(shared)
  return () => Date.now() + off[0]
}
