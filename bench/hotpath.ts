/**
 * In-process benchmark of the exit-node hot path: synthetic IPv4/UDP packets through the real
 * Pipeline code (parse + route + counter + encrypt outbound; decrypt + replay + cryptokey + destination
 * + conntrack inbound), one thread, no syscalls.
 */
import { A_VA, HEADROOM, LAN, deliver, ipv4udp, sessionPair } from './testbed.js'

export interface HotpathResult {
  case: string
  size: number
  batch: number
  packets: number
  outbound_pps: number
  inbound_pps: number
  outbound_gbps: number
  inbound_gbps: number
  gc_young?: number
}

/** Client side encrypts towards the exit node; the exit node decrypts, checks and tracks the flow. */
export function runHotpath(size: number, batch: number, seconds: number): HotpathResult {
  const { client: c, exit: e } = sessionPair(batch)
  const template = new Uint8Array(c.slot * batch)
  for (let i = 0; i < batch; i++) ipv4udp(template, i * c.slot + HEADROOM, size, A_VA, LAN + 250, 40000 + i)
  let outNs = 0
  let inNs = 0
  let packets = 0
  const until = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9))
  while (process.hrtime.bigint() < until) {
    const now = Date.now()
    c.setClock(now)
    e.setClock(now)
    c.oSlab.set(template)
    for (let i = 0; i < batch; i++) c.oLens[i] = size
    const t0 = process.hrtime.bigint()
    const sends = c.outbound(batch)
    const t1 = process.hrtime.bigint()
    if (sends !== batch) throw new Error(`outbound produced ${sends}/${batch} datagrams`)
    deliver(c, e, batch)
    const t2 = process.hrtime.bigint()
    const writes = e.inbound(batch)
    const t3 = process.hrtime.bigint()
    if (writes !== batch) throw new Error(`inbound accepted ${writes}/${batch} packets`)
    outNs += Number(t1 - t0)
    inNs += Number(t3 - t2)
    packets += batch
  }
  const outPps = packets / (outNs / 1e9)
  const inPps = packets / (inNs / 1e9)
  return {
    case: 'hotpath',
    size,
    batch,
    packets,
    outbound_pps: Math.round(outPps),
    inbound_pps: Math.round(inPps),
    outbound_gbps: +((outPps * size * 8) / 1e9).toFixed(2),
    inbound_gbps: +((inPps * size * 8) / 1e9).toFixed(2),
  }
}
