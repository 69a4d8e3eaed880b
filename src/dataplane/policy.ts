/**
 * Policy verdict for a NEW inbound flow (receiver-side enforcement): integer tables in, integer out.
 * Built by control (src/compile/policy.ts) at start and reload, posted to workers and
 * swapped whole; the evaluator allocates nothing and never throws.
 *
 * Tables (W = ceil(policies / 32) words; bit p of a mask = policy p):
 *   peerMask[slot*W + w]   policies that are enabled, name a receiver tag this system carries and a
 *                          sender tag that peer slot carries (tags are resolved at compile time)
 *   dstChild / dstVal      route-table.ts trie over destinations: this system's address (/32), every
 *                          provided route and every granted range; value = destination class
 *   dstMask[cls*W + w]     policies that grant that class (self: policies without gateway keys;
 *                          inside a provided route: policies whose granted ranges contain it)
 *   dstKind[cls]           DST_SELF or DST_ROUTE
 *   aclStart[p]..aclStart[p+1]  policy p's ACL entries: aclProto (0 = Any, else IP protocol number),
 *                          aclLo / aclHi (inclusive destination port range; 0-65535 for Any and Icmp)
 *
 * Evaluation: cls = trie(dst); candidates = peerMask[peer] & dstMask[cls]; the lowest candidate whose
 * ACL matches (proto, dport) allows. 100 policies x 1000 peers = 16 KB of masks.
 *
 * How the firewall calls it (inbound = UDP -> TUN, after decrypt): 1. source allowed for the peer
 * (cryptokey), 2. destination is ours (self or a provided route), 3. conntrack hit -> pass, no
 * evaluation, 4. otherwise, if the packet may start a flow (TCP SYN without ACK, UDP, ICMP echo request,
 * other protocols): v = evaluatePolicy(table, peerSlot, proto, dHi, dLo, dport) with dport = the TCP/UDP
 * destination port (0 for others); v >= 0 -> count a hit for policy v (ALLOW_ALL: none), record the flow
 * with the table's generation, deliver; v < 0 -> count denyReason(v) (and a drop for denyPolicy(v) if
 * >= 0), log describeVerdict(labels, v) at -v 5, drop.
 */
import type { PolicyTable } from '../ipc/messages.js'

export type { PolicyTable }
import { lookupRoute16 } from './route-table.js'

export const POLICY_MODE_COMPAT = 0
export const POLICY_MODE_ENFORCE = 1

export const DST_SELF = 0
export const DST_ROUTE = 1

export const ACL_ANY = 0

/** Verdict of compatibility mode (no Policies key): allowed, no policy to count. */
export const ALLOW_ALL = 0x3fffffff

/** Deny reasons (a verdict < 0 carries one, plus the nearest policy whose ACL did not match, if any). */
export const DENY_NO_POLICY = 1
export const DENY_ROUTE_NOT_GRANTED = 2
export const DENY_NOT_LOCAL = 3
export const DENY_REASON_NAMES = ['', 'no_policy', 'route_not_granted', 'not_local'] as const

/** A table that allows everything (no Policies key). */
export function compatPolicyTable(): PolicyTable {
  const z = new Int32Array(0)
  return {
    mode: POLICY_MODE_COMPAT,
    words: 0,
    slots: 0,
    policies: 0,
    peerMask: z,
    dstChild: new Int32Array(256),
    dstVal: new Int32Array(256),
    dstMask: z,
    dstKind: z,
    aclStart: new Int32Array(1),
    aclProto: z,
    aclLo: z,
    aclHi: z,
  }
}

/**
 * Verdict for a new flow from peer slot `peer` to dHi.dLo (16-bit halves, as lookupRoute16 takes them),
 * IP protocol `proto`, destination port `dport` (0 when the protocol has none).
 * Returns the allowing policy index (>= 0), ALLOW_ALL in compatibility mode, or a deny verdict (< 0):
 * -(reason | (nearPolicy + 1) << 2); see denyReason() / denyPolicy().
 */
export function evaluatePolicy(t: PolicyTable, peer: number, proto: number, dHi: number, dLo: number, dport: number): number {
  if (t.mode === POLICY_MODE_COMPAT) return ALLOW_ALL
  const cls = lookupRoute16(t.dstChild, t.dstVal, dHi, dLo)
  if (cls < 0) return -DENY_NOT_LOCAL
  const W = t.words
  let near = -1
  let any = 0
  if (peer >= 0 && peer < t.slots) {
    const pm = t.peerMask
    const dm = t.dstMask
    const pb = peer * W
    const db = cls * W
    const aclStart = t.aclStart
    const aclProto = t.aclProto
    const aclLo = t.aclLo
    const aclHi = t.aclHi
    for (let w = 0; w < W; w++) {
      let m = pm[pb + w] & dm[db + w]
      any |= m
      while (m !== 0) {
        const low = m & -m
        const p = (w << 5) + 31 - Math.clz32(low)
        m ^= low
        for (let a = aclStart[p], end = aclStart[p + 1]; a < end; a++) {
          const ap = aclProto[a]
          if ((ap === ACL_ANY || ap === proto) && dport >= aclLo[a] && dport <= aclHi[a]) return p
        }
        if (near < 0) near = p
      }
    }
  }
  const reason = any === 0 && t.dstKind[cls] === DST_ROUTE ? DENY_ROUTE_NOT_GRANTED : DENY_NO_POLICY
  return -(reason | ((near + 1) << 2))
}

/** The deny reason of a verdict < 0 (DENY_*). */
export function denyReason(v: number): number {
  return -v & 3
}

/** The policy that matched peer and destination but whose ACL did not allow the flow, or -1. */
export function denyPolicy(v: number): number {
  return (-v >> 2) - 1
}

/** Log text for a verdict (allocates: for -v 5 logging and explain only). `labels` come with the table. */
export function describeVerdict(labels: readonly string[], v: number): string {
  if (v === ALLOW_ALL) return 'allow (policy: none, all peers allowed)'
  if (v >= 0) return `allow by ${labels[v] ?? `policy ${v}`}`
  const r = denyReason(v)
  const near = denyPolicy(v)
  if (r === DENY_NOT_LOCAL) return 'drop: destination is neither this system nor a provided route'
  if (r === DENY_ROUTE_NOT_GRANTED) return 'drop: no policy grants this peer the provided route'
  return near >= 0
    ? `drop: no policy allows (${labels[near] ?? `policy ${near}`}: protocol or port not in its Acls)`
    : 'drop: no policy allows'
}
