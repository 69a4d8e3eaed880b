import t from 'tap'
import { buildRouteTable, lookupRoute } from '../../src/dataplane/route-table.js'
import { REPLAY_WINDOW, replayCheckAndSet, replayMaybeFresh } from '../../src/dataplane/replay.js'
import { REPLAY_WORDS } from '../../src/ipc/layout.js'
import {
  CT_ENTRIES,
  CT_FIELDS,
  CT_TCP_CLOSING_S,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  createConntrack,
  ctCountByPeer,
  ctReply,
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
  let ok = 0
  for (const c of order) if (replayCheckAndSet(b2, 0, l2, 0, c)) ok++
  for (const c of order) if (replayCheckAndSet(b2, 0, l2, 0, c)) ok += 1000
  t.ok(ok <= 3000 && ok >= 3000 - 952, `shuffled counters accepted once each (${ok})`)
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

t.test('conntrack stays bounded under a flood of new flows', async (t) => {
  const ct = new Int32Array(createConntrack())
  let evicted = 0
  const n = CT_ENTRIES * 3
  for (let i = 0; i < n; i++) if (ctTrack(ct, PROTO_UDP, 0x64400000 + (i & 0xffff), 0xac1a0000 + (i >>> 16), i, 1, 10, 180) === 2) evicted++
  t.equal(ct.length, CT_ENTRIES * CT_FIELDS, 'the table never grows')
  t.ok(evicted >= n - CT_ENTRIES, `old flows evicted (${evicted})`)
  const last = n - 1
  t.equal(ctReply(ct, PROTO_UDP, 0x64400000 + (last & 0xffff), 0xac1a0000 + (last >>> 16), last, 11, 180), 1, 'the newest flow is present')
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
  t.same(
    kinds({ keypairs: { current: { createdMs: T0 - 20_000, isInitiator: false } }, lastTxData: T0 + 15_000, lastRxAny: T0 }, T0 + 15_000),
    ['unresponsive'],
    'sent data, heard nothing for 15 s',
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
