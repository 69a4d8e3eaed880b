import t from 'tap'
import { VNET_HDR_LEN, coalesceForTun, csumAdd, csumAddFast, csumFold, segmentPacket } from '../../src/dataplane/offload.js'

const SLOT = 1472
const HEAD = 16
const MSS = 1368
const SRC = [100, 64, 0, 1]
const DST = [172, 26, 0, 250]

/** A TCP/IPv4 packet with 12 bytes of options (timestamps) and `payload` bytes, at buf[p]. */
function tcp(buf: Uint8Array, p: number, payload: number, seq: number, flags: number, ack = 0x01020304, fill = 0): number {
  const len = 20 + 32 + payload
  buf.fill(0, p, p + len)
  buf[p] = 0x45
  buf[p + 2] = len >> 8
  buf[p + 3] = len & 255
  buf[p + 4] = 0x12
  buf[p + 5] = 0x34
  buf[p + 6] = 0x40 // DF
  buf[p + 8] = 64
  buf[p + 9] = 6
  buf.set(SRC, p + 12)
  buf.set(DST, p + 16)
  const ip = csumFold(csumAdd(buf, p, p + 20, 0))
  buf[p + 10] = ip >> 8
  buf[p + 11] = ip & 255
  const q = p + 20
  buf[q] = 0x9c
  buf[q + 1] = 0x40
  buf[q + 2] = 0x14
  buf[q + 3] = 0x51
  buf[q + 4] = seq >>> 24
  buf[q + 5] = (seq >>> 16) & 255
  buf[q + 6] = (seq >>> 8) & 255
  buf[q + 7] = seq & 255
  buf[q + 8] = ack >>> 24
  buf[q + 9] = (ack >>> 16) & 255
  buf[q + 10] = (ack >>> 8) & 255
  buf[q + 11] = ack & 255
  buf[q + 12] = 0x80
  buf[q + 13] = flags
  buf[q + 20] = 1
  buf[q + 21] = 1
  buf[q + 22] = 8
  buf[q + 23] = 10 // NOP NOP TS
  for (let i = 0; i < payload; i++) buf[q + 32 + i] = (i * 31 + fill) & 255
  return len
}

function tcpChecksumOk(b: Uint8Array, p: number): boolean {
  const len = (b[p + 2] << 8) | b[p + 3]
  const pseudo = csumAdd(b, p + 12, p + 20, 0) + 6 + (len - 20)
  return csumFold(csumAdd(b, p + 20, p + len, pseudo)) === 0
}
function ipChecksumOk(b: Uint8Array, p: number): boolean {
  return csumFold(csumAdd(b, p, p + 20, 0)) === 0
}

t.test('the word-wise checksum equals the byte-wise one at every alignment', async (t) => {
  const b = new Uint8Array(4096)
  for (let i = 0; i < b.length; i++) b[i] = (i * 131 + 7) & 255
  const u32 = new Uint32Array(b.buffer)
  let bad = 0
  for (const start of [0, 2, 4, 6, 18, 100])
    for (let len = 0; len < 1500; len += 37) {
      if (csumFold(csumAddFast(b, u32, start, start + len, 12345)) !== csumFold(csumAdd(b, start, start + len, 12345))) bad++
    }
  t.equal(bad, 0)
})

t.test('a TSO super-segment becomes MSS-sized packets with valid headers and checksums', async (t) => {
  const buf = new Uint8Array(SLOT * 128 + 70000)
  const u32 = new Uint32Array(buf.buffer)
  const base = SLOT * 128
  const payload = MSS * 10 + 500
  const seq0 = 0xfffff000 // wraps during the run
  tcp(buf, base + VNET_HDR_LEN, payload, seq0, 0x19) // ACK|PSH|FIN on the super-segment
  buf[base] = 1 // NEEDS_CSUM
  buf[base + 1] = 1 // TCPV4
  buf[base + 4] = MSS & 255
  buf[base + 5] = MSS >> 8
  const lens = new Int32Array(128)
  const n = segmentPacket(buf, u32, base, VNET_HDR_LEN + 52 + payload, 0, SLOT, HEAD, 0, 128, lens)
  t.equal(n, 11)
  let seq = seq0
  for (let k = 0; k < n; k++) {
    const p = k * SLOT + HEAD
    const plen = k < 10 ? MSS : 500
    t.equal(lens[k], 52 + plen, `segment ${k} length`)
    t.equal((buf[p + 2] << 8) | buf[p + 3], 52 + plen)
    t.equal((buf[p + 4] << 8) | buf[p + 5], (0x1234 + k) & 0xffff, 'IP id increments')
    t.ok(ipChecksumOk(buf, p), `segment ${k} IP checksum`)
    t.ok(tcpChecksumOk(buf, p), `segment ${k} TCP checksum`)
    const s = ((buf[p + 24] << 24) | (buf[p + 25] << 16) | (buf[p + 26] << 8) | buf[p + 27]) >>> 0
    t.equal(s, seq >>> 0, 'sequence numbers advance by MSS')
    seq = (seq + plen) >>> 0
    t.equal(buf[p + 33], k < 10 ? 0x10 : 0x19, 'FIN/PSH only on the last segment')
    t.equal(buf[p + 52], (k * MSS * 31) & 255, 'payload bytes in order')
  }
  t.equal(segmentPacket(buf, u32, base, VNET_HDR_LEN + 52 + payload, 0, SLOT, HEAD, 0, 5, lens), 0, 'refuses when the slots cannot hold it')
})

t.test('a packet whose checksum is left to us gets a complete one', async (t) => {
  const buf = new Uint8Array(SLOT * 4 + 4096)
  const u32 = new Uint32Array(buf.buffer)
  const base = SLOT * 4
  const len = tcp(buf, base + VNET_HDR_LEN, 300, 1000, 0x18)
  // As the kernel hands it over: checksum field = folded pseudo-header sum.
  const p = base + VNET_HDR_LEN
  let s = csumAdd(buf, p + 12, p + 20, 0) + 6 + (len - 20)
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16)
  buf[p + 36] = s >> 8
  buf[p + 37] = s & 255
  buf[base] = 1
  buf[base + 6] = 20
  buf[base + 8] = 16
  const lens = new Int32Array(4)
  t.equal(segmentPacket(buf, u32, base, VNET_HDR_LEN + len, 0, SLOT, HEAD, 0, 4, lens), 1)
  t.ok(tcpChecksumOk(buf, HEAD), 'checksum completed')
  buf[base + 1] = 4 // TCPV6: not offered, not handled
  t.equal(segmentPacket(buf, u32, base, VNET_HDR_LEN + len, 0, SLOT, HEAD, 0, 4, lens), -1)
})

t.test('GRO merges a run of one flow and keeps everything else apart, in order', async (t) => {
  const n = 8
  const buf = new Uint8Array(SLOT * n + (1 << 20))
  const lens = new Int32Array(n)
  const seq0 = 5000
  // 0-4: one flow, contiguous (4 ends with PSH); 5: other ack (not mergeable); 6: UDP-like (ICMP); 7: dropped
  for (let i = 0; i < 5; i++) lens[i] = tcp(buf, i * SLOT + HEAD, i < 4 ? 1000 : 600, seq0 + i * 1000, i < 4 ? 0x10 : 0x18)
  lens[5] = tcp(buf, 5 * SLOT + HEAD, 1000, seq0 + 4600, 0x10, 0x99999999)
  const icmp = 6 * SLOT + HEAD
  buf[icmp] = 0x45
  buf[icmp + 3] = 28
  buf[icmp + 9] = 1
  lens[6] = 28
  lens[7] = 0
  const offs = new Int32Array(n)
  const out = new Int32Array(n)
  const cursor = new Int32Array(1)
  const base = SLOT * n
  const segs = new Int32Array(n)
  const k = coalesceForTun(buf, SLOT, HEAD, lens, n, base, buf.length, offs, out, cursor, null, segs)
  t.equal(cursor[0], n, 'all packets placed')
  t.equal(k, 3, 'one merged packet, the packet with another ACK number, the ICMP packet')
  t.same([...segs.subarray(0, 3)], [5, 1, 1], 'each output says how many packets it carries (to count a failed write)')
  const g = base + offs[0]
  t.equal(buf[g], 1, 'NEEDS_CSUM')
  t.equal(buf[g + 1], 1, 'GSO TCPV4')
  t.equal(buf[g + 2] | (buf[g + 3] << 8), 52, 'header length')
  t.equal(buf[g + 4] | (buf[g + 5] << 8), 1000, 'gso size = first segment payload')
  t.equal(out[0], VNET_HDR_LEN + 52 + 4600, 'all five payloads in one packet')
  const h = g + VNET_HDR_LEN
  t.equal((buf[h + 2] << 8) | buf[h + 3], 52 + 4600, 'IP total length updated')
  t.ok(ipChecksumOk(buf, h), 'IP header checksum recomputed')
  t.equal(buf[h + 33], 0x18, 'PSH carried on the merged packet')
  let pseudo = csumAdd(buf, h + 12, h + 20, 0) + 6 + 32 + 4600
  while (pseudo > 0xffff) pseudo = (pseudo & 0xffff) + (pseudo >>> 16)
  t.equal((buf[h + 36] << 8) | buf[h + 37], pseudo, 'checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL)')
  t.equal(buf[h + 52 + 1000], (0 * 31) & 255, 'second payload follows the first')
  t.equal(buf[base + offs[1] + 1], 0, 'unmerged packet: plain virtio header')
  t.equal(out[1], VNET_HDR_LEN + lens[5])
  t.equal(out[2], VNET_HDR_LEN + 28)
  t.ok(offs[0] + out[0] <= offs[1] && offs[1] + out[1] <= offs[2], 'outputs do not overlap and keep order')
})

t.test('GRO refuses gaps and resumes when the arena is full', async (t) => {
  const n = 4
  const buf = new Uint8Array(SLOT * n + 70000)
  const lens = new Int32Array(n)
  lens[0] = tcp(buf, HEAD, 1000, 1, 0x10)
  lens[1] = tcp(buf, SLOT + HEAD, 1000, 2001, 0x10) // gap of 1000: no merge
  lens[2] = tcp(buf, 2 * SLOT + HEAD, 1000, 3001, 0x10)
  lens[3] = tcp(buf, 3 * SLOT + HEAD, 1000, 4001, 0x10)
  const offs = new Int32Array(n)
  const out = new Int32Array(n)
  const cursor = new Int32Array(1)
  const k = coalesceForTun(buf, SLOT, HEAD, lens, n, SLOT * n, buf.length, offs, out, cursor)
  t.equal(k, 2, 'first packet alone, the rest merged')
  t.equal(out[1], VNET_HDR_LEN + 52 + 3000)
  const small = new Uint8Array(SLOT * n + 3000)
  small.set(buf.subarray(0, SLOT * n))
  cursor[0] = 0
  let total = 0
  let rounds = 0
  while (cursor[0] < n && rounds < 10) {
    const kk = coalesceForTun(small, SLOT, HEAD, lens, n, SLOT * n, small.length, offs, out, cursor)
    total += kk
    rounds++
    if (kk === 0) break
  }
  t.equal(cursor[0], n, 'a small arena still places every packet over several rounds')
  t.equal(total, 4, 'without room to grow, packets go out one by one')
})

/** A UDP/IPv4 datagram with `payload` bytes and a correct checksum, at buf[p]; returns its length. */
interface UdpOpts {
  ttl?: number
  tos?: number
  dst?: number[]
  /** The IP reserved flag bit (0x80 of byte 6). */
  reserved?: boolean
}
function udp(buf: Uint8Array, p: number, payload: number, id: number, fill: number, df = true, sport = 40000, o: UdpOpts = {}): number {
  const len = 28 + payload
  buf.fill(0, p, p + len)
  buf[p] = 0x45
  buf[p + 1] = o.tos ?? 0
  buf[p + 2] = len >> 8
  buf[p + 3] = len & 255
  buf[p + 4] = (id >> 8) & 255
  buf[p + 5] = id & 255
  buf[p + 6] = (df ? 0x40 : 0) | (o.reserved ? 0x80 : 0)
  buf[p + 8] = o.ttl ?? 64
  buf[p + 9] = 17
  buf.set(SRC, p + 12)
  buf.set(o.dst ?? DST, p + 16)
  buf[p + 10] = 0
  const ip = csumFold(csumAdd(buf, p, p + 20, 0))
  buf[p + 10] = ip >> 8
  buf[p + 11] = ip & 255
  buf[p + 20] = sport >> 8
  buf[p + 21] = sport & 255
  buf[p + 22] = 0x13
  buf[p + 23] = 0x89
  buf[p + 24] = (len - 20) >> 8
  buf[p + 25] = (len - 20) & 255
  for (let i = 0; i < payload; i++) buf[p + 28 + i] = (i * 7 + fill) & 255
  const c = csumFold(csumAdd(buf, p + 20, p + len, csumAdd(buf, p + 12, p + 20, 0) + 17 + (len - 20)))
  buf[p + 26] = (c || 0xffff) >> 8
  buf[p + 27] = (c || 0xffff) & 255
  return len
}

/** Runs coalesceForTun over every packet, as the worker does, and returns the arena outputs. */
function coalesceAll(buf: Uint8Array, lens: Int32Array, n: number, base: number, udpGro: boolean) {
  const offs = new Int32Array(n)
  const out = new Int32Array(n)
  const cursor = new Int32Array(1)
  const u32 = new Uint32Array(buf.buffer)
  const outputs: { off: number; len: number }[] = []
  while (cursor[0] < n) {
    const k = coalesceForTun(buf, SLOT, HEAD, lens, n, base, buf.length, offs, out, cursor, udpGro ? u32 : null)
    for (let i = 0; i < k; i++) outputs.push({ off: base + offs[i], len: out[i] })
    if (k === 0) break
  }
  return outputs
}

t.test('UDP GRO (USO): a run of one flow becomes one GSO packet that segments back into the same datagrams', async (t) => {
  const n = 10
  const buf = new Uint8Array(SLOT * 2 * n + (1 << 20))
  const lens = new Int32Array(n)
  // 0-5: one flow, 64-byte payloads with the last one shorter; 6: another source port; 7-8: same size
  // as each other but 8 has a bad checksum; 9: no checksum at all.
  for (let i = 0; i < 6; i++) lens[i] = udp(buf, i * SLOT + HEAD, i < 5 ? 64 : 30, 0x100 + i, i)
  lens[6] = udp(buf, 6 * SLOT + HEAD, 64, 0x106, 6, true, 40001)
  lens[7] = udp(buf, 7 * SLOT + HEAD, 64, 0x107, 7, true, 40002)
  lens[8] = udp(buf, 8 * SLOT + HEAD, 64, 0x108, 8, true, 40002)
  buf[8 * SLOT + HEAD + 40] ^= 0xff // corrupt a payload byte: the checksum no longer matches
  lens[9] = udp(buf, 9 * SLOT + HEAD, 64, 0x109, 9, true, 40002)
  buf[9 * SLOT + HEAD + 26] = 0
  buf[9 * SLOT + HEAD + 27] = 0
  const originals = Array.from({ length: n }, (_, i) => buf.slice(i * SLOT + HEAD, i * SLOT + HEAD + lens[i]))
  const base = SLOT * 2 * n

  const plain = coalesceAll(buf, lens, n, base, false)
  t.equal(plain.length, n, 'without USO nothing UDP is merged')

  const outs = coalesceAll(buf, lens, n, base, true)
  t.equal(outs.length, 5, 'the run, the other port, 7, the corrupt one and the unchecksummed one')
  const g = outs[0].off
  t.equal(buf[g], 1, 'NEEDS_CSUM')
  t.equal(buf[g + 1], 5, 'GSO UDP_L4')
  t.equal(buf[g + 2] | (buf[g + 3] << 8), 28, 'header length: IP + UDP')
  t.equal(buf[g + 4] | (buf[g + 5] << 8), 64, 'gso size = the first datagram payload')
  t.equal(buf[g + 6], 20, 'csum_start: the UDP header')
  t.equal(buf[g + 8], 6, 'csum_offset: the UDP checksum')
  const h = g + VNET_HDR_LEN
  t.equal(outs[0].len, VNET_HDR_LEN + 28 + 5 * 64 + 30, 'all six payloads behind one header')
  t.equal((buf[h + 2] << 8) | buf[h + 3], 28 + 5 * 64 + 30, 'IP total length covers them')
  t.equal((buf[h + 24] << 8) | buf[h + 25], 8 + 5 * 64 + 30, 'UDP length covers them')
  t.ok(ipChecksumOk(buf, h), 'IP header checksum recomputed')
  // CHECKSUM_PARTIAL as a NIC completes it: sum from csum_start to the end, the field included. That
  // gives the right checksum only if the field held the pseudo-header sum for the whole length.
  const udpLen = 8 + 5 * 64 + 30
  const nic = csumFold(csumAdd(buf, h + 20, h + 20 + udpLen, 0))
  const done = buf.slice(h, h + 20 + udpLen)
  done[26] = nic >> 8
  done[27] = nic & 255
  t.equal(
    csumFold(csumAdd(done, 20, 20 + udpLen, csumAdd(done, 12, 20, 0) + 17 + udpLen)),
    0,
    'the partial checksum completes to a valid one',
  )
  for (const [i, o] of [
    [6, 1],
    [7, 2],
    [8, 3],
    [9, 4],
  ])
    t.same(buf.slice(outs[o].off + VNET_HDR_LEN, outs[o].off + outs[o].len), originals[i], `datagram ${i} goes out alone and unchanged`)

  // What the kernel does with it: segment again (segmentPacket is the same job on the read side).
  const seg = new Uint8Array(SLOT * 16 + outs[0].len)
  seg.set(buf.subarray(g, g + outs[0].len), SLOT * 16)
  const segLens = new Int32Array(16)
  const k = segmentPacket(seg, new Uint32Array(seg.buffer), SLOT * 16, outs[0].len, 0, SLOT, HEAD, 0, 16, segLens)
  t.equal(k, 6, 'six datagrams again')
  for (let i = 0; i < 6; i++)
    t.same(seg.slice(i * SLOT + HEAD, i * SLOT + HEAD + segLens[i]), originals[i], `datagram ${i} byte for byte, checksums included`)
})

t.test('UDP GRO stops at 64 datagrams, and without DF needs consecutive IP ids', async (t) => {
  const n = 70
  const buf = new Uint8Array(SLOT * n + (1 << 20))
  const lens = new Int32Array(n)
  for (let i = 0; i < n; i++) lens[i] = udp(buf, i * SLOT + HEAD, 100, 0x200 + i, i)
  const outs = coalesceAll(buf, lens, n, SLOT * n, true)
  t.same(
    outs.map((o) => (o.len - VNET_HDR_LEN - 28) / 100),
    [64, 6],
    'UDP_MAX_SEGMENTS datagrams, then a new packet',
  )
  const m = 6
  const b2 = new Uint8Array(SLOT * m + (1 << 20))
  const l2 = new Int32Array(m)
  const ids = [10, 11, 12, 20, 21, 22]
  for (let i = 0; i < m; i++) l2[i] = udp(b2, i * SLOT + HEAD, 100, ids[i], i, false)
  t.same(
    coalesceAll(b2, l2, m, SLOT * m, true).map((o) => (o.len - VNET_HDR_LEN - 28) / 100),
    [3, 3],
    'an id gap ends the run when DF is clear',
  )
})

t.test('a USO super-datagram read from the TUN becomes datagrams with valid headers and checksums', async (t) => {
  const buf = new Uint8Array(SLOT * 64 + 70000)
  const u32 = new Uint32Array(buf.buffer)
  const base = SLOT * 64
  const p = base + VNET_HDR_LEN
  const payload = 1200 * 20 + 77
  udp(buf, p, payload, 0x4000, 3)
  buf[base] = 1 // NEEDS_CSUM
  buf[base + 1] = 5 // UDP_L4
  buf[base + 4] = 1200 & 255
  buf[base + 5] = 1200 >> 8
  const lens = new Int32Array(64)
  const n = segmentPacket(buf, u32, base, VNET_HDR_LEN + 28 + payload, 0, SLOT, HEAD, 0, 64, lens)
  t.equal(n, 21)
  let bad = 0
  for (let k = 0; k < n; k++) {
    const q = k * SLOT + HEAD
    const plen = k < 20 ? 1200 : 77
    if (lens[k] !== 28 + plen || (buf[q + 24] << 8) + buf[q + 25] !== 8 + plen) bad++
    if (((buf[q + 4] << 8) | buf[q + 5]) !== 0x4000 + k || !ipChecksumOk(buf, q)) bad++
    const c = csumFold(csumAdd(buf, q + 20, q + 28 + plen, csumAdd(buf, q + 12, q + 20, 0) + 17 + 8 + plen))
    if (c !== 0) bad++
    if (buf[q + 28] !== ((k * 1200 * 7 + 3) & 255)) bad++
  }
  t.equal(bad, 0, 'lengths, ids, IP and UDP checksums and payload order all right')
  t.equal(
    segmentPacket(buf, u32, base, VNET_HDR_LEN + 28 + payload, 0, SLOT, HEAD, 0, 20, lens),
    0,
    'refuses when the slots cannot hold it',
  )
})

/**
 * Builds n datagrams with `make(i, buf, p)` (each returns its length), merges them as the worker does,
 * and returns how many datagrams each output carries (a merged one is split again to count them).
 */
function mergeRuns(n: number, make: (i: number, buf: Uint8Array, p: number) => number): number[] {
  const buf = new Uint8Array(SLOT * n + (1 << 20))
  const lens = new Int32Array(n)
  for (let i = 0; i < n; i++) lens[i] = make(i, buf, i * SLOT + HEAD)
  return coalesceAll(buf, lens, n, SLOT * n, true).map((o) => {
    if (buf[o.off + 1] !== 5) return 1
    const seg = new Uint8Array(SLOT * 64 + ((o.len + 3) & ~3))
    seg.set(buf.subarray(o.off, o.off + o.len), SLOT * 64)
    return segmentPacket(seg, new Uint32Array(seg.buffer), SLOT * 64, o.len, 0, SLOT, HEAD, 0, 64, new Int32Array(64))
  })
}

t.test('UDP GRO merges only what the kernel would have kept together', async (t) => {
  const sizes = [64, 30, 64]
  t.same(
    mergeRuns(3, (i, b, p) => udp(b, p, sizes[i], 0x10 + i, i)),
    [2, 1],
    'a shorter datagram ends the run: 64, 30 | 64',
  )
  t.same(
    mergeRuns(3, (i, b, p) => udp(b, p, 64, 0x10 + i, i, i < 2)),
    [2, 1],
    'DF must match',
  )
  t.same(
    mergeRuns(3, (i, b, p) => udp(b, p, 64, 0x10 + i, i, true, 40000, { ttl: i < 2 ? 64 : 63 })),
    [2, 1],
    'TTL must match',
  )
  t.same(
    mergeRuns(3, (i, b, p) => udp(b, p, 64, 0x10 + i, i, true, 40000, { tos: i < 2 ? 0 : 0x10 })),
    [2, 1],
    'TOS must match',
  )
  t.same(
    mergeRuns(3, (i, b, p) => udp(b, p, 64, 0x10 + i, i, true, 40000, { dst: i < 2 ? DST : [172, 26, 0, 251] })),
    [2, 1],
    'the destination must match',
  )
  t.same(
    mergeRuns(3, (i, b, p) => udp(b, p, 64, 0x10 + i, i, true, 40000, { reserved: i === 2 })),
    [2, 1],
    'the whole flags byte must match (reserved bit)',
  )
  t.same(
    mergeRuns(3, (i, b, p) => {
      const len = udp(b, p, 64, 0x10 + i, i)
      if (i > 0) b[p + 26] = b[p + 27] = 0 // no checksum
      return len
    }),
    [1, 1, 1],
    'datagrams without a checksum are never merged',
  )
  t.same(
    mergeRuns(3, (i, b, p) => {
      const len = udp(b, p, 64, 0x10 + i, i)
      if (i === 1) b[p + 10] ^= 0x01 // a wrong IP header checksum
      return len
    }),
    [1, 1, 1],
    'a wrong IP header checksum is never made right by merging',
  )
  t.same(
    mergeRuns(4, (i, b, p) => udp(b, p, 64, 0x10 + i, i)),
    [4],
    'control: four equal datagrams of one flow merge',
  )
})

t.test('a segment whose UDP checksum computes to 0 carries 0xffff (0 means none)', async (t) => {
  const buf = new Uint8Array(SLOT * 4 + 4096)
  const base = SLOT * 4
  const p = base + VNET_HDR_LEN
  const payload = 40
  udp(buf, p, payload, 7, 1)
  // Choose the last two payload bytes so that the one's-complement sum is 0xffff: the checksum is 0.
  buf[p + 28 + payload - 2] = 0
  buf[p + 28 + payload - 1] = 0
  buf[p + 26] = 0
  buf[p + 27] = 0
  let sum = csumAdd(buf, p + 20, p + 28 + payload, csumAdd(buf, p + 12, p + 20, 0) + 17 + 8 + payload)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  const fix = 0xffff - sum
  buf[p + 28 + payload - 2] = fix >> 8
  buf[p + 28 + payload - 1] = fix & 255
  buf[base] = 1
  buf[base + 1] = 5
  buf[base + 4] = payload
  const lens = new Int32Array(4)
  t.equal(segmentPacket(buf, new Uint32Array(buf.buffer), base, VNET_HDR_LEN + 28 + payload, 0, SLOT, HEAD, 0, 4, lens), 1)
  t.equal((buf[HEAD + 26] << 8) | buf[HEAD + 27], 0xffff)
})
