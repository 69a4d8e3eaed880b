/**
 * Exit-node connection tracking: LAN hosts may answer overlay peers, never start flows.
 *
 * A flow is keyed from the peer's side as it first crosses into the LAN:
 *   (proto, peerIp, lanIp, peerPort<<16 | lanPort)  — for ICMP echo the ports word is id<<16.
 * Inbound (peer -> LAN) creates or refreshes it; outbound (LAN -> peer) must hit it with the
 * addresses and ports swapped. ICMP errors from the LAN are admitted when the packet they quote
 * belongs to a flow (keeps PMTU discovery working).
 *
 * The table is a fixed open-addressing hash in shared memory, so every worker sees the same
 * flows (inbound and outbound may be handled by different workers), and a flood cannot grow it:
 * when a probe window is full the entry closest to expiry is evicted. Entries are guarded by a
 * per-entry sequence lock; a reader that races a writer treats it as a miss for that packet.
 */
export const CT_ENTRIES = 65536
export const CT_PROBE = 8
const F_SEQ = 0
const F_PEER_IP = 1
const F_LAN_IP = 2
const F_PORTS = 3
const F_PROTO = 4 // proto | REPLIED << 8
const F_PEER = 5
const F_EXPIRES = 6 // seconds on the table's clock
export const CT_FIELDS = 8
const REPLIED = 1 << 8

export const PROTO_ICMP = 1
export const PROTO_TCP = 6
export const PROTO_UDP = 17

export const CT_TCP_SYN_S = 60
export const CT_TCP_EST_S = 7200
export const CT_TCP_CLOSING_S = 10
export const CT_UDP_S = 180
export const CT_ICMP_S = 30
export const CT_OTHER_S = 60

export function createConntrack(): SharedArrayBuffer {
  return new SharedArrayBuffer(CT_ENTRIES * CT_FIELDS * 4)
}

function hash(proto: number, peerHi: number, peerLo: number, lanHi: number, lanLo: number, peerPort: number, lanPort: number): number {
  const peerIp = (peerHi << 16) | peerLo
  const lanIp = (lanHi << 16) | lanLo
  const ports = (peerPort << 16) | lanPort
  let h = Math.imul(peerIp ^ 0x9e3779b9, 0x85ebca6b)
  h ^= Math.imul(lanIp, 0xc2b2ae35)
  h ^= Math.imul(ports ^ (proto << 24), 0x27d4eb2f)
  h ^= h >>> 15
  return h & (CT_ENTRIES - 1)
}

function lockEntry(t: Int32Array, b: number): boolean {
  const s = Atomics.load(t, b + F_SEQ)
  if ((s & 1) !== 0) return false
  return Atomics.compareExchange(t, b + F_SEQ, s, s + 1) === s
}

function unlockEntry(t: Int32Array, b: number): void {
  Atomics.add(t, b + F_SEQ, 1)
}

/**
 * Records or refreshes a flow started by `peer`. `ttl` is chosen by the caller from the protocol
 * and TCP flags. Returns 1 if a new entry was made, 0 if refreshed, 2 if an entry was evicted, -1 if busy.
 */
export function ctTrack(
  t: Int32Array,
  proto: number,
  peerIp: number,
  lanIp: number,
  ports: number,
  peer: number,
  nowS: number,
  ttl: number,
): number {
  return ctTrack16(
    t,
    proto,
    (peerIp >>> 16) & 0xffff,
    peerIp & 0xffff,
    (lanIp >>> 16) & 0xffff,
    lanIp & 0xffff,
    (ports >>> 16) & 0xffff,
    ports & 0xffff,
    peer,
    nowS,
    ttl,
  )
}

/** Hot-path form: addresses and the ports word as 16-bit halves (never boxed; see lookupRoute16). */
export function ctTrack16(
  t: Int32Array,
  proto: number,
  peerHi: number,
  peerLo: number,
  lanHi: number,
  lanLo: number,
  peerPort: number,
  lanPort: number,
  peer: number,
  nowS: number,
  ttl: number,
): number {
  const peerIp = (peerHi << 16) | peerLo
  const lanIp = (lanHi << 16) | lanLo
  const ports = (peerPort << 16) | lanPort
  const h = hash(proto, peerHi, peerLo, lanHi, lanLo, peerPort, lanPort)
  let victim = -1
  let victimExp = 0x7fffffff
  for (let i = 0; i < CT_PROBE; i++) {
    const b = ((h + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    const exp = t[b + F_EXPIRES]
    if (
      exp > nowS &&
      t[b + F_PEER_IP] === (peerIp | 0) &&
      t[b + F_LAN_IP] === (lanIp | 0) &&
      t[b + F_PORTS] === (ports | 0) &&
      (t[b + F_PROTO] & 255) === proto
    ) {
      if (!lockEntry(t, b)) return -1
      if (ttl < exp - nowS && proto === PROTO_TCP && ttl !== CT_TCP_CLOSING_S) ttl = exp - nowS
      t[b + F_EXPIRES] = nowS + ttl
      t[b + F_PEER] = peer
      unlockEntry(t, b)
      return 0
    }
    if (exp <= nowS) {
      if (victimExp > 0) {
        victim = b
        victimExp = 0
      }
    } else if (exp < victimExp) {
      victim = b
      victimExp = exp
    }
  }
  if (!lockEntry(t, victim)) return -1
  const evicted = victimExp > 0 ? 2 : 1
  t[victim + F_PEER_IP] = peerIp | 0
  t[victim + F_LAN_IP] = lanIp | 0
  t[victim + F_PORTS] = ports | 0
  t[victim + F_PROTO] = proto
  t[victim + F_PEER] = peer
  t[victim + F_EXPIRES] = nowS + ttl
  unlockEntry(t, victim)
  return evicted
}

/**
 * Looks up the flow a LAN reply belongs to (key given from the peer's side). Returns the peer
 * slot that started it, or -1. On a hit the entry is marked replied and its lifetime refreshed.
 */
export function ctReply(t: Int32Array, proto: number, peerIp: number, lanIp: number, ports: number, nowS: number, ttl: number): number {
  return ctReply16(
    t,
    proto,
    (peerIp >>> 16) & 0xffff,
    peerIp & 0xffff,
    (lanIp >>> 16) & 0xffff,
    lanIp & 0xffff,
    (ports >>> 16) & 0xffff,
    ports & 0xffff,
    nowS,
    ttl,
  )
}

/** Hot-path form of ctReply (see ctTrack16). */
export function ctReply16(
  t: Int32Array,
  proto: number,
  peerHi: number,
  peerLo: number,
  lanHi: number,
  lanLo: number,
  peerPort: number,
  lanPort: number,
  nowS: number,
  ttl: number,
): number {
  const peerIp = (peerHi << 16) | peerLo
  const lanIp = (lanHi << 16) | lanLo
  const ports = (peerPort << 16) | lanPort
  const h = hash(proto, peerHi, peerLo, lanHi, lanLo, peerPort, lanPort)
  for (let i = 0; i < CT_PROBE; i++) {
    const b = ((h + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    const s1 = Atomics.load(t, b + F_SEQ)
    if ((s1 & 1) !== 0) continue
    if (
      t[b + F_EXPIRES] > nowS &&
      t[b + F_PEER_IP] === (peerIp | 0) &&
      t[b + F_LAN_IP] === (lanIp | 0) &&
      t[b + F_PORTS] === (ports | 0) &&
      (t[b + F_PROTO] & 255) === proto
    ) {
      const peer = t[b + F_PEER]
      if (Atomics.load(t, b + F_SEQ) !== s1) return -1
      if (lockEntry(t, b)) {
        t[b + F_PROTO] |= REPLIED
        const exp = t[b + F_EXPIRES]
        if (nowS + ttl > exp) t[b + F_EXPIRES] = nowS + ttl
        unlockEntry(t, b)
      }
      return peer
    }
  }
  return -1
}

/** Control-side scan: live flows per peer slot. */
export function ctCountByPeer(t: Int32Array, nowS: number): Map<number, number> {
  const m = new Map<number, number>()
  for (let b = 0; b < t.length; b += CT_FIELDS) {
    if (t[b + F_EXPIRES] > nowS && t[b + F_PROTO] !== 0) m.set(t[b + F_PEER], (m.get(t[b + F_PEER]) ?? 0) + 1)
  }
  return m
}

/** TTL for a packet a peer sends into the LAN. */
export function ttlFor(proto: number, tcpFlags: number): number {
  if (proto === PROTO_TCP) {
    if ((tcpFlags & 0x05) !== 0) return CT_TCP_CLOSING_S // FIN or RST
    if ((tcpFlags & 0x12) === 0x02) return CT_TCP_SYN_S // SYN without ACK
    return CT_TCP_EST_S
  }
  if (proto === PROTO_UDP) return CT_UDP_S
  if (proto === PROTO_ICMP) return CT_ICMP_S
  return CT_OTHER_S
}
