/**
 * A removed peer's connection-table entries go with it (Agent.removePeer calls ctCutPeer): the next
 * peer given its slot, here with the same overlay address (a peer whose key was replaced), inherits
 * none of its flows. The real Pipeline of bench/testbed.ts: the client is peer slot 0 of an exit node
 * that provides 172.26.0.0/20.
 */
import t, { type Test } from 'tap'
import { A_VA, B_VA, C_VA, HEADROOM, LAN, deliver, sessionPair } from '../../bench/testbed.js'
import { type Cidr, parseCidr } from '../../src/common/ipv4.js'
import { compilePolicies, policyTablesFor } from '../../src/compile/policy.js'
import {
  CT_TCP_EST_S,
  PROTO_TCP,
  PROTO_UDP,
  ctCountByPeer,
  ctCutPeer,
  ctPeerCount,
  ctTotals,
  ctTrack,
} from '../../src/dataplane/conntrack.js'
import { R } from '../../src/ipc/layout.js'

type Pair = ReturnType<typeof sessionPair>
const HOST = LAN + 250
const SLOT = 0

/** An IPv4 packet src:sport -> dst:dport, TCP with `flags` or UDP. */
function packet(proto: number, src: number, dst: number, sport: number, dport: number, flags = 0): Uint8Array {
  const b = new Uint8Array(60)
  const d = new DataView(b.buffer)
  b[0] = 0x45
  b[3] = b.length
  b[8] = 64
  b[9] = proto
  d.setUint32(12, src)
  d.setUint32(16, dst)
  d.setUint16(20, sport)
  d.setUint16(22, dport)
  if (proto === PROTO_TCP) {
    b[32] = 0x50 // data offset: 5 words
    b[33] = flags
  }
  return b
}
const SYN = 0x02
const SYN_ACK = 0x12
const ACK = 0x10

/** The peer in slot 0 sends one packet to the exit node: delivered? */
function fromPeer(p: Pair, pkt: Uint8Array): boolean {
  p.client.oSlab.set(pkt, HEADROOM)
  p.client.oLens[0] = pkt.length
  if (p.client.outbound(1) !== 1) throw new Error('the client did not seal it')
  deliver(p.client, p.exit, 1)
  return p.exit.inbound(1) === 1
}

/** The exit node reads a packet from its TUN for the peer in slot 0: does it leave? */
function toPeer(p: Pair, pkt: Uint8Array): boolean {
  p.exit.oSlab.set(pkt, HEADROOM)
  p.exit.oLens[0] = pkt.length
  return p.exit.outbound(1) === 1
}

function now(p: Pair): void {
  p.client.setClock(Date.now())
  p.exit.setClock(Date.now())
}

/** What Agent.removePeer does to the connection table. */
function removePeer(p: Pair, slot: number): number {
  return ctCutPeer(new Int32Array(p.e.conntrack), slot)
}

/** The per-peer counts, the peers holding entries and the total equal what the table holds. */
function countsExact(t: Test, ct: Int32Array, slots: number[]): void {
  const held = ctCountByPeer(ct, -(2 ** 31))
  t.same(
    slots.map((s) => ctPeerCount(ct, s)),
    slots.map((s) => held.get(s) ?? 0),
    'per-peer counts equal the entries held',
  )
  const total = [...held.values()].reduce((a, b) => a + b, 0)
  t.same(ctTotals(ct), { active: held.size, total }, 'the peers holding entries and the total too')
}

t.test("exit node: a LAN host's reply on a removed peer's answered TCP flow does not reach the slot's next peer", async (t) => {
  const p = sessionPair(4)
  now(p)
  const ct = new Int32Array(p.e.conntrack)
  t.ok(fromPeer(p, packet(PROTO_TCP, A_VA, HOST, 40000, 443, SYN)), 'peer A (slot 0) opens TCP to a LAN host')
  t.ok(toPeer(p, packet(PROTO_TCP, HOST, A_VA, 443, 40000, SYN_ACK)), 'the LAN host answers it (the flow now lives 2 h)')
  t.ok(fromPeer(p, packet(PROTO_TCP, A_VA, HOST, 40000, 443, ACK)), 'A goes on')
  ctTrack(ct, PROTO_UDP, C_VA, HOST, (5000 << 16) | 53, 1, p.exit.nowS, CT_TCP_EST_S)
  t.equal(ctPeerCount(ct, SLOT), 1, 'A holds one entry')
  t.equal(ctPeerCount(ct, 1), 1, 'another peer (slot 1) holds one too')

  t.equal(removePeer(p, SLOT), 1, 'A is removed: its entry is cut')
  t.equal(ctPeerCount(ct, SLOT), 0, 'slot 0 holds nothing')
  t.equal(ctPeerCount(ct, 1), 1, "the other peer's entry stays")
  countsExact(t, ct, [SLOT, 1])

  // Peer B is given slot 0 with A's address (A's key was replaced): same routes, same allowed source.
  const before = p.e.v.reasons[R.unsolicited]
  t.notOk(toPeer(p, packet(PROTO_TCP, HOST, A_VA, 443, 40000, ACK)), "the LAN host's next packet on A's flow does not leave for B")
  t.equal(p.e.v.reasons[R.unsolicited], before + 1, 'counted as unsolicited')
})

t.test("policies: a packet from the slot's next peer on this system's flow to the removed peer is judged as new", async (t) => {
  const p = sessionPair(4)
  now(p)
  const cidr = (s: string) => parseCidr(s) as Cidr
  const enforce = (tags: string[], gen: number) => {
    const c = compilePolicies({
      selfTags: ['exit-node'],
      selfAddress: B_VA,
      providesRoutes: [cidr('172.26.0.0/20')],
      peers: [{ slot: SLOT, tags }],
      policies: [
        {
          index: 0,
          description: 'p0',
          enabled: true,
          senderTags: ['laptops'],
          receiverTags: ['exit-node'],
          acls: [{ protocol: 'Udp', portLo: 9100, portHi: 9100 }],
          appliesHere: true,
        },
      ],
    })
    p.exit.tables = { ...p.exit.tables, ...policyTablesFor(c, 1, gen) }
    now(p)
  }
  enforce(['laptops'], 1)
  t.ok(toPeer(p, packet(PROTO_UDP, B_VA, A_VA, 7000, 53)), 'this system sends a query to peer A (slot 0): tracked as its own flow')
  t.ok(fromPeer(p, packet(PROTO_UDP, A_VA, B_VA, 53, 7000)), "A's answer passes as part of that flow")

  t.equal(removePeer(p, SLOT), 1, "A is removed: this system's flow to it is cut")
  enforce([], 2) // the reload gives slot 0 to peer B (no tags: no policy lets it start anything), same address
  const before = p.e.v.reasons[R.policy_no_policy]
  t.notOk(fromPeer(p, packet(PROTO_UDP, A_VA, B_VA, 53, 7000)), "B's packet with the answer's addresses and ports is not delivered")
  t.equal(p.e.v.reasons[R.policy_no_policy], before + 1, 'it was judged as a new flow and denied')
  countsExact(t, new Int32Array(p.e.conntrack), [SLOT])
})
