// Shared by the allocation probes: warms `round` up (V8 optimises it), collects garbage, then runs two
// measured windows of `rounds` calls while counting garbage collections in each (by their start time).
// Allocation per call shows in both windows: growth and young-generation collections in each. V8
// finishing a late (concurrent) optimisation puts its code and feedback on the heap once, and may start
// one old-generation collection for it (seen in CI: kinds 8 and 4, with 0 bytes per packet), so the
// window with fewer collections and the smaller growth is reported.
import { PerformanceObserver, performance } from 'node:perf_hooks'

/** Resolves to { gcs, kinds, heapGrowth, growth, total } (total: the sum of round()'s results in one window). */
export function measureAllocation(round, warmup, rounds) {
  for (let r = 0; r < warmup; r++) round()
  globalThis.gc() // start from an empty young generation
  const entries = []
  const obs = new PerformanceObserver((list) => {
    for (const en of list.getEntries()) entries.push({ at: en.startTime, kind: en.detail?.kind })
  })
  obs.observe({ entryTypes: ['gc'] })
  const growth = []
  const bounds = [performance.now()]
  let total = 0
  for (let w = 0; w < 2; w++) {
    total = 0
    const before = process.memoryUsage().heapUsed
    for (let r = 0; r < rounds; r++) total += round() || 0
    growth.push(process.memoryUsage().heapUsed - before)
    bounds.push(performance.now())
  }
  return new Promise((resolve) =>
    setTimeout(() => {
      obs.disconnect()
      const inWindow = (w) => entries.filter((e) => e.at >= bounds[w] && e.at < bounds[w + 1])
      const perWindow = [inWindow(0), inWindow(1)]
      const best =
        perWindow[0].length < perWindow[1].length || (perWindow[0].length === perWindow[1].length && growth[0] <= growth[1]) ? 0 : 1
      resolve({
        gcs: perWindow[best].length,
        kinds: perWindow[best].map((e) => e.kind),
        gcsPerWindow: perWindow.map((p) => p.length),
        heapGrowth: growth[best],
        growth,
        total,
      })
    }, 50),
  )
}
