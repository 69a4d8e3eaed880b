/**
 * The reply-only firewall (as Nebula keeps firewall.go): what a node may send to a peer and which
 * peer flows it remembers. The guide's promise: hosts behind an exit node may answer peers, never
 * start anything, whatever source address they forge.
 *
 * Judged by ingress, on every node: a packet read from the TUN for a peer leaves only if
 *  - its source is this node's own virtual address (the node's own traffic), except an ICMP error that
 *    does not quote a packet of that peer's (below), or
 *  - it answers a flow that this very peer started into our ProvidesRoutes (conntrack hit, owner = peer), or
 *  - it is an ICMP error (unreachable, time exceeded, parameter problem) quoting such a flow, sent to
 *    the address that started it (outer destination = quoted source).
 * An ICMP error from our own address is the kernel answering a packet it received; a LAN host can make
 * it do that with a forged source that routes through the TUN (TTL 1 through us, bad options, a fragment
 * never completed). So it goes to a peer only if it quotes a packet that peer sent: outer destination =
 * quoted source, a source that peer may use (cryptokey routing), and either sent to our own address or a
 * flow that peer started through us (conntrack). The anti-spoofing rules at ingress (src/ops/os-footprint.ts)
 * are the first layer; this one holds when they are missing (no iptables) or a source routes through us
 * that they do not cover.
 * Everything else is `unsolicited`. A node that provides no routes tracks nothing, so only its own
 * address passes. Peer packets into ProvidesRoutes are tracked on the way in (track()).
 *
 * Fragments: a later fragment (offset > 0) has no ports or ICMP type; it is judged by its datagram. When
 * a first fragment (offset 0, more fragments) passes admit() or leaves as a reply, the datagram is remembered
 * (CT_FRAG: source, destination, protocol, IP id and direction, owned by the peer, CT_FRAG_S) and its
 * later fragments pass only while that entry lives and belongs to the same peer. So a peer's fragments
 * reach only what its admitted first fragment reached, and a LAN host's fragmented reply passes whole.
 * Our own later fragments leave as ours: the receiver judges them against their first fragment.
 * The entries count toward the peer's share of the table, like its flows, so their number is bounded.
 */
import type { DataplaneTables } from '../ipc/messages.js'
import { lookupRoute16 } from './route-table.js'
import {
  CT_ENTRIES,
  CT_FULL,
  CT_EVICTED,
  CT_FRAG,
  CT_FRAG_S,
  ctFragDone,
  CT_OWN,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  ctEntryCut,
  ctEntryFrag,
  ctEntryGen,
  ctEntryOwn,
  ctEntryPeer,
  ctFind16,
  ctReply16,
  ctRevoke,
  ctSweep,
  ctTouch,
  ctTrack16,
  ttlFor,
} from './conntrack.js'
import { type PolicyTable, DENY_NO_POLICY, evaluatePolicy } from './policy.js'

/** admit(): the packet belongs to a tracked flow (or is a later fragment of an admitted datagram): no policy was evaluated. */
export const ADMIT_ESTABLISHED = 0x3ffffffe
/** admit(): a later fragment whose first fragment was not admitted (no deny reason or policy: it has no ports). */
export const ADMIT_FRAGMENT_ORPHAN = -0x40000000

/** egress() verdicts. */
export const EGRESS_DROP = 0
export const EGRESS_OWN = 1
export const EGRESS_REPLY = 2

/**
 * Fragmented datagrams' conntrack keys: a protocol number of their own (255, "reserved"), the IP id as
 * the peer port and, as the LAN port, the direction with the datagram's protocol. A flow of protocol 255
 * has ports 0, so the two never meet.
 */
const FRAG_KEY_PROTO = 255
const FRAG_IN = 0x100
const FRAG_OUT = 0x200

/** Entries each sweep() call examines: a worker's clock tick reclaims expired entries for the per-peer shares. */
const SWEEP_PER_TICK = 512

export class Firewall {
  readonly ct: Int32Array
  /** [peerPort, lanPort] from portsInto(): numbers above 2^30 would box, so ports travel here. */
  private readonly ports = new Int32Array(2)
  private sweepAt: number

  constructor(conntrack: SharedArrayBuffer, worker: number) {
    this.ct = new Int32Array(conntrack)
    this.sweepAt = (worker * 8191) & (CT_ENTRIES - 1)
  }

  /**
   * Ports for conntrack, from the peer's side. ICMP echo: the identifier as the peer's "port" and, as
   * the LAN side's, which side asked: ECHO_PEER_ASKED (the peer's request, its reply from the LAN side)
   * or ECHO_LAN_ASKED. So a flow started with a request admits only replies the other way: a request
   * with the same identifier from the answering side is a flow of its own, never a reply.
   */
  private portsInto(b: Uint8Array, p: number, proto: number, peerIsSource: boolean): void {
    const l4 = p + (b[p] & 15) * 4
    const P = this.ports
    P[0] = 0
    P[1] = 0
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      const sp = (b[l4] << 8) | b[l4 + 1]
      const dp = (b[l4 + 2] << 8) | b[l4 + 3]
      P[0] = peerIsSource ? sp : dp
      P[1] = peerIsSource ? dp : sp
    } else if (proto === PROTO_ICMP) {
      const type = b[l4]
      if (type === 8 || type === 0) {
        P[0] = (b[l4 + 4] << 8) | b[l4 + 5]
        P[1] = (type === 8) === peerIsSource ? ECHO_PEER_ASKED : ECHO_LAN_ASKED
      }
    }
  }

  /**
   * TUN -> `peer`: the IPv4 packet at b[p, p+len) (len >= 20). `t.selfAddr` is this node's virtual
   * address. Returns EGRESS_OWN, EGRESS_REPLY or EGRESS_DROP.
   */
  egress(b: Uint8Array, p: number, len: number, peer: number, t: DataplaneTables, nowS: number): number {
    if ((((b[p + 6] & 0x1f) << 8) | b[p + 7]) !== 0) {
      // A later fragment of our own datagram is ours (the receiver judges it by its first fragment); one
      // from the LAN goes when its first fragment went as a reply to this peer.
      this.lastFragTrack = 0
      if (((b[p + 12] << 24) | (b[p + 13] << 16) | (b[p + 14] << 8) | b[p + 15]) === (t.selfAddr | 0)) return EGRESS_OWN
      return this.fragmentSeen(b, p, FRAG_OUT, 16, 12, peer, nowS) ? EGRESS_REPLY : EGRESS_DROP
    }
    const v = this.egressWhole(b, p, len, peer, t, nowS)
    this.lastFragTrack = v === EGRESS_REPLY && (b[p + 6] & 0x20) !== 0 ? this.fragmentStarts(b, p, FRAG_OUT, 16, 12, peer, nowS) : 0
    return v
  }

  /** egress() for a whole datagram or a first fragment. */
  private egressWhole(b: Uint8Array, p: number, len: number, peer: number, t: DataplaneTables, nowS: number): number {
    const sHi = (b[p + 12] << 8) | b[p + 13]
    const sLo = (b[p + 14] << 8) | b[p + 15]
    const proto = b[p + 9]
    const ihl = (b[p] & 15) * 4
    const own = ((sHi << 16) | sLo) === (t.selfAddr | 0)
    if (own && (proto !== PROTO_ICMP || len < ihl + 8 || !isIcmpError(b[p + ihl]))) return EGRESS_OWN
    if (ihl < 20 || len < ihl + 8) return EGRESS_DROP
    const l4 = p + ihl
    if (proto === PROTO_ICMP) {
      const type = b[l4]
      if (own || type === 3 || type === 11 || type === 12) {
        // An ICMP error quoting a packet that `peer` sent (into the LAN, or to us when it is our own error).
        const q = l4 + 8
        if (len < ihl + 8 + 20 || b[q] >> 4 !== 4) return EGRESS_DROP
        const qihl = (b[q] & 15) * 4
        if (qihl < 20 || len < ihl + 8 + qihl + 8) return EGRESS_DROP
        // Addressed to the quoted flow's peer side, not to anyone else.
        if (b[p + 16] !== b[q + 12] || b[p + 17] !== b[q + 13] || b[p + 18] !== b[q + 14] || b[p + 19] !== b[q + 15]) return EGRESS_DROP
        const qHi = (b[q + 12] << 8) | b[q + 13]
        const qLo = (b[q + 14] << 8) | b[q + 15]
        if (own) {
          // Our kernel's error: the quoted source must be one this peer may send from...
          const grp = lookupRoute16(t.allowChild, t.allowVal, qHi, qLo)
          let allowed = false
          if (grp >= 0) for (let j = t.groupStart[grp]; j < t.groupStart[grp + 1]; j++) if (t.groupPeers[j] === peer) allowed = true
          if (!allowed) return EGRESS_DROP
          // ...and the quoted packet one it sent to us (below: or through us, a flow it started).
          if (((b[q + 16] << 24) | (b[q + 17] << 16) | (b[q + 18] << 8) | b[q + 19]) === (t.selfAddr | 0)) return EGRESS_OWN
        }
        const qproto = b[q + 9]
        this.portsInto(b, q, qproto, true)
        const owner = ctReply16(
          this.ct,
          qproto,
          qHi,
          qLo,
          (b[q + 16] << 8) | b[q + 17],
          (b[q + 18] << 8) | b[q + 19],
          this.ports[0],
          this.ports[1],
          nowS,
          0,
        )
        return owner !== peer ? EGRESS_DROP : own ? EGRESS_OWN : EGRESS_REPLY
      }
    }
    const flags = proto === PROTO_TCP && len >= ihl + 14 ? b[l4 + 13] : 0
    this.portsInto(b, p, proto, false)
    // The reply goes LAN -> peer: the peer's side is the destination.
    const owner = ctReply16(
      this.ct,
      proto,
      (b[p + 16] << 8) | b[p + 17],
      (b[p + 18] << 8) | b[p + 19],
      sHi,
      sLo,
      this.ports[0],
      this.ports[1],
      nowS,
      ttlFor(proto, flags),
    )
    return owner === peer ? EGRESS_REPLY : EGRESS_DROP
  }

  /**
   * `peer` -> our ProvidesRoutes: remember the flow so the LAN may answer it. Returns 0 when tracked
   * or refreshed (or a race left it for the next packet), CT_EVICTED when a live entry made room,
   * CT_FULL when the peer's share had no room (the packet still goes; replies to it will not).
   */
  track(b: Uint8Array, p: number, peer: number, nowS: number): number {
    // A later fragment has no ports: its flow was tracked from its first fragment.
    if ((((b[p + 6] & 0x1f) << 8) | b[p + 7]) !== 0) return 0
    const proto = b[p + 9]
    const flags = proto === PROTO_TCP ? b[p + (b[p] & 15) * 4 + 13] : 0
    this.portsInto(b, p, proto, true)
    const r = ctTrack16(
      this.ct,
      proto,
      (b[p + 12] << 8) | b[p + 13],
      (b[p + 14] << 8) | b[p + 15],
      (b[p + 16] << 8) | b[p + 17],
      (b[p + 18] << 8) | b[p + 19],
      this.ports[0],
      this.ports[1],
      peer,
      nowS,
      ttlFor(proto, flags),
    )
    return r === CT_EVICTED || r === CT_FULL ? r : 0
  }

  /**
   * Policy enforcement (Policies set), peer -> this system or a provided route, after the cryptokey
   * and destination checks. A packet of a tracked flow passes with one table hit: a reply to a flow
   * this system started, or a flow `peer` started that the current policy generation `gen` judged.
   * Anything else is a new flow: evaluatePolicy() decides, and an allowed flow is tracked.
   * Returns ADMIT_ESTABLISHED, the allowing policy (>= 0, ALLOW_ALL never: enforcement only) or a
   * deny verdict (< 0). `lastTrack` holds the ctTrack16 result of a new flow (CT_EVICTED / CT_FULL).
   * A flow judged by an older generation is judged again: denied, its entry is cut (reload).
   * A later fragment passes (ADMIT_ESTABLISHED) only when its datagram's first fragment was admitted from
   * `peer`; else ADMIT_FRAGMENT_ORPHAN.
   */
  admit(b: Uint8Array, p: number, len: number, peer: number, table: PolicyTable, gen: number, nowS: number): number {
    this.lastTrack = 0
    if ((((b[p + 6] & 0x1f) << 8) | b[p + 7]) !== 0)
      return this.fragmentSeen(b, p, FRAG_IN, 12, 16, peer, nowS) ? ADMIT_ESTABLISHED : ADMIT_FRAGMENT_ORPHAN
    const v = this.admitWhole(b, p, len, peer, table, gen, nowS)
    if (v >= 0 && (b[p + 6] & 0x20) !== 0) {
      const r = this.fragmentStarts(b, p, FRAG_IN, 12, 16, peer, nowS)
      if (this.lastTrack === 0) this.lastTrack = r
    }
    return v
  }

  /** admit() for a whole datagram or a first fragment. */
  private admitWhole(b: Uint8Array, p: number, len: number, peer: number, table: PolicyTable, gen: number, nowS: number): number {
    const proto = b[p + 9]
    const ihl = (b[p] & 15) * 4
    if (len < ihl + 8 && (proto === PROTO_TCP || proto === PROTO_UDP || proto === PROTO_ICMP)) return -DENY_NO_POLICY
    const l4 = p + ihl
    const sHi = (b[p + 12] << 8) | b[p + 13]
    const sLo = (b[p + 14] << 8) | b[p + 15]
    const dHi = (b[p + 16] << 8) | b[p + 17]
    const dLo = (b[p + 18] << 8) | b[p + 19]
    if (proto === PROTO_ICMP && (b[l4] === 3 || b[l4] === 11 || b[l4] === 12) && this.relatedError(b, p, len, ihl, peer, nowS))
      return ADMIT_ESTABLISHED
    const flags = proto === PROTO_TCP && len >= ihl + 14 ? b[l4 + 13] : 0
    const ttl = ttlFor(proto, flags)
    this.portsInto(b, p, proto, true)
    const P = this.ports
    const dport = proto === PROTO_ICMP ? 0 : P[1]
    const e = ctFind16(this.ct, proto, sHi, sLo, dHi, dLo, P[0], P[1], nowS)
    if (e >= 0 && ctEntryPeer(this.ct, e) === peer && ctEntryCut(this.ct, e)) {
      // A revoked flow: judged again. Denied, the tombstone lives on; allowed, ctTrack16 below revives it.
      const v = evaluatePolicy(table, peer, proto, dHi, dLo, dport)
      if (v < 0) {
        ctTouch(this.ct, e, nowS, ttl, false, -1)
        return v
      }
    } else if (e >= 0 && ctEntryPeer(this.ct, e) === peer) {
      if (ctEntryOwn(this.ct, e)) {
        ctTouch(this.ct, e, nowS, ttl, true, -1)
        return ADMIT_ESTABLISHED
      }
      if (ctEntryGen(this.ct, e) === gen) {
        ctTouch(this.ct, e, nowS, ttl, false, -1)
        return ADMIT_ESTABLISHED
      }
      const v = evaluatePolicy(table, peer, proto, dHi, dLo, dport)
      if (v < 0) ctRevoke(this.ct, e, nowS)
      else ctTouch(this.ct, e, nowS, ttl, false, gen)
      return v < 0 ? v : ADMIT_ESTABLISHED
    }
    const v = evaluatePolicy(table, peer, proto, dHi, dLo, dport)
    if (v < 0) return v
    const r = ctTrack16(this.ct, proto, sHi, sLo, dHi, dLo, P[0], P[1], peer, nowS, ttl, 0, gen)
    this.lastTrack = r === CT_EVICTED || r === CT_FULL ? r : 0
    return v
  }

  /**
   * Remembers the datagram whose first fragment is at b[p]: `dir` FRAG_IN or FRAG_OUT, `peerAt` and
   * `lanAt` the offsets of the peer's and the other side's addresses in the header. A full share (or the
   * peer's CT_FRAG_PER_PEER) or a lost race leaves it unremembered: its later fragments are dropped, the
   * datagram is lost, nothing else; no flow is ever evicted for it. Returns CT_EVICTED (the peer's oldest
   * fragment entry was replaced) or CT_FULL for the caller to count, else 0.
   */
  private fragmentStarts(b: Uint8Array, p: number, dir: number, peerAt: number, lanAt: number, peer: number, nowS: number): number {
    const r = ctTrack16(
      this.ct,
      FRAG_KEY_PROTO,
      (b[p + peerAt] << 8) | b[p + peerAt + 1],
      (b[p + peerAt + 2] << 8) | b[p + peerAt + 3],
      (b[p + lanAt] << 8) | b[p + lanAt + 1],
      (b[p + lanAt + 2] << 8) | b[p + lanAt + 3],
      (b[p + 4] << 8) | b[p + 5],
      dir | b[p + 9],
      peer,
      nowS,
      CT_FRAG_S,
      CT_FRAG,
      0,
    )
    return r === CT_EVICTED || r === CT_FULL ? r : 0
  }

  /**
   * Whether the later fragment at b[p] belongs to a datagram whose first fragment `peer` sent or was sent
   * (fragmentStarts). The last one (MF clear) marks the datagram done (ctFragDone).
   */
  private fragmentSeen(b: Uint8Array, p: number, dir: number, peerAt: number, lanAt: number, peer: number, nowS: number): boolean {
    const e = ctFind16(
      this.ct,
      FRAG_KEY_PROTO,
      (b[p + peerAt] << 8) | b[p + peerAt + 1],
      (b[p + peerAt + 2] << 8) | b[p + peerAt + 3],
      (b[p + lanAt] << 8) | b[p + lanAt + 1],
      (b[p + lanAt + 2] << 8) | b[p + lanAt + 3],
      (b[p + 4] << 8) | b[p + 5],
      dir | b[p + 9],
      nowS,
    )
    if (e < 0 || ctEntryPeer(this.ct, e) !== peer || !ctEntryFrag(this.ct, e)) return false
    if ((b[p + 6] & 0x20) === 0)
      ctFragDone(
        this.ct,
        e,
        (b[p + peerAt] << 24) | (b[p + peerAt + 1] << 16) | (b[p + peerAt + 2] << 8) | b[p + peerAt + 3],
        (b[p + lanAt] << 24) | (b[p + lanAt + 1] << 16) | (b[p + lanAt + 2] << 8) | b[p + lanAt + 3],
        (((b[p + 4] << 8) | b[p + 5]) << 16) | dir | b[p + 9],
        nowS,
      )
    return true
  }

  /**
   * admit()'s last new flow, or else its first fragment's entry: CT_EVICTED or CT_FULL, else 0 (the
   * caller counts conntrack_evicted or conntrack_full).
   */
  lastTrack = 0
  /** egress()'s last LAN reply that was a first fragment: its entry's CT_EVICTED or CT_FULL, else 0. */
  lastFragTrack = 0

  /** An ICMP error from `peer` to us quoting a packet of a flow tracked with `peer` (our side sent it). */
  private relatedError(b: Uint8Array, p: number, len: number, ihl: number, peer: number, nowS: number): boolean {
    const q = p + ihl + 8
    if (len < ihl + 8 + 20 || b[q] >> 4 !== 4) return false
    const qihl = (b[q] & 15) * 4
    if (qihl < 20 || len < ihl + 8 + qihl + 8) return false
    // Addressed to the quoted packet's source: our side of the flow.
    if (b[p + 16] !== b[q + 12] || b[p + 17] !== b[q + 13] || b[p + 18] !== b[q + 14] || b[p + 19] !== b[q + 15]) return false
    const qproto = b[q + 9]
    this.portsInto(b, q, qproto, false)
    const e = ctFind16(
      this.ct,
      qproto,
      (b[q + 16] << 8) | b[q + 17],
      (b[q + 18] << 8) | b[q + 19],
      (b[q + 12] << 8) | b[q + 13],
      (b[q + 14] << 8) | b[q + 15],
      this.ports[0],
      this.ports[1],
      nowS,
    )
    return e >= 0 && ctEntryPeer(this.ct, e) === peer && !ctEntryCut(this.ct, e)
  }

  /**
   * Policy enforcement: this system's own packet (source = our address) to `peer`. Tracked so that
   * the peer's replies pass admit(); a reply to a flow the peer started marks that flow answered.
   * ICMP errors we send are not tracked (they start nothing). Returns CT_EVICTED / CT_FULL or 0.
   */
  trackOwn(b: Uint8Array, p: number, len: number, peer: number, nowS: number): number {
    if ((((b[p + 6] & 0x1f) << 8) | b[p + 7]) !== 0) return 0
    const proto = b[p + 9]
    const ihl = (b[p] & 15) * 4
    if (len < ihl + 8) return 0
    const l4 = p + ihl
    // ICMP errors and redirects are answers, never flows of ours.
    if (proto === PROTO_ICMP && isIcmpError(b[l4])) return 0
    const flags = proto === PROTO_TCP && len >= ihl + 14 ? b[l4 + 13] : 0
    const ttl = ttlFor(proto, flags)
    this.portsInto(b, p, proto, false)
    const P = this.ports
    const pHi = (b[p + 16] << 8) | b[p + 17]
    const pLo = (b[p + 18] << 8) | b[p + 19]
    const sHi = (b[p + 12] << 8) | b[p + 13]
    const sLo = (b[p + 14] << 8) | b[p + 15]
    const e = ctFind16(this.ct, proto, pHi, pLo, sHi, sLo, P[0], P[1], nowS)
    if (e >= 0 && ctEntryPeer(this.ct, e) === peer) {
      // A tombstone (a revoked UDP or ICMP flow) is kept, not turned into a flow of ours: the peer's
      // side of it would pass as our replies.
      ctTouch(this.ct, e, nowS, ttl, !ctEntryOwn(this.ct, e), -1)
      return 0
    }
    // A TCP flow of ours starts with a SYN. A mid-connection segment without an entry belongs to a flow
    // that was cut (a policy revoked it): it must not come back as ours, or the peer's side of it would
    // pass as our replies and the revocation would last only until the next segment we send.
    if (proto === PROTO_TCP && (flags & (TCP_SYN | TCP_ACK)) !== TCP_SYN) return 0
    const r = ctTrack16(this.ct, proto, pHi, pLo, sHi, sLo, P[0], P[1], peer, nowS, ttl, CT_OWN, 0)
    return r === CT_EVICTED || r === CT_FULL ? r : 0
  }

  /** Once per batch on nodes that provide routes: reclaim a slice of expired entries. */
  sweep(nowS: number): void {
    this.sweepAt = ctSweep(this.ct, nowS, this.sweepAt, SWEEP_PER_TICK)
  }
}

/** ICMP echo flows (portsInto): the peer's side sent the request, or the LAN (our) side did. */
const ECHO_PEER_ASKED = 1
const ECHO_LAN_ASKED = 2

const TCP_SYN = 0x02
const TCP_ACK = 0x10

/** ICMP types that quote the packet they answer: unreachable, source quench, redirect, time exceeded, parameter problem. */
function isIcmpError(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12
}
