/**
 * TUN offload support (IFF_VNET_HDR with TUN_F_CSUM | TUN_F_TSO4, and TUN_F_USO4 where the kernel
 * has it, 6.2 and later), pure and allocation-free.
 *
 * With offload on, each packet read from the TUN starts with a 10-byte virtio_net_hdr and may be a
 * TCP/IPv4 "super-segment" of up to 64 KB (the local TCP stack skipped segmentation), a UDP/IPv4
 * super-datagram (a sender used UDP_SEGMENT, or the kernel forwarded a GRO'd UDP flow), or a packet
 * whose transport checksum is left for us to finish. WireGuard carries ordinary IP packets, so we
 * segment here, exactly as a NIC would: per segment, copy the headers and one MSS of payload, fix the
 * IP total length, id and checksum, and for TCP advance the sequence number, keep FIN/PSH for the last
 * segment and CWR for the first; for UDP set each datagram's length; then compute the checksum.
 *
 * The arena (where reads land) and the slots are regions of one Uint8Array, so every copy is a
 * copyWithin: no views are created per packet.
 */
export const VNET_HDR_LEN = 10
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
const GSO_NONE = 0
const GSO_TCPV4 = 1
const GSO_UDP_L4 = 5
/** The kernel segments at most this many datagrams out of one UDP GSO packet (UDP_MAX_SEGMENTS). */
const UDP_MAX_SEGMENTS = 64

export function csumAdd(b: Uint8Array, start: number, end: number, sum: number): number {
  let i = start
  for (; i + 1 < end; i += 2) sum += (b[i] << 8) | b[i + 1]
  if (i < end) sum += b[i] << 8
  return sum
}

/**
 * Same as csumAdd for a region starting at an even offset, reading 32-bit little-endian words
 * through `u32` (a view of the same memory, 4-byte aligned at index 0). One's-complement sums do not
 * depend on byte order (RFC 1071), so the little-endian word sum is folded, byte-swapped and added.
 */
export function csumAddFast(b: Uint8Array, u32: Uint32Array, start: number, end: number, sum: number): number {
  let i = start
  if ((i & 3) !== 0 && i + 2 <= end) {
    sum += (b[i] << 8) | b[i + 1]
    i += 2
  }
  const wFirst = i >> 2
  const wLast = wFirst + ((end - i) >> 2)
  // Sum 16-bit halves in small-integer accumulators (no float add chain; < 2^31 for 64 KB).
  let lo = 0
  let hi = 0
  let w = wFirst
  for (; w + 1 < wLast; w += 2) {
    const a = u32[w]
    const c = u32[w + 1]
    lo += (a & 0xffff) + (c & 0xffff)
    hi += (a >>> 16) + (c >>> 16)
  }
  if (w < wLast) {
    lo += u32[w] & 0xffff
    hi += u32[w] >>> 16
  }
  if (wLast > wFirst) i = wLast << 2
  let le = lo + hi
  while (le > 0xffff) le = (le & 0xffff) + (le >>> 16)
  sum += ((le & 0xff) << 8) | (le >>> 8)
  for (; i + 1 < end; i += 2) sum += (b[i] << 8) | b[i + 1]
  if (i < end) sum += b[i] << 8
  return sum
}

export function csumFold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 65536)
  return ~sum & 0xffff
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 255
  b[o + 1] = v & 255
}

function ipHeaderChecksum(b: Uint8Array, p: number, ihl: number): void {
  b[p + 10] = 0
  b[p + 11] = 0
  put16(b, p + 10, csumFold(csumAdd(b, p, p + ihl, 0)))
}

/**
 * Segment k of a super-packet at buf[p] (headers of `hdr` bytes, IP header of `ihl`): copies the headers
 * and payload bytes [from, from+seglen) to buf[q], and sets the IP total length, id (id0 + k) and header
 * checksum. The transport header is the caller's to finish.
 */
function copySegment(buf: Uint8Array, q: number, p: number, hdr: number, ihl: number, from: number, seglen: number, id: number): void {
  buf.copyWithin(q, p, p + hdr)
  buf.copyWithin(q + hdr, p + hdr + from, p + hdr + from + seglen)
  put16(buf, q + 2, hdr + seglen)
  put16(buf, q + 4, id & 0xffff)
  ipHeaderChecksum(buf, q, ihl)
}

/** Whether the 20-byte IPv4 header at b[p] has a correct checksum (the kernel drops it otherwise). */
function ipHeaderOk(b: Uint8Array, p: number): boolean {
  return csumFold(csumAdd(b, p, p + 20, 0)) === 0
}

/**
 * `u32` is a Uint32Array over the same memory as `buf` (buf.byteOffset must be a multiple of 4).
 * Turns one packet read from an offload TUN (at buf[off, off+len), vnet header first) into ordinary
 * IP packets in slots [first, first+room): packet k at buf[slotBase + (first+k)*slot + headroom].
 * Writes each packet length to lens[first+k]. Returns the number of slots used, 0 if the packet is
 * malformed or needs more than `room` slots, -1 if it is a kind we do not handle.
 */
export function segmentPacket(
  buf: Uint8Array,
  u32: Uint32Array,
  off: number,
  len: number,
  slotBase: number,
  slot: number,
  headroom: number,
  first: number,
  room: number,
  lens: Int32Array,
): number {
  if (len < VNET_HDR_LEN + 20) return 0
  const flags = buf[off]
  const gsoType = buf[off + 1] & 0x7f
  const gsoSize = buf[off + 4] | (buf[off + 5] << 8)
  const csumStart = buf[off + 6] | (buf[off + 7] << 8)
  const csumOffset = buf[off + 8] | (buf[off + 9] << 8)
  const p = off + VNET_HDR_LEN
  const plen = len - VNET_HDR_LEN
  if (gsoType === GSO_NONE) {
    if (room < 1) return 0
    const q = slotBase + first * slot + headroom
    if (plen > slot - headroom - 16) return 0
    buf.copyWithin(q, p, p + plen)
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && csumStart + csumOffset + 2 <= plen) {
      // The field already holds the pseudo-header sum; finish over [csumStart, end).
      put16(buf, q + csumStart + csumOffset, csumFold(csumAddFast(buf, u32, q + csumStart, q + plen, 0)))
    }
    lens[first] = plen
    return 1
  }
  if (gsoType === GSO_UDP_L4) return segmentUdp(buf, u32, p, plen, gsoSize, slotBase, slot, headroom, first, room, lens)
  if (gsoType !== GSO_TCPV4) return -1
  if (buf[p] >> 4 !== 4 || buf[p + 9] !== 6) return 0
  const ihl = (buf[p] & 15) * 4
  const thl = (buf[p + ihl + 12] >> 4) * 4
  const hdr = ihl + thl
  const payload = plen - hdr
  if (gsoSize === 0 || payload <= 0 || hdr + gsoSize > slot - headroom - 16) return 0
  const segs = Math.ceil(payload / gsoSize)
  if (segs > room) return 0
  const id0 = (buf[p + 4] << 8) | buf[p + 5]
  const t = p + ihl
  const seq0 = ((buf[t + 4] << 24) | (buf[t + 5] << 16) | (buf[t + 6] << 8) | buf[t + 7]) >>> 0
  const tcpFlags = buf[t + 13]
  // Pseudo-header without the length: source, destination, protocol.
  const pseudo = csumAdd(buf, p + 12, p + 20, 0) + 6
  for (let k = 0; k < segs; k++) {
    const q = slotBase + (first + k) * slot + headroom
    const from = k * gsoSize
    const seglen = Math.min(payload - from, gsoSize)
    copySegment(buf, q, p, hdr, ihl, from, seglen, id0 + k)
    const qt = q + ihl
    const seq = (seq0 + from) >>> 0
    buf[qt + 4] = seq >>> 24
    buf[qt + 5] = (seq >>> 16) & 255
    buf[qt + 6] = (seq >>> 8) & 255
    buf[qt + 7] = seq & 255
    let f = tcpFlags
    if (k < segs - 1) f &= ~0x09 // FIN and PSH only on the last segment
    if (k > 0) f &= ~0x80 // CWR only on the first
    buf[qt + 13] = f
    buf[qt + 16] = 0
    buf[qt + 17] = 0
    put16(buf, qt + 16, csumFold(csumAddFast(buf, u32, qt, qt + thl + seglen, pseudo + thl + seglen)))
    lens[first + k] = hdr + seglen
  }
  return segs
}

/** A UDP/IPv4 super-datagram at buf[p, p+plen) into datagrams of gsoSize payload bytes each (the last may be shorter). */
function segmentUdp(
  buf: Uint8Array,
  u32: Uint32Array,
  p: number,
  plen: number,
  gsoSize: number,
  slotBase: number,
  slot: number,
  headroom: number,
  first: number,
  room: number,
  lens: Int32Array,
): number {
  if (buf[p] >> 4 === 6) return -1 // IPv6 (the TUN takes USO4 only together with USO6): not carried
  if (buf[p] >> 4 !== 4 || buf[p + 9] !== 17) return 0
  const ihl = (buf[p] & 15) * 4
  const hdr = ihl + 8
  const payload = plen - hdr
  if (ihl < 20 || gsoSize === 0 || payload <= 0 || hdr + gsoSize > slot - headroom - 16) return 0
  const segs = Math.ceil(payload / gsoSize)
  if (segs > room) return 0
  const id0 = (buf[p + 4] << 8) | buf[p + 5]
  const pseudo = csumAdd(buf, p + 12, p + 20, 0) + 17
  for (let k = 0; k < segs; k++) {
    const q = slotBase + (first + k) * slot + headroom
    const from = k * gsoSize
    const seglen = Math.min(payload - from, gsoSize)
    copySegment(buf, q, p, hdr, ihl, from, seglen, id0 + k)
    const qu = q + ihl
    put16(buf, qu + 4, 8 + seglen)
    buf[qu + 6] = 0
    buf[qu + 7] = 0
    const c = csumFold(csumAddFast(buf, u32, qu, qu + 8 + seglen, pseudo + 8 + seglen))
    put16(buf, qu + 6, c === 0 ? 0xffff : c) // 0 would mean "no checksum"
    lens[first + k] = hdr + seglen
  }
  return segs
}

/** Whether the UDP/IPv4 datagram at b[p] (20-byte IP header, `len` bytes) carries a checksum, and it is right. */
function udpChecksumOk(b: Uint8Array, u32: Uint32Array, p: number, len: number): boolean {
  if (b[p + 26] === 0 && b[p + 27] === 0) return false // no checksum: left alone, never merged
  return csumFold(csumAddFast(b, u32, p + 20, p + len, csumAdd(b, p + 12, p + 20, 0) + 17 + (len - 20))) === 0
}

const GRO_MAX_BYTES = 65535 - 200
const GROUP_RESERVE = (VNET_HDR_LEN + GRO_MAX_BYTES + 63) & ~63

/**
 * GRO for TUN writes. Takes the accepted packets of a batch (slot i at `headroom`, length lens[i],
 * 0 = dropped), from index cursor[0] on, and lays them out in the arena region [arenaBase, arenaEnd)
 * of the same buffer, each behind a virtio_net_hdr, merging runs of consecutive packets of one flow
 * into one GSO packet that the kernel forwards as a single skb:
 *  - TCP/IPv4, by Linux's tcp_gro_receive rules: same addresses, ports, TTL, TOS, ACK number and TCP
 *    options (timestamps included); contiguous sequence numbers; flags ACK only, PSH allowed on the
 *    last; every segment but the last exactly the first one's size.
 *  - UDP/IPv4, only when `udpGro` is given (the TUN accepted TUN_F_USO4), by udp_gro_receive's rules:
 *    same addresses, ports, TTL, TOS and DF; every datagram but the last exactly the first one's size;
 *    at most 64 datagrams; each one's checksum present and right (a datagram without a checksum, or
 *    with a wrong one, goes out alone and unchanged); without DF, consecutive IP ids (the kernel gives
 *    the segments consecutive ids again).
 * A merged packet carries NEEDS_CSUM with the pseudo-header sum in the checksum field
 * (CHECKSUM_PARTIAL). All copies are copyWithin.
 *
 * `udpGro` is a Uint32Array over the same memory as `b` (b.byteOffset a multiple of 4), used to sum
 * UDP payloads a word at a time; null turns UDP merging off.
 * Writes arena offsets/lengths (relative to arenaBase) to offs/outLens and returns how many packets
 * to write; cursor[0] is advanced to the first packet not yet placed (n when done). With `outSegs`,
 * outSegs[k] says how many of the batch's packets output k carries (to count them if its write fails).
 */
export function coalesceForTun(
  b: Uint8Array,
  slot: number,
  headroom: number,
  lens: Int32Array,
  n: number,
  arenaBase: number,
  arenaEnd: number,
  offs: Int32Array,
  outLens: Int32Array,
  cursor: Int32Array,
  udpGro: Uint32Array | null = null,
  outSegs: Int32Array | null = null,
): number {
  let pos = arenaBase
  let k = 0
  let open = -1 // index in offs of the group that may still grow
  let kind = 0 // the open group's protocol: 6 or 17
  let gso = 0
  let nextSeq = 0 // TCP: the next sequence number; UDP: the next IP id
  let segs = 0
  let i = cursor[0]
  for (; i < n; i++) {
    const len = lens[i]
    if (len <= 0) continue
    const p = i * slot + headroom
    const ihl = (b[p] & 15) * 4
    // IPv4, no options, not a fragment (DF allowed), and a header the kernel would accept: merging
    // rewrites the header checksum, so a wrong one must not be made right.
    const plain = b[p] >> 4 === 4 && ihl === 20 && (b[p + 6] & 0x3f) === 0 && b[p + 7] === 0 && len >= 28 && ipHeaderOk(b, p)
    const isTcp = plain && b[p + 9] === 6 && len >= 40 && b[p + 32] >> 4 >= 5
    const isUdp = udpGro !== null && plain && b[p + 9] === 17 && len > 28 && ((b[p + 24] << 8) | b[p + 25]) === len - 20
    const thl = isTcp ? (b[p + 32] >> 4) * 4 : isUdp ? 8 : 0
    const payload = len - ihl - thl
    const flags = isTcp ? b[p + 33] : 0
    if (open >= 0 && payload > 0 && payload <= gso && outLens[open] - VNET_HDR_LEN + payload <= GRO_MAX_BYTES) {
      const h = arenaBase + offs[open] + VNET_HDR_LEN
      if (kind === 6 && isTcp && (flags === 0x10 || flags === 0x18)) {
        const seq = ((b[p + 24] << 24) | (b[p + 25] << 16) | (b[p + 26] << 8) | b[p + 27]) >>> 0
        let same = seq === nextSeq && (b[h + 32] >> 4) * 4 === thl && b[h + 8] === b[p + 8] && b[h + 1] === b[p + 1]
        // addresses (12..20), ports (20..24), ack (28..32) and options (40..20+thl)
        for (let j = 12; same && j < 24; j++) if (b[h + j] !== b[p + j]) same = false
        for (let j = 28; same && j < 32; j++) if (b[h + j] !== b[p + j]) same = false
        for (let j = 40; same && j < 20 + thl; j++) if (b[h + j] !== b[p + j]) same = false
        if (same) {
          b.copyWithin(arenaBase + offs[open] + outLens[open], p + 20 + thl, p + len)
          outLens[open] += payload
          nextSeq = (nextSeq + payload) >>> 0
          segs++
          if (outSegs) outSegs[open]++
          if (flags === 0x18) b[h + 33] = 0x18
          if (payload < gso || flags === 0x18) open = closeGroup(b, arenaBase + offs[open], outLens[open], gso, segs, kind)
          continue
        }
      } else if (kind === 17 && isUdp && segs < UDP_MAX_SEGMENTS) {
        const df = (b[p + 6] & 0x40) !== 0
        // TTL, TOS and the flags byte (DF and the reserved bit; the fragment bits are zero).
        let same = b[h + 8] === b[p + 8] && b[h + 1] === b[p + 1] && b[h + 6] === b[p + 6]
        if (same && !df) same = ((b[p + 4] << 8) | b[p + 5]) === nextSeq
        for (let j = 12; same && j < 24; j++) if (b[h + j] !== b[p + j]) same = false
        if (same && udpChecksumOk(b, udpGro!, p, len)) {
          b.copyWithin(arenaBase + offs[open] + outLens[open], p + 28, p + len)
          outLens[open] += payload
          nextSeq = (nextSeq + 1) & 0xffff
          segs++
          if (outSegs) outSegs[open]++
          if (payload < gso || segs === UDP_MAX_SEGMENTS) open = closeGroup(b, arenaBase + offs[open], outLens[open], gso, segs, kind)
          continue
        }
      }
    }
    if (open >= 0) open = closeGroup(b, arenaBase + offs[open], outLens[open], gso, segs, kind)
    if (k > 0) pos = (arenaBase + offs[k - 1] + outLens[k - 1] + 63) & ~63 // after the last output, grown or not
    const roomToGrow = pos + GROUP_RESERVE <= arenaEnd
    const canGroup = payload > 0 && roomToGrow && ((isTcp && flags === 0x10) || (isUdp && udpChecksumOk(b, udpGro!, p, len)))
    if (!canGroup && pos + VNET_HDR_LEN + len > arenaEnd) break // full: write these, then continue
    b.fill(0, pos, pos + VNET_HDR_LEN)
    b.copyWithin(pos + VNET_HDR_LEN, p, p + len)
    offs[k] = pos - arenaBase
    outLens[k] = VNET_HDR_LEN + len
    if (outSegs) outSegs[k] = 1
    if (canGroup) {
      open = k
      kind = isTcp ? 6 : 17
      gso = payload
      segs = 1
      nextSeq = isTcp
        ? (((b[p + 24] << 24) | (b[p + 25] << 16) | (b[p + 26] << 8) | b[p + 27]) + payload) >>> 0
        : (((b[p + 4] << 8) | b[p + 5]) + 1) & 0xffff
    }
    k++
  }
  if (open >= 0) closeGroup(b, arenaBase + offs[open], outLens[open], gso, segs, kind)
  cursor[0] = i
  return k
}

/**
 * Finishes a group: left as a plain packet if it never grew, else a TCPV4 or UDP_L4 GSO packet
 * (CHECKSUM_PARTIAL: the checksum field holds the pseudo-header sum over the whole packet's length).
 */
function closeGroup(b: Uint8Array, off: number, len: number, gso: number, segs: number, kind: number): number {
  if (segs < 2) return -1
  const h = off + VNET_HDR_LEN
  const ipLen = len - VNET_HDR_LEN
  const tcp = kind === 6
  const hdrLen = tcp ? 20 + (b[h + 32] >> 4) * 4 : 28
  b[off] = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
  b[off + 1] = tcp ? GSO_TCPV4 : GSO_UDP_L4
  b[off + 2] = hdrLen & 255
  b[off + 3] = hdrLen >> 8
  b[off + 4] = gso & 255
  b[off + 5] = gso >> 8
  b[off + 6] = 20 // csum_start: the transport header
  b[off + 7] = 0
  b[off + 8] = tcp ? 16 : 6 // csum_offset: the TCP or UDP checksum field
  b[off + 9] = 0
  put16(b, h + 2, ipLen)
  ipHeaderChecksum(b, h, 20)
  if (!tcp) put16(b, h + 24, ipLen - 20) // the UDP length covers every datagram; the kernel sets each one's
  let s = csumAdd(b, h + 12, h + 20, 0) + kind + (ipLen - 20)
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16)
  put16(b, h + 20 + (tcp ? 16 : 6), s) // pseudo-header sum, folded, not complemented
  return -1
}
