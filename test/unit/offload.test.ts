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
  const k = coalesceForTun(buf, SLOT, HEAD, lens, n, base, buf.length, offs, out, cursor)
  t.equal(cursor[0], n, 'all packets placed')
  t.equal(k, 3, 'one merged packet, the packet with another ACK number, the ICMP packet')
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
