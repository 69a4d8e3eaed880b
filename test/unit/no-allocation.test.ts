/**
 * The hot-loop contract: the real Pipeline allocates nothing per packet. 400k packets through
 * encrypt -> decrypt + checks must not trigger garbage collection or grow the heap.
 */
import t from 'tap'
import { PerformanceObserver } from 'node:perf_hooks'
import v8 from 'node:v8'
import vm from 'node:vm'
import { A_VA, HEADROOM, LAN, deliver, ipv4udp, sessionPair } from '../../src/dataplane/testbed.js'

t.test('steady-state packets allocate nothing', async (t) => {
  const batch = 64
  const { client: c, exit: e } = sessionPair(batch)
  const template = new Uint8Array(c.slot * batch)
  for (let i = 0; i < batch; i++) ipv4udp(template, i * c.slot + HEADROOM, 1400 - (i % 5) * 16, A_VA, LAN + 250, 40000 + i)
  // The clock is set once (per batch in the worker): Date.now() returns a boxed double.
  const now = Date.now()
  c.setClock(now)
  e.setClock(now)
  const round = () => {
    c.oSlab.set(template)
    for (let i = 0; i < batch; i++) c.oLens[i] = 1400 - (i % 5) * 16
    if (c.outbound(batch) !== batch) throw new Error('outbound dropped packets')
    deliver(c, e, batch)
    if (e.inbound(batch) !== batch) throw new Error('inbound dropped packets')
  }
  for (let r = 0; r < 2000; r++) round() // warm up: optimise, fill the view caches
  // Start from an empty young generation, so a scavenge during the run can only come from the loop.
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  gc()
  let gcs = 0
  const kinds: number[] = []
  const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) { gcs++; kinds.push((e as any).detail?.kind) } })
  obs.observe({ entryTypes: ['gc'] })
  const heapBefore = process.memoryUsage().heapUsed
  const rounds = 6250 // 400k packets
  for (let r = 0; r < rounds; r++) round()
  const heapAfter = process.memoryUsage().heapUsed
  await new Promise((r) => setTimeout(r, 50))
  obs.disconnect()
  t.equal(gcs, 0, `garbage collections during ${rounds * batch} packets: ${gcs} (kinds ${kinds.join(",")})`)
  // The smallest per-packet allocation (a boxed number) is 16 bytes: 6.4 MB here.
  const perPacket = (heapAfter - heapBefore) / (rounds * batch)
  t.ok(perPacket < 0.25, `heap growth ${((heapAfter - heapBefore) / 1024).toFixed(0)} KiB = ${perPacket.toFixed(3)} bytes per packet`)
})
