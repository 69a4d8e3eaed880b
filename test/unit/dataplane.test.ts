import t from 'tap'
import { halfSipHash4 } from '../../src/dataplane/siphash.js'
import { buildRouteTable, lookupRoute } from '../../src/dataplane/route-table.js'
import { REPLAY_WINDOW, replayCheckAndSet, replayMaybeFresh } from '../../src/dataplane/replay.js'
import { REPLAY_WORDS } from '../../src/ipc/layout.js'
import {
  CT_ENTRIES,
  CT_EVICTED,
  CT_FIELDS,
  CT_FULL,
  CT_NEW,
  CT_PEER_SHARE,
  ctFairShare,
  ctTotals,
  CT_FAIR_FROM,
  CT_PROBE,
  CT_TCP_CLOSING_S,
  CT_TCP_EST_S,
  CT_UNREPLIED_S,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  createConntrack,
  ctCountByPeer,
  ctPeerCount,
  ctReply,
  ctSweep,
  ctTrack,
  ttlFor,
} from '../../src/dataplane/conntrack.js'
import { timerActions, type PeerTimerState } from '../../src/protocol/timers.js'
import { KEEPALIVE_TIMEOUT_MS, REJECT_AFTER_TIME_MS, REKEY_ATTEMPT_TIME_MS, REKEY_TIMEOUT_MS } from '../../src/protocol/constants.js'
import { RingConsumer, RingProducer, createRing, MSG_HANDSHAKE } from '../../src/ipc/ring.js'
import { parseCidr, maskOf } from '../../src/common/ipv4.js'

t.test('route table: longest prefix wins, matches a brute-force reference', async (t) => {
  const routes = [
    '0.0.0.0/0',
    '10.0.0.0/8',
    '10.1.0.0/16',
    '10.1.2.0/24',
    '10.1.2.3/32',
    '172.26.0.0/20',
    '172.26.0.250/32',
    '192.168.0.0/23',
    '100.64.0.0/10',
  ]
  const entries = routes.map((r, i) => ({ ...(parseCidr(r) as { addr: number; len: number }), value: i }))
  const tb = buildRouteTable(entries)
  const ref = (a: number) => {
    let best = -1
    let bl = -1
    for (const e of entries)
      if ((a & maskOf(e.len)) >>> 0 === e.addr && e.len > bl) {
        best = e.value
        bl = e.len
      }
    return best
  }
  t.equal(lookupRoute(tb.child, tb.val, 0x0a010203), 4, '10.1.2.3 -> /32')
  t.equal(lookupRoute(tb.child, tb.val, 0x0a010204), 3, '10.1.2.4 -> /24')
  t.equal(lookupRoute(tb.child, tb.val, 0xac1a00fa), 6, 'printer /32')
  t.equal(lookupRoute(tb.child, tb.val, 0xac1a0001), 5)
  t.equal(lookupRoute(tb.child, tb.val, 0x08080808), 0, 'default route')
  let mismatches = 0
  for (let i = 0; i < 200000; i++) {
    const a = i < 100000 ? (Math.random() * 2 ** 32) >>> 0 : (entries[i % entries.length].addr + ((Math.random() * 1024) | 0)) >>> 0
    if (lookupRoute(tb.child, tb.val, a) !== ref(a)) mismatches++
  }
  t.equal(mismatches, 0, '200k random lookups agree with the reference')
  const empty = buildRouteTable([])
  t.equal(lookupRoute(empty.child, empty.val, 0x01020304), -1, 'empty table: no route')
  const noDefault = buildRouteTable([{ addr: 0xac1a0000, len: 20, value: 1 }])
  t.equal(lookupRoute(noDefault.child, noDefault.val, 0xac1b0000), -1, 'outside every prefix: no route')
})

t.test('replay window: order, duplicates, window edge, far jumps', async (t) => {
  const bits = new Uint32Array(REPLAY_WORDS)
  const last = new Float64Array(1)
  const accept = (c: number) => replayCheckAndSet(bits, 0, last, 0, c)
  t.ok(REPLAY_WINDOW >= 2048, `window of ${REPLAY_WINDOW} counters`)
  t.ok(accept(0), 'counter 0 accepted once')
  t.notOk(accept(0), 'counter 0 replay refused')
  for (let i = 1; i < 100; i++) t.ok(accept(i) || t.fail(`in-order ${i}`))
  t.ok(accept(5000), 'jump ahead')
  t.notOk(accept(5000), 'duplicate after jump')
  t.ok(accept(5000 - REPLAY_WINDOW + 1), 'oldest counter inside the window')
  t.notOk(accept(5000 - REPLAY_WINDOW), 'just outside the window')
  t.notOk(accept(50), 'far behind')
  t.ok(accept(4999), 'late but inside')
  t.notOk(replayMaybeFresh(bits, 0, last, 0, 0, 4999), 'pre-check sees the duplicate')
  t.ok(replayMaybeFresh(bits, 0, last, 0, 0, 4998), 'pre-check passes a fresh one')
  t.ok(accept(2 ** 40), 'very far jump clears the whole bitmap')
  t.ok(accept(2 ** 40 - 1))
  t.notOk(accept(2 ** 40 - 1))
  t.ok(accept(2 ** 40 + 33))
  // Reordering: every counter in a shuffled block accepted exactly once.
  const b2 = new Uint32Array(REPLAY_WORDS)
  const l2 = new Float64Array(1)
  const order = Array.from({ length: 3000 }, (_, i) => i)
  for (let i = order.length - 1; i > 0; i--) {
    const j = (i * 7919) % (i + 1)
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  let first = 0
  let again = 0
  for (const c of order) if (replayCheckAndSet(b2, 0, l2, 0, c)) first++
  for (const c of order) if (replayCheckAndSet(b2, 0, l2, 0, c)) again++
  t.equal(first, order.length, 'first pass: every counter in the window accepted (no rejection)')
  t.equal(again, 0, 'second pass: none accepted twice')
})

t.test('conntrack: peer-started flows admit replies; others and expired ones do not', async (t) => {
  const ct = new Int32Array(createConntrack())
  const peer = 0x64400005
  const lan = 0xac1a00fa
  const ports = ((40000 << 16) | 80) >>> 0
  t.equal(ctTrack(ct, PROTO_TCP, peer, lan, ports, 3, 100, ttlFor(PROTO_TCP, 0x02)), 1, 'SYN creates a flow')
  t.equal(ctReply(ct, PROTO_TCP, peer, lan, ports, 101, ttlFor(PROTO_TCP, 0x12)), 3, 'SYN-ACK reply admitted, owner returned')
  t.equal(ctReply(ct, PROTO_TCP, peer, lan, ((40001 << 16) | 80) >>> 0, 101, 60), -1, 'other port: unsolicited')
  t.equal(ctReply(ct, PROTO_UDP, peer, lan, ports, 101, 60), -1, 'other protocol: unsolicited')
  t.equal(ctReply(ct, PROTO_TCP, peer + 1, lan, ports, 101, 60), -1, 'other peer address: unsolicited')
  t.equal(ctTrack(ct, PROTO_TCP, peer, lan, ports, 3, 102, ttlFor(PROTO_TCP, 0x10)), 0, 'ACK refreshes')
  t.equal(ctTrack(ct, PROTO_TCP, peer, lan, ports, 3, 103, ttlFor(PROTO_TCP, 0x11)), 0, 'FIN refreshes with a short lifetime')
  t.equal(ctReply(ct, PROTO_TCP, peer, lan, ports, 103 + CT_TCP_CLOSING_S + 1, 60), -1, 'closed flow expires')
  ctTrack(ct, PROTO_ICMP, peer, lan, (7 << 16) >>> 0, 4, 200, ttlFor(PROTO_ICMP, 0))
  t.equal(ctReply(ct, PROTO_ICMP, peer, lan, (7 << 16) >>> 0, 210, 30), 4, 'echo reply admitted')
  t.equal(ctReply(ct, PROTO_ICMP, peer, lan, (7 << 16) >>> 0, 210 + 31, 30), -1, 'ICMP flow expires 30 s after the last packet')
  t.same([...ctCountByPeer(ct, 200).entries()], [[4, 1]], 'status counts live flows per peer')
})

t.test('conntrack hash: HalfSipHash-2-4, the reference vectors', async (t) => {
  // Key 00..07, message 00 01 02 ... (vectors_hsip32 of the reference implementation), as LE words.
  const k0 = 0x03020100
  const k1 = 0x07060504
  const m = [0x03020100, 0x07060504, 0x0b0a0908, 0x0f0e0d0c]
  const want = [0x5b9f35a9, 0x89466e2a, 0x8f84b8d0, 0x84acb5d9]
  for (const [i, n] of [0, 1, 2, 4].entries()) t.equal(halfSipHash4(k0, k1, n, m[0], m[1], m[2], m[3]) >>> 0, want[i], `${n * 4} bytes`)
})

t.test('conntrack: a flow lives CT_UNREPLIED_S until the LAN answers it', async (t) => {
  const ct = new Int32Array(createConntrack())
  const ports = ((40000 << 16) | 80) >>> 0
  t.equal(ctTrack(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 3, 100, ttlFor(PROTO_TCP, 0x10)), CT_NEW, 'a bare ACK')
  t.equal(ctTrack(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 3, 101, ttlFor(PROTO_TCP, 0x10)), 0, 'and another')
  t.equal(ctReply(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 101 + CT_UNREPLIED_S, 60), -1, `gone after ${CT_UNREPLIED_S} s, not 7200`)
  t.equal(ctTrack(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 3, 200, ttlFor(PROTO_TCP, 0x02)), CT_NEW)
  t.equal(ctReply(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 201, ttlFor(PROTO_TCP, 0x12)), 3, 'answered')
  ctTrack(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 3, 202, ttlFor(PROTO_TCP, 0x10))
  t.equal(ctReply(ct, PROTO_TCP, 0x64400005, 0xac1a00fa, ports, 202 + CT_TCP_EST_S - 1, 60), 3, 'once answered: the full lifetime')
})

t.test('conntrack: inserting past capacity evicts and counts; answered flows of other peers stay', async (t) => {
  const ct = new Int32Array(createConntrack())
  // Peer 9's answered flows: never evicted by anyone else.
  const kept: number[] = []
  for (let i = 0; i < 1000; i++) {
    ctTrack(ct, PROTO_UDP, 0x64400009, 0xac1b0000 + i, i, 9, 10, 180)
    if (ctReply(ct, PROTO_UDP, 0x64400009, 0xac1b0000 + i, i, 10, 180) === 9) kept.push(i)
  }
  t.equal(kept.length, 1000)
  const n = CT_ENTRIES * 2
  const seen = { new: 0, evicted: 0, full: 0, other: 0 }
  for (let i = 0; i < n; i++) {
    const peer = i & 7
    const r = ctTrack(ct, PROTO_UDP, 0x64400000 + peer, 0xac1a0000 + (i >>> 3), i, peer, 10, 180)
    if (r === CT_NEW) seen.new++
    else if (r === CT_EVICTED) seen.evicted++
    else if (r === CT_FULL) seen.full++
    else seen.other++
  }
  t.equal(seen.new + seen.evicted + seen.full, n, `every insert made room, evicted or was refused: ${JSON.stringify(seen)}`)
  t.ok(seen.new <= CT_ENTRIES - 1000, `new entries never exceed the free room (${seen.new})`)
  t.ok(seen.evicted > 0, `past capacity, inserts evict (${seen.evicted})`)
  for (let p = 0; p < 8; p++) t.ok(ctPeerCount(ct, p) <= CT_PEER_SHARE, `peer ${p} holds ${ctPeerCount(ct, p)} <= ${CT_PEER_SHARE}`)
  const live = ctCountByPeer(ct, 11)
  t.equal(live.get(9), 1000, "peer 9's answered flows all survived the flood")
  t.equal(kept.filter((i) => ctReply(ct, PROTO_UDP, 0x64400009, 0xac1b0000 + i, i, 11, 0) === 9).length, 1000, 'and still admit replies')
  let total = 0
  for (const v of live.values()) total += v
  t.ok(total <= CT_ENTRIES, `live entries ${total} <= ${CT_ENTRIES}`)
})

t.test('conntrack: busy peers cannot keep another out of a full table (fair share)', async (t) => {
  const ct = new Int32Array(createConntrack())
  const track = (p: number, lan: number, now: number) => {
    const r = ctTrack(ct, PROTO_UDP, 0x64400000 + p, lan, 53, p, now, 180)
    return r >= 0 && ctReply(ct, PROTO_UDP, 0x64400000 + p, lan, 53, now, 180) === p
  }
  const answers = (p: number, lan: number, now: number) => ctReply(ct, PROTO_UDP, 0x64400000 + p, lan, 53, now, 0) === p
  // A light peer (6) with 100 answered flows; then peers 1..4 fill the table with theirs, up to their share.
  for (let i = 0; i < 100; i++) track(6, 0xac1c0000 + i, 10)
  const light = () => Array.from({ length: 100 }, (_, i) => answers(6, 0xac1c0000 + i, 11)).filter(Boolean).length
  t.equal(light(), 100, 'the light peer has its 100 flows')
  for (let i = 0; i < CT_ENTRIES * 1.25; i++) track(1 + (i & 3), 0xac1a0000 + (i >>> 2), 10)
  const busy = [1, 2, 3, 4].map((p) => ctPeerCount(ct, p))
  t.ok(ctTotals(ct).total >= CT_FAIR_FROM, `the table is nearly full of answered flows: ${busy.join(', ')}`)
  t.equal(ctTotals(ct).active, 5, 'five peers hold entries')
  t.equal(ctFairShare(ct, 5), Math.floor(CT_ENTRIES / 6), 'a sixth peer would get a sixth')
  // Peer 5 starts 2,000 flows: each is tracked and answered, and all of them still are afterwards.
  let answered = 0
  for (let i = 0; i < 2000; i++) if (track(5, 0xac1b0000 + i, 11)) answered++
  t.equal(answered, 2000, "each of the new peer's flows was tracked and answered")
  const kept = Array.from({ length: 2000 }, (_, i) => answers(5, 0xac1b0000 + i, 11)).filter(Boolean).length
  t.equal(kept, 2000, 'and it did not evict its own earlier flows to make room')
  // It keeps going: it takes free room, and room from peers over their fair share, never below it.
  for (let i = 2000; i < CT_ENTRIES; i++) track(5, 0xac1b0000 + i, 11)
  const fair = ctFairShare(ct, 5)
  const after = [1, 2, 3, 4, 5].map((p) => ctPeerCount(ct, p))
  for (let p = 1; p <= 4; p++) t.ok(after[p - 1] >= Math.min(busy[p - 1], fair), `peer ${p} keeps at least its fair share: ${after[p - 1]}`)
  t.ok(
    after[4] >= fair * 0.9 && after[4] <= CT_PEER_SHARE,
    `peer 5 reached its fair share, plus free room within its cap: ${after[4]} (fair ${fair}, cap ${CT_PEER_SHARE})`,
  )
  t.equal(light(), 100, "the light peer's flows (within its share) were never evicted")
  // Counts and totals go back to zero when everything expires.
  let at = 0
  for (let i = 0; i < CT_ENTRIES / 4096; i++) at = ctSweep(ct, 10_000, at, 4096)
  t.same(ctTotals(ct), { active: 0, total: 0 }, 'no peer holds entries after the sweep')
})

t.test('conntrack: colliding tuples evict only the flooder; the key changes per table', async (t) => {
  const key = Int32Array.of(0x1234567, 0x89abcde)
  const ct = new Int32Array(createConntrack(key))
  const bucket = (peerIp: number, lanIp: number, ports: number) =>
    halfSipHash4(key[0], key[1], 4, peerIp, lanIp, ports, PROTO_UDP) & (CT_ENTRIES - 1)
  const victim = bucket(0x64400001, 0xac1a0001, 1)
  ctTrack(ct, PROTO_UDP, 0x64400001, 0xac1a0001, 1, 1, 10, 180)
  ctReply(ct, PROTO_UDP, 0x64400001, 0xac1a0001, 1, 10, 180)
  // With the key known, an attacker finds 3 * CT_PROBE tuples for the victim's bucket.
  let found = 0
  for (let i = 0; found < 3 * CT_PROBE; i++)
    if (bucket(0x64400002, 0xac1a0002, i) === victim) {
      ctTrack(ct, PROTO_UDP, 0x64400002, 0xac1a0002, i, 2, 10, 180)
      found++
    }
  t.equal(ctReply(ct, PROTO_UDP, 0x64400001, 0xac1a0001, 1, 11, 180), 1, "the victim's flow survived")
  const other = new Int32Array(createConntrack())
  t.not(
    other[CT_ENTRIES * CT_FIELDS] === ct[CT_ENTRIES * CT_FIELDS] && other[CT_ENTRIES * CT_FIELDS + 1] === ct[CT_ENTRIES * CT_FIELDS + 1],
    true,
    'a new table has a new random key',
  )
})

t.test('conntrack: the sweep frees expired entries and releases their share', async (t) => {
  const ct = new Int32Array(createConntrack())
  for (let i = 0; i < 100; i++) ctTrack(ct, PROTO_UDP, 0x64400001, 0xac1a0000 + i, i, 4, 10, 20)
  t.equal(ctPeerCount(ct, 4), 100)
  let at = 0
  for (let i = 0; i < CT_ENTRIES / 512; i++) at = ctSweep(ct, 10 + 21, at, 512)
  t.equal(ctPeerCount(ct, 4), 0, 'all released after they expired')
  t.equal(ctCountByPeer(ct, 0).size, 0)
})

t.test('timers follow the whitepaper', async (t) => {
  const base: PeerTimerState = {
    lastRxAny: 0,
    lastRxData: 0,
    lastTxAny: 0,
    lastTxData: 0,
    persistentKeepaliveS: 0,
    nextRetryMs: 0,
    lastInitiationSentMs: 0,
    keypairs: {},
    unresponsive: false,
    rekeyOnRxDone: false,
  }
  const T0 = 1_000_000
  const kinds = (s: Partial<PeerTimerState>, now: number) =>
    timerActions({ ...base, ...s }, now).map((a) => a.kind + ('why' in a ? `:${a.why}` : '') + ('which' in a ? `:${a.which}` : ''))
  t.same(kinds({}, T0), [], 'idle peer: nothing')
  const cur = { current: { createdMs: T0, isInitiator: true } }
  t.same(kinds({ keypairs: cur }, T0 + REJECT_AFTER_TIME_MS), ['expire:current'], 'keys die at REJECT_AFTER_TIME')
  t.same(kinds({ keypairs: cur }, T0 + REJECT_AFTER_TIME_MS - 1), [])
  t.same(
    kinds({ handshakeStartedMs: T0, nextRetryMs: T0 + REKEY_TIMEOUT_MS }, T0 + REKEY_TIMEOUT_MS - 1),
    [],
    'no retry before REKEY_TIMEOUT',
  )
  t.same(kinds({ handshakeStartedMs: T0, nextRetryMs: T0 + REKEY_TIMEOUT_MS }, T0 + REKEY_TIMEOUT_MS), ['retry'])
  t.same(
    kinds({ handshakeStartedMs: T0, nextRetryMs: T0 + REKEY_ATTEMPT_TIME_MS }, T0 + REKEY_ATTEMPT_TIME_MS),
    ['give-up'],
    'give up after REKEY_ATTEMPT_TIME',
  )
  t.same(
    kinds({ keypairs: cur, lastRxData: T0 + 10, lastTxAny: T0 }, T0 + 10 + KEEPALIVE_TIMEOUT_MS),
    ['keepalive:passive'],
    'passive keepalive',
  )
  t.same(
    kinds({ keypairs: cur, lastRxData: T0 + 10, lastTxAny: T0 + 20 }, T0 + 10 + KEEPALIVE_TIMEOUT_MS),
    [],
    'no keepalive when we already sent',
  )
  t.same(kinds({ keypairs: cur, persistentKeepaliveS: 25, lastTxAny: T0, lastInitiationSentMs: T0 }, T0 + 25_000), ['keepalive:persistent'])
  t.same(
    kinds({ persistentKeepaliveS: 25, lastTxAny: T0, lastInitiationSentMs: T0 }, T0 + 25_000),
    ['initiate:persistent keepalive'],
    'persistent keepalive without a session handshakes',
  )
  const sess = { current: { createdMs: T0 - 20_000, isInitiator: false } }
  t.same(
    kinds({ keypairs: sess, firstUnanswered: T0 + 1, lastTxData: T0 + 15_000, lastRxAny: T0 }, T0 + 15_001),
    ['unresponsive'],
    'sent data, heard nothing for 15 s since the first of it',
  )
  t.same(
    kinds({ keypairs: sess, firstUnanswered: T0 + 45_000, lastTxData: T0 + 45_000, lastRxAny: T0 + 20_000 }, T0 + 45_000),
    [],
    'the first packet after an idle 25 s is not 15 s unanswered (WireGuard starts the timer at the send)',
  )
  const old = { current: { createdMs: T0, isInitiator: true } }
  const at = T0 + REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS
  t.same(kinds({ keypairs: old, lastRxData: at, lastTxAny: at }, at), ['rekey-on-receive'], 'initiator rekeys on receive at 165 s')
  t.same(kinds({ keypairs: old, lastRxData: at, lastTxAny: at, rekeyOnRxDone: true }, at), [], 'only once per keypair')
})

t.test('SPSC ring carries messages in order and refuses when full', async (t) => {
  const r = createRing(4)
  const p = new RingProducer(r)
  const c = new RingConsumer(r)
  const src = new Uint8Array([1, 2, 3, 4, 5])
  for (let i = 0; i < 4; i++) t.ok(p.push(MSG_HANDSHAKE, src, i, 1, 0xc6120001, 51820 + i, -1, i))
  t.notOk(p.push(MSG_HANDSHAKE, src, 0, 1, 0, 0, -1, 0), 'full ring refuses')
  const got = c.drain()
  t.same(
    got.map((m) => [m.payload[0], m.port, m.aux, m.ip]),
    [
      [1, 51820, 0, 0xc6120001],
      [2, 51821, 1, 0xc6120001],
      [3, 51822, 2, 0xc6120001],
      [4, 51823, 3, 0xc6120001],
    ],
  )
  t.ok(p.push(MSG_HANDSHAKE, src, 0, 5, 0, 0, -1, 0), 'space again after draining')
  t.equal(c.drain()[0].payload.length, 5)
})
