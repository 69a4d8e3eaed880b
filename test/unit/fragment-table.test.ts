/**
 * Fragment entries in the connection table (issue 18, review findings F1, F2, F4), whole pipelines.
 *
 * F1: a LAN host behind the exit node could create fragment entries (CT_FRAG) in the name of a peer that
 * has any flow to it, one per first fragment with a new IP id, up to the peer's whole share; then each
 * further one evicted an entry of that peer, its answered flows to other LAN hosts included. Before the
 * fix: "not ok - a LAN host adds at most CT_FRAG_PER_PEER entries (got 16183)", "not ok - the client's
 * answered flows to other LAN hosts survive" (143 of 200 did), "not ok - the client's new flows are all
 * answered" (176 of 200). Now a peer holds at most CT_FRAG_PER_PEER fragment entries and a fragment entry
 * never replaces a flow.
 * F2: fragment entries that could not be made were not counted. Before: "not ok - each ... is counted"
 * (moved by 0).
 * F4 (documented limitation): with Policies, a later fragment that arrives before its first is dropped.
 */
import t from 'tap'
import { A_VA, B_VA, HEADROOM, LAN, deliver, sessionPair } from '../../bench/testbed.js'
import { type Cidr, parseCidr } from '../../src/common/ipv4.js'
import { REASONS } from '../../src/ipc/layout.js'
import { CT_FRAG_PER_PEER, CT_PEER_SHARE, PROTO_UDP, ctPeerCount, ctPeerFragCount } from '../../src/dataplane/conntrack.js'
import { compilePolicies, policyTablesFor } from '../../src/compile/policy.js'
import type { PolicyConfig } from '../../src/config/policies.js'

type Pair = ReturnType<typeof sessionPair>
const cidr = (s: string) => parseCidr(s) as Cidr
const PRINTER = LAN + 250
/** The LAN hosts the client has answered flows with (not the attacker). */
const SERVER = (i: number) => LAN + 0x400 + i

function ip4(b: Uint8Array, o: number, a: number): void {
  for (let i = 0; i < 4; i++) b[o + i] = (a >>> (24 - 8 * i)) & 255
}

function fragment(proto: number, src: number, dst: number, id: number, offset8: number, more: boolean, body: Uint8Array): Uint8Array {
  const size = 20 + body.length
  const b = new Uint8Array(size)
  b[0] = 0x45
  b[2] = size >> 8
  b[3] = size & 255
  b[4] = (id >> 8) & 255
  b[5] = id & 255
  b[6] = (more ? 0x20 : 0) | ((offset8 >> 8) & 0x1f)
  b[7] = offset8 & 255
  b[8] = 64
  b[9] = proto
  ip4(b, 12, src)
  ip4(b, 16, dst)
  b.set(body, 20)
  return b
}

function udp(sport: number, dport: number, n = 8): Uint8Array {
  const body = new Uint8Array(n)
  body[0] = sport >> 8
  body[1] = sport & 255
  body[2] = dport >> 8
  body[3] = dport & 255
  return body
}

function send(p: Pair, pkt: Uint8Array): boolean {
  p.client.oSlab.set(pkt, HEADROOM)
  p.client.oLens[0] = pkt.length
  if (p.client.outbound(1) !== 1) throw new Error('the client did not seal it')
  deliver(p.client, p.exit, 1)
  return p.exit.inbound(1) === 1
}

/** LAN -> exit node's TUN -> client: whether the exit node let it out (sealed it for the client). */
function leaves(p: Pair, pkt: Uint8Array): boolean {
  p.exit.oSlab.set(pkt, HEADROOM)
  p.exit.oLens[0] = pkt.length
  return p.exit.outbound(1) === 1
}

/** Many LAN packets out through the exit node in batches; returns how many left. */
function flood(p: Pair, make: (k: number) => Uint8Array, n: number): number {
  const e = p.exit
  let out = 0
  for (let done = 0; done < n; ) {
    const k = Math.min(e.batch, n - done)
    for (let i = 0; i < k; i++) {
      const pkt = make(done + i)
      e.oSlab.set(pkt, i * e.slot + HEADROOM)
      e.oLens[i] = pkt.length
    }
    out += e.outbound(k)
    done += k
  }
  return out
}

function reason(p: Pair, name: string): number {
  return p.e.v.reasons[REASONS.indexOf(name as (typeof REASONS)[number])]
}

/** The client (peer slot 0 of the exit node) with `n` answered UDP flows to SERVER(i), and one to the printer. */
function established(n: number): Pair {
  const p = sessionPair(256)
  const now = 5_000_000_000
  p.client.setClock(now)
  p.exit.setClock(now)
  for (let i = 0; i < n; i++) {
    if (!send(p, fragment(PROTO_UDP, A_VA, SERVER(i), 0x100 + i, 0, false, udp(41000 + i, 443)))) throw new Error('not delivered')
    if (!leaves(p, fragment(PROTO_UDP, SERVER(i), A_VA, 0x200 + i, 0, false, udp(443, 41000 + i)))) throw new Error('no reply')
  }
  send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x0abc, 0, false, udp(40000, 9100)))
  return p
}

function survivors(p: Pair, n: number): number {
  let ok = 0
  for (let i = 0; i < n; i++) if (leaves(p, fragment(PROTO_UDP, SERVER(i), A_VA, 0x300 + i, 0, false, udp(443, 41000 + i)))) ok++
  return ok
}

const FLOWS = 200

t.test('baseline (held): whole replies from a LAN host make no entries and evict nothing', async (t) => {
  const p = established(FLOWS)
  const count0 = ctPeerCount(new Int32Array(p.e.conntrack), 0)
  const left = flood(p, (k) => fragment(PROTO_UDP, PRINTER, A_VA, k & 0xffff, 0, false, udp(9100, 40000)), 200_000)
  t.equal(left, 200_000, 'every whole reply to the flow the client started leaves')
  t.equal(ctPeerCount(new Int32Array(p.e.conntrack), 0), count0, `the client's count stays ${count0}`)
  t.equal(survivors(p, FLOWS), FLOWS, `all ${FLOWS} answered flows to other LAN hosts still let replies out`)
})

t.test("F1: a LAN host's first fragments take at most CT_FRAG_PER_PEER entries and evict no flow", async (t) => {
  const p = established(FLOWS)
  const ct = new Int32Array(p.e.conntrack)
  const count0 = ctPeerCount(ct, 0)
  t.comment(`client's entries at the exit node before: ${count0} (its ${FLOWS} flows and the printer's)`)
  // The printer answers the client's UDP 40000 -> 9100 with first fragments only (8 bytes of UDP, MF),
  // a new IP id each: 65,536 ids, cycled (an evicted id is a new entry again).
  const firsts = (k: number) => fragment(PROTO_UDP, PRINTER, A_VA, k & 0xffff, 0, true, udp(9100, 40000))
  const left = flood(p, firsts, CT_PEER_SHARE)
  t.comment(`${left} of ${CT_PEER_SHARE} first fragments left; client's entries now ${ctPeerCount(ct, 0)} (share ${CT_PEER_SHARE})`)
  t.ok(
    ctPeerCount(ct, 0) <= count0 + CT_FRAG_PER_PEER,
    `a LAN host adds at most CT_FRAG_PER_PEER entries to the client's share (got ${ctPeerCount(ct, 0) - count0})`,
  )
  t.equal(ctPeerFragCount(ct, 0), CT_FRAG_PER_PEER, 'the client holds exactly CT_FRAG_PER_PEER fragment entries')
  flood(p, (k) => firsts(k + CT_PEER_SHARE), 300_000)
  const alive = survivors(p, FLOWS)
  t.comment(
    `after 300,000 more: ${alive} of ${FLOWS} answered flows to other LAN hosts still pass; unsolicited ${reason(p, 'unsolicited')}`,
  )
  t.equal(alive, FLOWS, "the client's answered flows to other LAN hosts survive a LAN host's first fragments")
  // And the client's new flows into the LAN, with its share held by the printer's entries.
  const full0 = reason(p, 'conntrack_full') + reason(p, 'conntrack_evicted')
  let answered = 0
  for (let i = 0; i < 200; i++) {
    send(p, fragment(PROTO_UDP, A_VA, SERVER(1000 + i), 0x900 + i, 0, false, udp(42000 + i, 53)))
    if (leaves(p, fragment(PROTO_UDP, SERVER(1000 + i), A_VA, 0xa00 + i, 0, false, udp(53, 42000 + i)))) answered++
  }
  t.comment(
    `200 new client flows: ${answered} answered; conntrack_full+evicted +${reason(p, 'conntrack_full') + reason(p, 'conntrack_evicted') - full0}`,
  )
  t.equal(answered, 200, "the client's new flows are all answered")
})

/** The exit node enforces: the client may send UDP 9100 to the printer only. */
function enforce(p: Pair, allow: boolean, gen: number): void {
  const policies: PolicyConfig[] = allow
    ? [
        {
          index: 0,
          description: 'p0',
          enabled: true,
          senderTags: ['laptops'],
          receiverTags: ['exit-node'],
          acls: [{ protocol: 'Udp', portLo: 9100, portHi: 9100 }],
          gatewayRoutes: [cidr('172.26.0.250/32')],
          appliesHere: true,
        },
      ]
    : []
  const c = compilePolicies({
    selfTags: ['exit-node'],
    selfAddress: B_VA,
    providesRoutes: [cidr('172.26.0.0/20')],
    peers: [{ slot: 0, tags: ['laptops'] }],
    policies,
  })
  p.exit.tables = { ...p.exit.tables, ...policyTablesFor(c, 1, gen) }
}

t.test('held: tiny, overlapping and duplicate first fragments are each judged on their own ports', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  p.exit.setClock(Date.now())
  enforce(p, true, 1)
  t.ok(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x4444, 0, true, udp(40000, 9100))), 'an 8-byte first fragment to 9100 passes')
  t.notOk(
    send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x4444, 0, true, udp(40000, 22, 16))),
    'a second first fragment (same id) to 22 is judged: denied',
  )
  t.notOk(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x4444, 0, false, udp(40000, 22, 16))), 'offset 0 without MF (same id) to 22: denied')
  t.notOk(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x4445, 0, true, new Uint8Array(4))), 'a first fragment too short for ports: denied')
  t.ok(
    send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x4444, 1, true, new Uint8Array(8))),
    'the datagram goes on at offset 8 (ports untouched)',
  )
  // A later fragment cannot start before byte 8 of the transport header: the ports (and ICMP echo id) are
  // always the judged first fragment's.
  t.notOk(send(p, fragment(255, A_VA, PRINTER, 0x4444, 1, true, new Uint8Array(8))), 'protocol 255 with the id: no FRAG key collision')
  t.notOk(send(p, fragment(255, A_VA, PRINTER, 0, 0, false, new Uint8Array(8))), 'a whole protocol 255 packet is judged (denied)')
})

t.test('held with a window: a revoked grant lets an admitted datagram finish for up to CT_FRAG_S', async (t) => {
  const p = sessionPair(4)
  const now = Date.now()
  p.client.setClock(now)
  p.exit.setClock(now)
  enforce(p, true, 1)
  t.ok(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x5555, 0, true, udp(40000, 9100, 1000))), 'first fragment admitted')
  enforce(p, false, 2) // reload: no policy grants the printer any more
  t.notOk(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x5556, 0, true, udp(40000, 9100, 1000))), "a new datagram's first fragment is denied")
  t.ok(
    send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x5555, 125, false, new Uint8Array(600))),
    'the admitted one still completes (design: ≤10 s)',
  )
  p.exit.setClock(now + 11_000)
  t.notOk(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x5555, 125, false, new Uint8Array(600))), 'not after CT_FRAG_S')
  t.equal(reason(p, 'fragment_orphan'), 1, 'the late fragment is counted as fragment_orphan')
})

t.test('F2: a first fragment that gets no entry is counted (conntrack_full, or conntrack_evicted for an older one)', async (t) => {
  const p = established(FLOWS)
  const ct = new Int32Array(p.e.conntrack)
  const ev0 = reason(p, 'conntrack_evicted') + reason(p, 'conntrack_full')
  const N = 60_000 // distinct IP ids, all within CT_FRAG_S
  const left = flood(p, (k) => fragment(PROTO_UDP, PRINTER, A_VA, k, 0, true, udp(9100, 40000)), N)
  const counted = reason(p, 'conntrack_evicted') + reason(p, 'conntrack_full') - ev0
  t.comment(`${left} of ${N} first fragments left; ${counted} counted; fragment entries ${ctPeerFragCount(ct, 0)}`)
  t.equal(left, N, 'a first fragment of a reply still leaves (only its later fragments need the entry)')
  t.equal(counted, N - CT_FRAG_PER_PEER, 'every first fragment beyond the first CT_FRAG_PER_PEER is counted')
  t.equal(survivors(p, FLOWS), FLOWS, 'no answered flow was lost')
})

t.test("a peer's own first fragments (Policies enforced) are capped too and evict none of its flows", async (t) => {
  const p = established(FLOWS)
  enforce(p, true, 1)
  const ct = new Int32Array(p.e.conntrack)
  let admitted = 0
  for (let k = 0; k < 5000; k++) if (send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x8000 + k, 0, true, udp(40000, 9100)))) admitted++
  t.equal(admitted, 5000, 'each first fragment to an allowed port is admitted')
  t.equal(ctPeerFragCount(ct, 0), CT_FRAG_PER_PEER, 'the client holds CT_FRAG_PER_PEER fragment entries')
  t.equal(survivors(p, FLOWS), FLOWS, 'its answered flows to other LAN hosts all survive')
})

t.test('F4 (documented): with Policies, a later fragment that arrives before its first fragment is dropped as an orphan', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  p.exit.setClock(Date.now())
  enforce(p, true, 1)
  const later = send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x6666, 125, false, new Uint8Array(600)))
  t.ok(
    send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x6666, 0, true, udp(40000, 9100, 1000))),
    'the first fragment (reordered, second) passes',
  )
  t.notOk(later, 'the later fragment that came first was dropped (README: Policies and fragments)')
  t.equal(reason(p, 'fragment_orphan'), 1, 'and counted as fragment_orphan')
})
