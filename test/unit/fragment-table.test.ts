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
 *
 * Re-review (review 18b) of that fix:
 * R1: entries lived CT_FRAG_S after the last fragment and the cap counted them, so a peer completed about
 * 25 fragmented datagrams a second. Before: "not ok - every fragmented reply of a modest stream leaves
 * whole" (265 of 500 at 100 a second). Now the last fragment marks the datagram done: it leaves the caps.
 * R2: one LAN host could hold the peer's whole cap. Before: "not ok - the server's fragmented replies are
 * not lost to the printer's first fragments" (0 of 50). Now one host holds at most CT_FRAG_PER_HOST.
 * R4: a later fragment after a refused first fragment was counted again (a stale lastFragTrack).
 */
import t from 'tap'
import { A_VA, B_VA, LAN, sessionPair } from '../../bench/testbed.js'
import { type Pair, flood, fragment, leaves, send, udp } from '../helpers/fragments.js'
import { type Cidr, parseCidr } from '../../src/common/ipv4.js'
import { REASONS } from '../../src/ipc/layout.js'
import {
  CT_FRAG_PER_HOST,
  CT_FRAG_PER_PEER,
  CT_PEER_SHARE,
  PROTO_UDP,
  ctHostFragCount,
  ctPeerCount,
  ctPeerFragCount,
} from '../../src/dataplane/conntrack.js'
import { compilePolicies, policyTablesFor } from '../../src/compile/policy.js'
import type { PolicyConfig } from '../../src/config/policies.js'

const cidr = (s: string) => parseCidr(s) as Cidr
const PRINTER = LAN + 250
/** The LAN hosts the client has answered flows with (not the attacker). */
const SERVER = (i: number) => LAN + 0x400 + i

function reason(p: Pair, name: string): number {
  return p.e.v.reasons[REASONS.indexOf(name as (typeof REASONS)[number])]
}

/** The client (peer slot 0 of the exit node) with `n` answered UDP flows to SERVER(i), and one to each of `printers` printers (PRINTER + j). */
function established(n: number, printers = 1): Pair {
  const p = sessionPair(256)
  const now = 5_000_000_000
  p.client.setClock(now)
  p.exit.setClock(now)
  for (let i = 0; i < n; i++) {
    if (!send(p, fragment(PROTO_UDP, A_VA, SERVER(i), 0x100 + i, 0, false, udp(41000 + i, 443)))) throw new Error('not delivered')
    if (!leaves(p, fragment(PROTO_UDP, SERVER(i), A_VA, 0x200 + i, 0, false, udp(443, 41000 + i)))) throw new Error('no reply')
  }
  for (let j = 0; j < printers; j++) send(p, fragment(PROTO_UDP, A_VA, PRINTER + j, 0x0abc, 0, false, udp(40000, 9100)))
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
  t.equal(ctPeerFragCount(ct, 0), CT_FRAG_PER_HOST, 'the printer holds exactly CT_FRAG_PER_HOST of its datagrams in flight')
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
  t.equal(counted, N - CT_FRAG_PER_HOST, "every first fragment beyond the host's first CT_FRAG_PER_HOST is counted")
  t.equal(survivors(p, FLOWS), FLOWS, 'no answered flow was lost')
})

t.test("a peer's own first fragments (Policies enforced) are capped too and evict none of its flows", async (t) => {
  const p = established(FLOWS)
  enforce(p, true, 1)
  const ct = new Int32Array(p.e.conntrack)
  let admitted = 0
  for (let k = 0; k < 5000; k++) if (send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x8000 + k, 0, true, udp(40000, 9100)))) admitted++
  t.equal(admitted, 5000, 'each first fragment to an allowed port is admitted')
  t.equal(ctPeerFragCount(ct, 0), CT_FRAG_PER_HOST, 'the client has CT_FRAG_PER_HOST datagrams in flight to the printer')
  t.equal(survivors(p, FLOWS), FLOWS, 'its answered flows to other LAN hosts all survive')
})

t.test('several LAN hosts together hold at most CT_FRAG_PER_PEER of a peer, each at most CT_FRAG_PER_HOST', async (t) => {
  const hosts = 8
  const p = established(FLOWS, hosts)
  const ct = new Int32Array(p.e.conntrack)
  flood(p, (k) => fragment(PROTO_UDP, PRINTER + (k % hosts), A_VA, (k >> 3) & 0xffff, 0, true, udp(9100, 40000)), 100_000)
  const per = Array.from({ length: hosts }, (_, j) => ctHostFragCount(ct, 0, PRINTER + j))
  t.comment(`in flight: ${ctPeerFragCount(ct, 0)} in all; per host ${per.join(' ')}`)
  t.equal(ctPeerFragCount(ct, 0), CT_FRAG_PER_PEER, 'the client has exactly CT_FRAG_PER_PEER datagrams in flight')
  t.ok(
    per.every((n) => n <= CT_FRAG_PER_HOST),
    'no host holds more than CT_FRAG_PER_HOST',
  )
  t.equal(survivors(p, FLOWS), FLOWS, 'no answered flow was lost')
})

/** A LAN host's fragmented replies (first and last fragment back to back) at `perS` a second for `secs`; how many leave whole. */
function stream(p: Pair, host: number, port: number, t0: number, perS: number, secs: number, id0: number): number {
  let whole = 0
  for (let k = 0; k < perS * secs; k++) {
    const now = t0 + Math.floor((k * 1000) / perS)
    p.client.setClock(now)
    p.exit.setClock(now)
    const id = (id0 + k) & 0xffff
    if (!leaves(p, fragment(PROTO_UDP, host, A_VA, id, 0, true, udp(port, 40000, 1400)))) continue
    if (leaves(p, fragment(PROTO_UDP, host, A_VA, id, 176, false, new Uint8Array(200)))) whole++
  }
  return whole
}

t.test('R1: a LAN server answering with fragmented datagrams, 1,000 a second for 5 s, has each leave whole', async (t) => {
  const p = sessionPair(4)
  const t0 = 5_000_000_000
  p.client.setClock(t0)
  p.exit.setClock(t0)
  send(p, fragment(PROTO_UDP, A_VA, SERVER(7), 1, 0, false, udp(40000, 5004)))
  const whole = stream(p, SERVER(7), 5004, t0, 1000, 5, 0x1000)
  const ct = new Int32Array(p.e.conntrack)
  t.comment(`${whole} of 5000 left whole; conntrack_full ${reason(p, 'conntrack_full')}; in flight ${ctPeerFragCount(ct, 0)}`)
  t.equal(whole, 5000, 'every datagram leaves whole')
  t.equal(ctPeerFragCount(ct, 0), 0, 'none is left in flight (the last fragment marked each done)')
  // A middle fragment reordered behind the last one still passes (CT_FRAG_DONE_S), not after.
  leaves(p, fragment(PROTO_UDP, SERVER(7), A_VA, 0x7777, 0, true, udp(5004, 40000, 1400)))
  t.ok(leaves(p, fragment(PROTO_UDP, SERVER(7), A_VA, 0x7777, 352, false, new Uint8Array(200))), 'the last fragment leaves')
  t.ok(leaves(p, fragment(PROTO_UDP, SERVER(7), A_VA, 0x7777, 176, true, new Uint8Array(1408))), 'a middle one after it too')
  p.exit.setClock(t0 + 5000 + 3000)
  t.notOk(leaves(p, fragment(PROTO_UDP, SERVER(7), A_VA, 0x7777, 176, true, new Uint8Array(1408))), 'but not 3 s later')
})

t.test("R2: a LAN host's first fragments do not starve the same peer's fragmented datagrams with another host", async (t) => {
  const p = established(4)
  const ct = new Int32Array(p.e.conntrack)
  send(p, fragment(PROTO_UDP, A_VA, SERVER(7), 2, 0, false, udp(40000, 5004)))
  const t0 = 5_000_000_000
  // The printer: 256 unfinished datagrams at once, then 40 a second, beside the server's 10 a second.
  flood(p, (k) => fragment(PROTO_UDP, PRINTER, A_VA, k, 0, true, udp(9100, 40000)), CT_FRAG_PER_PEER)
  let whole = 0
  let pk = CT_FRAG_PER_PEER
  for (let k = 0; k < 50; k++) {
    for (let j = 0; j < 4; j++) {
      p.exit.setClock(t0 + k * 100 + j * 25)
      leaves(p, fragment(PROTO_UDP, PRINTER, A_VA, pk++ & 0xffff, 0, true, udp(9100, 40000)))
    }
    const id = 0x8000 + k
    leaves(p, fragment(PROTO_UDP, SERVER(7), A_VA, id, 0, true, udp(5004, 40000, 1400)))
    if (leaves(p, fragment(PROTO_UDP, SERVER(7), A_VA, id, 176, false, new Uint8Array(200)))) whole++
  }
  t.comment(`${whole} of 50 of the server's datagrams left whole; printer in flight ${ctHostFragCount(ct, 0, PRINTER)}`)
  t.equal(whole, 50, "the server's fragmented replies are not lost to the printer's first fragments")
  t.equal(ctHostFragCount(ct, 0, PRINTER), CT_FRAG_PER_HOST, 'the printer holds CT_FRAG_PER_HOST')
})

t.test('R4: later fragments after a refused first fragment are not counted again', async (t) => {
  const p = established(4)
  flood(p, (k) => fragment(PROTO_UDP, PRINTER, A_VA, k, 0, true, udp(9100, 40000)), CT_FRAG_PER_HOST)
  const c0 = reason(p, 'conntrack_full') + reason(p, 'conntrack_evicted')
  leaves(p, fragment(PROTO_UDP, PRINTER, A_VA, 5000, 0, true, udp(9100, 40000)))
  const c1 = reason(p, 'conntrack_full') + reason(p, 'conntrack_evicted')
  t.equal(c1 - c0, 1, 'the refused (or evicting) first fragment is counted once')
  let left = 0
  for (let k = 0; k < CT_FRAG_PER_HOST; k++) if (leaves(p, fragment(PROTO_UDP, PRINTER, A_VA, k, 1, true, new Uint8Array(8)))) left++
  const c2 = reason(p, 'conntrack_full') + reason(p, 'conntrack_evicted')
  t.comment(`${left} later fragments left; counts moved by ${c2 - c1}`)
  t.ok(left > 0, 'later fragments of remembered datagrams leave')
  t.equal(c2 - c1, 0, 'and none is counted as conntrack_full or conntrack_evicted')
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
