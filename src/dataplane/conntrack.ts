/**
 * Exit-node connection tracking: LAN hosts may answer overlay peers, never start flows.
 *
 * A flow is keyed from the peer's side as it first crosses into the LAN:
 *   (proto, peerIp, lanIp, peerPort<<16 | lanPort)  — for ICMP echo the ports word is id<<16.
 * Inbound (peer -> LAN) creates or refreshes it; outbound (LAN -> peer) must hit it with the
 * addresses and ports swapped (src/dataplane/firewall.ts decides what may leave).
 *
 * The table is a fixed open-addressing hash in shared memory, so every worker sees the same
 * flows (inbound and outbound may be handled by different workers), and a flood cannot grow it.
 * Against a peer that computes colliding tuples or floods the table:
 *  - the bucket is HalfSipHash-2-4 of the tuple under a random 64-bit key made at each start;
 *  - a flow that has not been answered yet lives at most CT_UNREPLIED_S (the kernel's "unreplied"
 *    timeouts): a bare ACK or a stream of one-way datagrams cannot pin entries for hours;
 *  - each peer holds at most CT_PEER_SHARE live entries;
 *  - when a probe window is full, a new flow replaces, closest to expiry first: the starting peer's own
 *    unanswered entry; else, while the starter holds less than its fair share (the table divided by
 *    the peers holding entries) and the table is 7/8 full, an entry of a peer holding more than its
 *    fair share; else the starter's own answered entry; else another peer's unanswered entry (only
 *    while the starter is under CT_PEER_SHARE). So answered flows of a peer within its fair share are
 *    never evicted by others, and a few busy peers cannot keep the others out of a full table.
 *    Every eviction is counted by the caller (conntrack_evicted).
 * Entries are guarded by a per-entry sequence lock; a reader that races a writer treats it as a miss.
 * Entries that expire are reclaimed lazily (overwritten) and by ctSweep, which keeps the per-peer
 * counts honest.
 */
import { halfSipHash4 } from './siphash.js'

export const CT_ENTRIES = 65536
export const CT_PROBE = 8
const F_SEQ = 0
const F_PEER_IP = 1
const F_LAN_IP = 2
const F_PORTS = 3
const F_PROTO = 4 // proto | USED | REPLIED; 0 = free
const F_PEER = 5
const F_EXPIRES = 6 // seconds on the table's clock
const F_GEN = 7 // policy enforcement: the policy generation that last judged a flow a peer started
export const CT_FIELDS = 8
const REPLIED = 1 << 8
const USED = 1 << 9
/** Policy enforcement: the flow was started by this system (its peer side answers; never re-judged). */
export const CT_OWN = 1 << 10
/**
 * A tombstone: a UDP or ICMP flow the policy revoked. It stays keyed so that this system's next packet
 * of it is not taken for a new flow of its own (which would let the peer's side pass as replies), and
 * the peer's packets of it are judged again (denied: dropped). Both sides' packets keep it for the
 * protocol's timeout; it ends when it expires or when a later reload's policy allows the flow again.
 * Lookups for replies (ctReply16) never match it.
 */
export const CT_CUT = 1 << 11
/**
 * A fragmented datagram whose first fragment passed (src/dataplane/firewall.ts): its later fragments,
 * which carry no ports, pass while it lives. Never judged by a reload (the first fragment was) and not
 * counted as a flow in status. It counts toward the peer's share. While its datagram is in flight (no
 * last fragment yet) it also counts toward two caps: a peer has at most CT_FRAG_PER_PEER datagrams in
 * flight, and at most CT_FRAG_PER_HOST of them with any one address on the other side, so that one LAN
 * host answering a peer's flow with first fragments (a new IP id each, never a last one) cannot take
 * the peer's fragmented traffic with every other host. The last fragment (MF clear) marks it done
 * (CT_FRAG_DONE): it leaves both caps and lives CT_FRAG_DONE_S more, for middle fragments that arrive
 * after the last. A fragment entry takes only a free slot or one of the same peer's fragment entries
 * (done ones first, as they expire first), never a flow: first fragments cannot evict a peer's flows.
 * Flows may replace fragment entries like any unanswered entry.
 */
export const CT_FRAG = 1 << 12
/** A fragment entry whose last fragment passed (see CT_FRAG). */
export const CT_FRAG_DONE = 1 << 13
/** Datagrams in flight (first fragment passed, last not yet) a peer may have at once. */
export const CT_FRAG_PER_PEER = 256
/** Datagrams in flight a peer may have at once with one address on the other side. */
export const CT_FRAG_PER_HOST = 64
/**
 * A host with fewer than this in flight (a server answering now and then) may still start a datagram
 * when the peer is at CT_FRAG_PER_PEER, up to CT_FRAG_PER_PEER_HARD: hosts that hold the peer's cap with
 * unfinished datagrams cannot starve the peer's datagrams with the others.
 */
export const CT_FRAG_LIGHT_HOST = 8
export const CT_FRAG_PER_PEER_HARD = 2 * CT_FRAG_PER_PEER
/** Counts of datagrams in flight per (peer, other side), indexed by a keyed hash of the pair. */
const CT_FRAG_HOST_SLOTS = 4096

/**
 * Per-peer live-entry counts, indexed by peer slot modulo this: slots 4096 apart share a count and so
 * the share and the fragment cap (an agent sizes its peer table to at most 2 x peers + 16, or 1,024
 * with a hub, so two peers share only past 2,040 configured peers).
 */
export const CT_COUNT_SLOTS = 4096
export const CT_PEER_SHARE = CT_ENTRIES / 4
const H_KEY0 = CT_ENTRIES * CT_FIELDS
const H_KEY1 = H_KEY0 + 1
// The hash key has a 64-byte line of its own (read for every packet); the counts (written at every
// insert) and the two totals start on lines of their own after it.
const H_COUNTS = H_KEY0 + 16
const COUNT_MASK = CT_COUNT_SLOTS - 1
const H_ACTIVE = H_COUNTS + CT_COUNT_SLOTS // count slots that are not zero: the peers holding entries
const H_TOTAL = H_ACTIVE + 1 // live entries counted in all slots
const H_FRAG_COUNTS = H_COUNTS + CT_COUNT_SLOTS + 16 // fragment entries per count slot
const H_FRAG_HOSTS = H_FRAG_COUNTS + CT_COUNT_SLOTS // datagrams in flight per (peer, other side) hash
const HEADER_WORDS = 16 + CT_COUNT_SLOTS + 16 + CT_COUNT_SLOTS + CT_FRAG_HOST_SLOTS
/** Fair-share eviction starts when the table holds this many counted entries (7/8 of it). */
export const CT_FAIR_FROM = (CT_ENTRIES >> 3) * 7

export const PROTO_ICMP = 1
export const PROTO_TCP = 6
export const PROTO_UDP = 17

export const CT_TCP_SYN_S = 60
export const CT_TCP_EST_S = 7200
export const CT_TCP_CLOSING_S = 10
export const CT_UDP_S = 180
export const CT_ICMP_S = 30
export const CT_OTHER_S = 60
/** Lifetime of a flow until the LAN side has answered it once. */
export const CT_UNREPLIED_S = 30
/** Lifetime of a fragmented datagram's entry from its first fragment (fragments of one datagram travel together). */
export const CT_FRAG_S = 10
/** Lifetime of a fragment entry after its last fragment passed (middle fragments reordered behind it). */
export const CT_FRAG_DONE_S = 2

/** ctTrack results. */
export const CT_REFRESHED = 0
export const CT_NEW = 1
export const CT_EVICTED = 2
export const CT_BUSY = -1
export const CT_FULL = -2

/** A table with a fresh random hash key (one per agent start). */
export function createConntrack(key?: Int32Array): SharedArrayBuffer {
  const sab = new SharedArrayBuffer((CT_ENTRIES * CT_FIELDS + HEADER_WORDS) * 4)
  const t = new Int32Array(sab)
  const k = key ?? crypto.getRandomValues(new Int32Array(2))
  t[H_KEY0] = k[0]
  t[H_KEY1] = k[1]
  return sab
}

function bucket(t: Int32Array, proto: number, peerIp: number, lanIp: number, ports: number): number {
  return halfSipHash4(t[H_KEY0], t[H_KEY1], 4, peerIp, lanIp, ports, proto) & (CT_ENTRIES - 1)
}

function lockEntry(t: Int32Array, b: number): boolean {
  const s = Atomics.load(t, b + F_SEQ)
  if ((s & 1) !== 0) return false
  return Atomics.compareExchange(t, b + F_SEQ, s, s + 1) === s
}

function unlockEntry(t: Int32Array, b: number): void {
  Atomics.add(t, b + F_SEQ, 1)
}

/** Live entries `peer` holds (counted on insert, released when an entry is reused, evicted or swept). */
export function ctPeerCount(t: Int32Array, peer: number): number {
  return Atomics.load(t, H_COUNTS + (peer & COUNT_MASK))
}

function countAdd(t: Int32Array, peer: number): void {
  if (Atomics.add(t, H_COUNTS + (peer & COUNT_MASK), 1) === 0) Atomics.add(t, H_ACTIVE, 1)
  Atomics.add(t, H_TOTAL, 1)
}

function countSub(t: Int32Array, peer: number): void {
  if (Atomics.sub(t, H_COUNTS + (peer & COUNT_MASK), 1) === 1) Atomics.sub(t, H_ACTIVE, 1)
  Atomics.sub(t, H_TOTAL, 1)
}

/** The entry with protocol word `pr` is a datagram in flight (counted toward the fragment caps). */
function inFlight(pr: number): boolean {
  return (pr & (CT_FRAG | CT_FRAG_DONE)) === CT_FRAG
}

/** The count of `peer`'s datagrams in flight with `other` (a keyed hash: a LAN host cannot choose its slot). */
function hostSlot(t: Int32Array, peer: number, other: number): number {
  return H_FRAG_HOSTS + (halfSipHash4(t[H_KEY1], t[H_KEY0], 2, peer, other, 0, 0) & (CT_FRAG_HOST_SLOTS - 1))
}

function fragAdd(t: Int32Array, peer: number, other: number, d: number): void {
  Atomics.add(t, H_FRAG_COUNTS + (peer & COUNT_MASK), d)
  Atomics.add(t, hostSlot(t, peer, other), d)
}

/**
 * Releases the counts of an entry (protocol word `pr`, other side `other`) held by `peer`; the caller holds
 * its lock. A done fragment entry holds none (ctFragDone released them).
 */
function release(t: Int32Array, peer: number, pr: number, other: number): void {
  if ((pr & CT_FRAG_DONE) !== 0) return
  countSub(t, peer)
  if (inFlight(pr)) fragAdd(t, peer, other, -1)
}

/** Datagrams `peer` has in flight (CT_FRAG entries not done; at most CT_FRAG_PER_PEER). */
export function ctPeerFragCount(t: Int32Array, peer: number): number {
  return Atomics.load(t, H_FRAG_COUNTS + (peer & COUNT_MASK))
}

/** Datagrams `peer` has in flight with `other` (at most CT_FRAG_PER_HOST; slots may be shared by a hash collision). */
export function ctHostFragCount(t: Int32Array, peer: number, other: number): number {
  return Atomics.load(t, hostSlot(t, peer, other))
}

/**
 * The last fragment of the datagram keyed (peerIp, lanIp, ports) passed, its entry `b` found by ctFind16:
 * the entry gives up every count (the caps and the peer's share) and lives at most CT_FRAG_DONE_S more,
 * free for any insert meanwhile (as if expired). The key is checked again under the lock: the slot may
 * have been reused since the lookup.
 */
export function ctFragDone(t: Int32Array, b: number, peerIp: number, lanIp: number, ports: number, nowS: number): void {
  if (!lockEntry(t, b)) return
  const pr = t[b + F_PROTO]
  if (pr !== 0 && inFlight(pr) && t[b + F_PEER_IP] === peerIp && t[b + F_LAN_IP] === lanIp && t[b + F_PORTS] === ports) {
    release(t, t[b + F_PEER], pr, lanIp)
    t[b + F_PROTO] = pr | CT_FRAG_DONE
    if (t[b + F_EXPIRES] > nowS + CT_FRAG_DONE_S) t[b + F_EXPIRES] = nowS + CT_FRAG_DONE_S
  }
  unlockEntry(t, b)
}

/** Peers (count slots) holding entries, and the entries they hold in all. */
export function ctTotals(t: Int32Array): { active: number; total: number } {
  return { active: Atomics.load(t, H_ACTIVE), total: Atomics.load(t, H_TOTAL) }
}

/** The table divided among the peers holding entries, `peer` included. */
export function ctFairShare(t: Int32Array, peer: number): number {
  const active = Atomics.load(t, H_ACTIVE) + (ctPeerCount(t, peer) === 0 ? 1 : 0)
  return Math.floor(CT_ENTRIES / Math.max(1, active))
}

/**
 * For a full probe window in a nearly full table (CT_FAIR_FROM): the entry, closest to expiry, of a
 * peer holding more than its fair share, if `peer` holds less than its own; else -1.
 */
function overShareVictim(t: Int32Array, h: number, peer: number): number {
  if (Atomics.load(t, H_TOTAL) < CT_FAIR_FROM) return -1
  const fair = ctFairShare(t, peer)
  if (ctPeerCount(t, peer) >= fair) return -1
  let victim = -1
  let victimExp = 0x7fffffff
  for (let i = 0; i < CT_PROBE; i++) {
    const b = ((h + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    const owner = t[b + F_PEER]
    if (owner === peer || t[b + F_PROTO] === 0 || t[b + F_EXPIRES] >= victimExp) continue
    if (ctPeerCount(t, owner) > fair) {
      victim = b
      victimExp = t[b + F_EXPIRES]
    }
  }
  return victim
}

/**
 * Records or refreshes a flow started by `peer`. `ttl` is chosen by the caller from the protocol
 * and TCP flags. Returns CT_NEW, CT_REFRESHED, CT_EVICTED (a live entry was replaced), CT_BUSY
 * (lost a race: not tracked this time) or CT_FULL (no room within this peer's share).
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
  flags = 0,
  gen = 0,
): number {
  const peerIp = (peerHi << 16) | peerLo
  const lanIp = (lanHi << 16) | lanLo
  const ports = (peerPort << 16) | lanPort
  const h = bucket(t, proto, peerIp, lanIp, ports)
  let free = -1
  let own = -1 // its own answered entry closest to expiry
  let ownExp = 0x7fffffff
  let ownNew = -1 // its own unanswered entry closest to expiry
  let ownNewExp = 0x7fffffff
  let other = -1
  let otherExp = 0x7fffffff
  let ownFrag = -1 // its own datagram in flight closest to expiry
  let ownFragExp = 0x7fffffff
  let hostFrag = -1 // its own datagram in flight with lanIp closest to expiry
  let hostFragExp = 0x7fffffff
  let deadFrag = -1 // its own expired, unswept datagram in flight with lanIp: reusing it frees its count
  for (let i = 0; i < CT_PROBE; i++) {
    const b = ((h + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    const exp = t[b + F_EXPIRES]
    const pr = t[b + F_PROTO]
    if (pr === 0 || exp <= nowS) {
      if (free < 0) free = b
      if (pr !== 0 && deadFrag < 0 && inFlight(pr) && t[b + F_PEER] === peer && t[b + F_LAN_IP] === lanIp) deadFrag = b
      continue
    }
    const same = t[b + F_PEER_IP] === peerIp && t[b + F_LAN_IP] === lanIp && t[b + F_PORTS] === ports && (pr & 255) === proto
    if ((pr & CT_FRAG_DONE) !== 0) {
      // A finished datagram: counted nowhere, free for any insert. Its first fragment again (a repeat)
      // neither extends nor reopens it.
      if (same) return CT_REFRESHED
      if (free < 0) free = b
      continue
    }
    if (same) {
      if (!lockEntry(t, b)) return CT_BUSY
      // Re-check under the lock: a sweep, cut or another insert may have changed it since the read.
      if (
        t[b + F_PROTO] !== pr ||
        t[b + F_EXPIRES] !== exp ||
        t[b + F_PEER_IP] !== peerIp ||
        t[b + F_LAN_IP] !== lanIp ||
        t[b + F_PORTS] !== ports
      ) {
        unlockEntry(t, b)
        return CT_BUSY
      }
      if (ttl < exp - nowS && proto === PROTO_TCP && ttl !== CT_TCP_CLOSING_S) ttl = exp - nowS
      if ((t[b + F_PROTO] & REPLIED) === 0 && ttl > CT_UNREPLIED_S) ttl = CT_UNREPLIED_S
      t[b + F_EXPIRES] = nowS + ttl
      if ((t[b + F_PROTO] & CT_CUT) !== 0) {
        // The caller judged the flow allowed (or enforces no policy): the tombstone becomes the flow again.
        t[b + F_PROTO] = (t[b + F_PROTO] & ~CT_CUT) | flags
        t[b + F_GEN] = gen
      }
      const was = t[b + F_PEER]
      if (was !== peer) {
        const held = t[b + F_PROTO]
        // A datagram in flight moves to this peer only within its caps.
        if (inFlight(held) && (ctPeerFragCount(t, peer) >= CT_FRAG_PER_PEER || ctHostFragCount(t, peer, lanIp) >= CT_FRAG_PER_HOST)) {
          unlockEntry(t, b)
          return CT_FULL
        }
        release(t, was, held, lanIp)
        countAdd(t, peer)
        if (inFlight(held)) fragAdd(t, peer, lanIp, 1)
        t[b + F_PEER] = peer
      }
      unlockEntry(t, b)
      return CT_REFRESHED
    }
    if (t[b + F_PEER] === peer) {
      if ((pr & CT_FRAG) !== 0 && exp < ownFragExp) {
        ownFrag = b
        ownFragExp = exp
      }
      if ((pr & CT_FRAG) !== 0 && t[b + F_LAN_IP] === lanIp && exp < hostFragExp) {
        hostFrag = b
        hostFragExp = exp
      }
      if ((pr & REPLIED) === 0) {
        if (exp < ownNewExp) {
          ownNew = b
          ownNewExp = exp
        }
      } else if (exp < ownExp) {
        own = b
        ownExp = exp
      }
    } else if ((pr & REPLIED) === 0 && exp < otherExp) {
      other = b
      otherExp = exp
    }
  }
  const under = ctPeerCount(t, peer) < CT_PEER_SHARE
  let victim: number
  let result: number
  let fragHostFull = false
  if ((flags & CT_FRAG) !== 0) {
    // A datagram in flight: a free slot within the share and both caps; at a cap, only one of the peer's
    // own datagrams in flight (the same host's when that host is at its cap), so no count grows; never a flow.
    const hostCount = ctHostFragCount(t, peer, lanIp)
    fragHostFull = hostCount >= CT_FRAG_PER_HOST
    const peerCount = ctPeerFragCount(t, peer)
    const peerFull = peerCount >= (hostCount < CT_FRAG_LIGHT_HOST ? CT_FRAG_PER_PEER_HARD : CT_FRAG_PER_PEER)
    if (deadFrag >= 0) {
      victim = deadFrag
      result = CT_NEW
    } else if (under && free >= 0 && !fragHostFull && !peerFull) {
      victim = free
      result = CT_NEW
    } else if (fragHostFull ? hostFrag >= 0 : ownFrag >= 0) {
      victim = fragHostFull ? hostFrag : ownFrag
      result = CT_EVICTED
    } else return CT_FULL
  } else if (under && free >= 0) {
    victim = free
    result = CT_NEW
  } else {
    victim = ownNew
    if (victim < 0 && under) victim = overShareVictim(t, h, peer)
    if (victim < 0) victim = own
    if (victim < 0 && under) victim = other
    if (victim < 0) return CT_FULL
    result = CT_EVICTED
  }
  if (!lockEntry(t, victim)) return CT_BUSY
  const pr = t[victim + F_PROTO]
  // Re-read under the lock: the entry may have changed since the scan. A datagram's entry takes a slot
  // that is still free (or done), or, at a cap, one that is still the peer's datagram in flight (the same
  // host's when that host is full): never a flow written meanwhile, and no count grows past a cap.
  if ((flags & CT_FRAG) !== 0) {
    const ok =
      result === CT_NEW
        ? pr === 0 || t[victim + F_EXPIRES] <= nowS || (pr & CT_FRAG_DONE) !== 0
        : inFlight(pr) && t[victim + F_PEER] === peer && (!fragHostFull || t[victim + F_LAN_IP] === lanIp)
    if (!ok) {
      unlockEntry(t, victim)
      return CT_BUSY
    }
  }
  if (pr !== 0) release(t, t[victim + F_PEER], pr, t[victim + F_LAN_IP])
  countAdd(t, peer)
  if ((flags & CT_FRAG) !== 0) fragAdd(t, peer, lanIp, 1)
  t[victim + F_PEER_IP] = peerIp
  t[victim + F_LAN_IP] = lanIp
  t[victim + F_PORTS] = ports
  t[victim + F_PROTO] = proto | USED | flags
  t[victim + F_GEN] = gen
  t[victim + F_PEER] = peer
  t[victim + F_EXPIRES] = nowS + Math.min(ttl, CT_UNREPLIED_S)
  unlockEntry(t, victim)
  return result
}

/**
 * Looks up the flow a LAN reply belongs to (key given from the peer's side). Returns the peer
 * slot that started it, or -1. On a hit with ttl > 0 the entry is marked replied and its lifetime
 * refreshed (an ICMP error passes ttl 0: it neither answers nor extends the flow).
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
  const h = bucket(t, proto, peerIp, lanIp, ports)
  for (let i = 0; i < CT_PROBE; i++) {
    const b = ((h + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    const s1 = Atomics.load(t, b + F_SEQ)
    if ((s1 & 1) !== 0) continue
    const pr = t[b + F_PROTO]
    if (
      pr !== 0 &&
      t[b + F_EXPIRES] > nowS &&
      t[b + F_PEER_IP] === peerIp &&
      t[b + F_LAN_IP] === lanIp &&
      t[b + F_PORTS] === ports &&
      (pr & 255) === proto
    ) {
      if ((pr & CT_CUT) !== 0) return -1
      const peer = t[b + F_PEER]
      if (Atomics.load(t, b + F_SEQ) !== s1) return -1
      if (ttl > 0 && lockEntry(t, b)) {
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

/**
 * Policy enforcement: the entry (base index) of the live flow with this key (from the peer's side),
 * or -1. Read under the entry's sequence lock; a race reads as a miss.
 */
export function ctFind16(
  t: Int32Array,
  proto: number,
  peerHi: number,
  peerLo: number,
  lanHi: number,
  lanLo: number,
  peerPort: number,
  lanPort: number,
  nowS: number,
): number {
  const peerIp = (peerHi << 16) | peerLo
  const lanIp = (lanHi << 16) | lanLo
  const ports = (peerPort << 16) | lanPort
  const h = bucket(t, proto, peerIp, lanIp, ports)
  for (let i = 0; i < CT_PROBE; i++) {
    const b = ((h + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    const s1 = Atomics.load(t, b + F_SEQ)
    if ((s1 & 1) !== 0) continue
    const pr = t[b + F_PROTO]
    if (
      pr !== 0 &&
      t[b + F_EXPIRES] > nowS &&
      t[b + F_PEER_IP] === peerIp &&
      t[b + F_LAN_IP] === lanIp &&
      t[b + F_PORTS] === ports &&
      (pr & 255) === proto
    )
      return Atomics.load(t, b + F_SEQ) === s1 ? b : -1
  }
  return -1
}

/** The peer slot an entry belongs to (the flow's other side). */
export function ctEntryPeer(t: Int32Array, b: number): number {
  return t[b + F_PEER]
}

/** The entry's flow was started by this system (CT_OWN). */
export function ctEntryOwn(t: Int32Array, b: number): boolean {
  return (t[b + F_PROTO] & CT_OWN) !== 0
}

/** The entry is a tombstone (CT_CUT): a revoked flow. */
export function ctEntryCut(t: Int32Array, b: number): boolean {
  return (t[b + F_PROTO] & CT_CUT) !== 0
}

/** The entry is a fragmented datagram's (CT_FRAG). */
export function ctEntryFrag(t: Int32Array, b: number): boolean {
  return (t[b + F_PROTO] & CT_FRAG) !== 0
}

/** The policy generation that last judged the entry's flow. */
export function ctEntryGen(t: Int32Array, b: number): number {
  return t[b + F_GEN]
}

/**
 * Refreshes an entry found by ctFind16. `answer`: the packet travels from the flow's receiving side
 * (marks it replied, so the unreplied cap stops). `gen` >= 0 records the policy generation that
 * judged it again. Lifetimes as in ctTrack16.
 */
export function ctTouch(t: Int32Array, b: number, nowS: number, ttl: number, answer: boolean, gen: number): void {
  if (!lockEntry(t, b)) return
  const pr = t[b + F_PROTO]
  if (pr !== 0) {
    if (answer) t[b + F_PROTO] = pr | REPLIED
    const exp = t[b + F_EXPIRES]
    let life = ttl
    if (life < exp - nowS && (pr & 255) === PROTO_TCP && life !== CT_TCP_CLOSING_S) life = exp - nowS
    if ((t[b + F_PROTO] & REPLIED) === 0 && life > CT_UNREPLIED_S) life = CT_UNREPLIED_S
    t[b + F_EXPIRES] = nowS + life
    if (gen >= 0) t[b + F_GEN] = gen
  }
  unlockEntry(t, b)
}

/** Removes an entry (a flow the current policy no longer allows). */
export function ctCut(t: Int32Array, b: number): void {
  if (!lockEntry(t, b)) return
  if (t[b + F_PROTO] !== 0) {
    release(t, t[b + F_PEER], t[b + F_PROTO], t[b + F_LAN_IP])
    t[b + F_PROTO] = 0
  }
  unlockEntry(t, b)
}

/**
 * Revokes a flow a peer started: TCP is removed (a flow of ours starts only with a SYN, so it cannot
 * come back as ours); UDP and other protocols become a tombstone (CT_CUT) for their timeout.
 */
export function ctRevoke(t: Int32Array, b: number, nowS: number): void {
  if (!lockEntry(t, b)) return
  const pr = t[b + F_PROTO]
  if (pr !== 0) {
    if ((pr & 255) === PROTO_TCP) {
      release(t, t[b + F_PEER], pr, t[b + F_LAN_IP])
      t[b + F_PROTO] = 0
    } else {
      t[b + F_PROTO] = (pr & ~CT_OWN) | CT_CUT | REPLIED
      t[b + F_EXPIRES] = nowS + ttlFor(pr & 255, 0)
    }
  }
  unlockEntry(t, b)
}

/**
 * Control side, at a policy reload: calls `judge` for every live flow a peer started (not CT_OWN)
 * and revokes those it returns false for (ctRevoke); a tombstone it returns true for is removed (the
 * flow may start again). Returns how many were cut. ICMP flows are judged with port 0.
 */
export function ctCutFlows(
  t: Int32Array,
  nowS: number,
  judge: (peer: number, proto: number, lanIp: number, lanPort: number) => boolean,
): number {
  let cut = 0
  for (let b = 0; b < CT_ENTRIES * CT_FIELDS; b += CT_FIELDS) {
    const pr = t[b + F_PROTO]
    if (pr === 0 || (pr & (CT_OWN | CT_FRAG)) !== 0 || t[b + F_EXPIRES] <= nowS) continue
    const proto = pr & 255
    const port = proto === PROTO_TCP || proto === PROTO_UDP ? t[b + F_PORTS] & 0xffff : 0
    if (judge(t[b + F_PEER], proto, t[b + F_LAN_IP] >>> 0, port)) {
      if ((pr & CT_CUT) !== 0) ctCut(t, b)
      continue
    }
    if ((pr & CT_CUT) !== 0) continue
    ctRevoke(t, b, nowS)
    cut++
  }
  return cut
}

/** Attempts at an entry's lock while a worker writes it (a few instructions) before ctCutPeer moves on. */
const CUT_PEER_TRIES = 1024

/**
 * Control side, when a peer is removed: removes every entry of peer slot `peer` (flows it started,
 * flows this system started toward it, answered or not, expired or not), so the next peer given the
 * slot inherits none of them. Each entry is removed under its lock with its count; an entry a worker
 * is writing is tried again, and one whose lock never comes free (a worker stopped inside it) is left:
 * no lookup can see it either. Returns how many were removed.
 */
export function ctCutPeer(t: Int32Array, peer: number): number {
  let cut = 0
  for (let b = 0; b < CT_ENTRIES * CT_FIELDS; b += CT_FIELDS) {
    if (t[b + F_PROTO] === 0 || t[b + F_PEER] !== peer) continue
    for (let i = 0; i < CUT_PEER_TRIES; i++) {
      if (!lockEntry(t, b)) continue
      // Re-read under the lock: a refresh by another peer or a sweep may have changed it.
      if (t[b + F_PROTO] !== 0 && t[b + F_PEER] === peer) {
        release(t, peer, t[b + F_PROTO], t[b + F_LAN_IP])
        t[b + F_PROTO] = 0
        cut++
      }
      unlockEntry(t, b)
      break
    }
  }
  return cut
}

/** Frees expired entries in [from, from + n) (entry numbers, wrapping); returns the next start. */
export function ctSweep(t: Int32Array, nowS: number, from: number, n: number): number {
  for (let i = 0; i < n; i++) {
    const b = ((from + i) & (CT_ENTRIES - 1)) * CT_FIELDS
    if (t[b + F_PROTO] === 0 || t[b + F_EXPIRES] > nowS || !lockEntry(t, b)) continue
    if (t[b + F_PROTO] !== 0 && t[b + F_EXPIRES] <= nowS) {
      release(t, t[b + F_PEER], t[b + F_PROTO], t[b + F_LAN_IP])
      t[b + F_PROTO] = 0
    }
    unlockEntry(t, b)
  }
  return (from + n) & (CT_ENTRIES - 1)
}

/** Control-side scan: live flows per peer slot. */
export function ctCountByPeer(t: Int32Array, nowS: number): Map<number, number> {
  const m = new Map<number, number>()
  for (let b = 0; b < CT_ENTRIES * CT_FIELDS; b += CT_FIELDS) {
    if (t[b + F_EXPIRES] > nowS && t[b + F_PROTO] !== 0 && (t[b + F_PROTO] & CT_FRAG) === 0)
      m.set(t[b + F_PEER], (m.get(t[b + F_PEER]) ?? 0) + 1)
  }
  return m
}

/** TTL for a packet a peer sends into the LAN (capped at CT_UNREPLIED_S until the flow is answered). */
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

/**
 * Control-side audit (tests, diagnostics): every count of the header recounted from the entries. Returns
 * the first mismatch in words, or '' when every count is exact. Entries must not be locked (no worker writing).
 */
export function ctAudit(t: Int32Array): string {
  const counts = new Int32Array(CT_COUNT_SLOTS)
  const frags = new Int32Array(CT_COUNT_SLOTS)
  const hosts = new Int32Array(CT_FRAG_HOST_SLOTS)
  let total = 0
  for (let b = 0; b < CT_ENTRIES * CT_FIELDS; b += CT_FIELDS) {
    if ((t[b + F_SEQ] & 1) !== 0) return `entry ${b / CT_FIELDS} left locked`
    const pr = t[b + F_PROTO]
    if (pr === 0 || (pr & CT_FRAG_DONE) !== 0) continue // a done datagram holds no count
    const peer = t[b + F_PEER]
    counts[peer & COUNT_MASK]++
    total++
    if (inFlight(pr)) {
      frags[peer & COUNT_MASK]++
      hosts[hostSlot(t, peer, t[b + F_LAN_IP]) - H_FRAG_HOSTS]++
    }
  }
  let active = 0
  for (let i = 0; i < CT_COUNT_SLOTS; i++) {
    if (counts[i] !== 0) active++
    if (t[H_COUNTS + i] !== counts[i]) return `count slot ${i}: table ${t[H_COUNTS + i]}, recount ${counts[i]}`
    if (t[H_FRAG_COUNTS + i] !== frags[i]) return `fragment count slot ${i}: table ${t[H_FRAG_COUNTS + i]}, recount ${frags[i]}`
  }
  for (let i = 0; i < CT_FRAG_HOST_SLOTS; i++)
    if (t[H_FRAG_HOSTS + i] !== hosts[i]) return `host slot ${i}: table ${t[H_FRAG_HOSTS + i]}, recount ${hosts[i]}`
  if (t[H_TOTAL] !== total) return `total: table ${t[H_TOTAL]}, recount ${total}`
  if (t[H_ACTIVE] !== active) return `active: table ${t[H_ACTIVE]}, recount ${active}`
  return ''
}

/** The largest count of datagrams in flight in any (peer, other side) slot. */
export function ctMaxHostFragCount(t: Int32Array): number {
  let m = 0
  for (let i = 0; i < CT_FRAG_HOST_SLOTS; i++) if (t[H_FRAG_HOSTS + i] > m) m = t[H_FRAG_HOSTS + i]
  return m
}
