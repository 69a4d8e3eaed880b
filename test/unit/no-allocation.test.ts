/**
 * The hot-loop contract: the real Pipeline allocates nothing per packet. 400k packets through
 * encrypt -> decrypt + checks must not trigger garbage collection or grow the heap.
 */
import t from 'tap'
import { PerformanceObserver } from 'node:perf_hooks'
import { A_VA, HEADROOM, LAN, deliver, ipv4udp, sessionPair } from '../../src/dataplane/testbed.js'

t.test('steady-state packets allocate nothing', async (t) => {
  const batch = 64
  const { client: c, exit: e } = sessionPair(batch)
  const template = new Uint8Array(c.slot * batch)
  for (let i = 0; i < batch; i++) ipv4udp(template, i * c.slot + HEADROOM, 1400 - (i % 5) * 16, A_VA, LAN + 250, 40000 + i)
  const round = () => {
    c.setClock(Date.now())
    e.setClock(Date.now())
    c.oSlab.set(template)
    for (let i = 0; i < batch; i++) c.oLens[i] = 1400 - (i % 5) * 16
    if (c.outbound(batch) !== batch) throw new Error('outbound dropped packets')
    deliver(c, e, batch)
    if (e.inbound(batch) !== batch) throw new Error('inbound dropped packets')
  }
  for (let r = 0; r < 2000; r++) round() // warm up: optimise, fill the view caches
  let gcs = 0
  const obs = new PerformanceObserver((list) => { gcs += list.getEntries().length })
  obs.observe({ entryTypes: ['gc'] })
  const heapBefore = process.memoryUsage().heapUsed
  const rounds = 6250 // 400k packets
  for (let r = 0; r < rounds; r++) round()
  const heapAfter = process.memoryUsage().heapUsed
  await new Promise((r) => setTimeout(r, 50))
  obs.disconnect()
  t.equal(gcs, 0, `garbage collections during ${rounds * batch} packets: ${gcs}`)
  // The smallest per-packet allocation (a boxed number) is 16 bytes: 6.4 MB here. What remains is
  // per batch (Date.now() once per batch is a boxed double), well under 2 bytes per packet.
  const perPacket = (heapAfter - heapBefore) / (rounds * batch)
  t.ok(perPacket < 2, `heap growth ${((heapAfter - heapBefore) / 1024).toFixed(0)} KiB = ${perPacket.toFixed(2)} bytes per packet`)
})
