// Shared by the allocation probes: warms `round` up (V8 optimises it), collects garbage, then runs two
// measured windows of `rounds` calls while counting garbage collections. Allocation per call shows in
// both windows; V8 finishing a late (concurrent) optimisation puts its code and feedback on the heap
// once, so the smaller growth is reported. Any collection in either window counts.
import { PerformanceObserver } from 'node:perf_hooks'

/** Resolves to { gcs, kinds, heapGrowth, growth, total } (total: the sum of round()'s results in one window). */
export function measureAllocation(round, warmup, rounds) {
  for (let r = 0; r < warmup; r++) round()
  globalThis.gc() // start from an empty young generation
  let gcs = 0
  const kinds = []
  const obs = new PerformanceObserver((list) => {
    for (const en of list.getEntries()) {
      gcs++
      kinds.push(en.detail?.kind)
    }
  })
  obs.observe({ entryTypes: ['gc'] })
  const growth = []
  let total = 0
  for (let w = 0; w < 2; w++) {
    total = 0
    const before = process.memoryUsage().heapUsed
    for (let r = 0; r < rounds; r++) total += round() || 0
    growth.push(process.memoryUsage().heapUsed - before)
  }
  return new Promise((resolve) =>
    setTimeout(() => {
      obs.disconnect()
      resolve({ gcs, kinds, heapGrowth: Math.min(...growth), growth, total })
    }, 50),
  )
}
