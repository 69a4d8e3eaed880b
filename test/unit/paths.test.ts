/**
 * The path state machine (issue 20), two PathManagers with an injected clock and a fake network between
 * them (unit): probe crypto and replay, relay first, upgrade to direct on the first answered probe,
 * fallback after DIRECT_HOLD_MS of silence, hold-down (at most MAX_SWITCHES in 30 s), and the workers'
 * rule that relay stragglers do not move the endpoint while the direct path delivers.
 */
import t from 'tap'
import { PeerMemory } from '../../src/agent/peers/peer-memory.js'
import type { PeerRuntime } from '../../src/agent/peers/peer-table.js'
import { KICK_SAME_ENDPOINT_MS, MAX_SWITCHES, PathManager } from '../../src/agent/network/paths.js'
import { parseIpv4 } from '../../src/common/ipv4.js'
import { DIRECT_HOLD_MS, PF_FIELDS, PF_LAST_RX_DIRECT, PF_LAST_TX_ANY, createLayout, packEndpoint, views } from '../../src/ipc/layout.js'
import { createLogger } from '../../src/log/logger.js'
import { makeAnswer, makeProbe, pairKey, parsePath, verifyPath } from '../../src/protocol/path-msg.js'
import { relayBindDatagram } from '../../src/protocol/relay-msg.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

const ip = (s: string) => parseIpv4(s) as number
const log = createLogger(0, 'logfmt', { out: { write: () => undefined } })

t.test('probe crypto: both sides derive one pair key; a probe verifies only from the other side, untampered', async (t) => {
  const a = generateKeyPair()
  const b = generateKeyPair()
  const ka = pairKey(a.privateKey, a.publicKey, b.publicKey)
  const kb = pairKey(b.privateKey, b.publicKey, a.publicKey)
  t.equal(ka.pair, kb.pair, 'the same pair id on both sides')
  t.not(ka.role, kb.role, 'opposite roles')
  const p = makeProbe(ka, 1_000)
  const m = parsePath(p.datagram)
  t.equal(m?.kind, 'probe')
  t.ok(verifyPath(kb, p.datagram), 'B verifies A’s probe')
  t.notOk(verifyPath(ka, p.datagram), 'A does not take its own probe reflected back')
  const c = generateKeyPair()
  const kc = pairKey(c.privateKey, c.publicKey, b.publicKey)
  t.notOk(verifyPath(kb, makeProbe({ ...kc, pair: kb.pair }, 1_000).datagram), 'a third key cannot make one under the pair id')
  for (let i = 0; i < 44; i++) {
    const bad = Buffer.from(p.datagram)
    bad[i] ^= 1
    if (verifyPath(kb, bad)) t.fail(`byte ${i} flipped still verifies`)
  }
  t.ok(verifyPath(ka, makeAnswer(kb, p.nonce)), 'A verifies B’s answer')
  t.equal(parsePath(relayBindDatagram('00'.repeat(16))), null, 'a bind request is not a path datagram an agent accepts')
})

/** A fake pair of agents: A and B, each with real shared memory for its one peer, and a network. */
function world(initiateA?: (peer: PeerRuntime, reason: string) => void) {
  let now = 1_000_000
  const clock = () => now
  const ka = generateKeyPair()
  const kb = generateKeyPair()
  const mk = () => {
    const l = createLayout(4, 1)
    return { v: views(l), memory: new PeerMemory(views(l), 4, 1) }
  }
  const A = mk()
  const B = mk()
  const peerOf = (pub: Buffer, identity: string): PeerRuntime =>
    ({ slot: 0, cfg: { publicKey: pub, identity, source: 'hub' }, session: { staged: [] } }) as unknown as PeerRuntime
  const bOnA = peerOf(kb.publicKey, 'BBBBB')
  const aOnB = peerOf(ka.publicKey, 'AAAAA')
  // Addresses: A behind NAT 198.51.100.11:40000 (host 10.1.0.2:51820), B behind 198.51.100.12:40000, relay 198.51.100.10.
  const net = { direct: true, relay: true, sent: [] as string[] }
  const A_PUB = { ip: ip('198.51.100.11'), port: 40000 }
  const B_PUB = { ip: ip('198.51.100.12'), port: 40000 }
  const RELAY_A = { ip: ip('198.51.100.10'), port: 3478 }
  const RELAY_B = { ip: ip('198.51.100.10'), port: 3479 }
  let pa: PathManager
  let pb: PathManager
  const deliver = (to: 'A' | 'B', b: Buffer, fromIp: number, fromPort: number) =>
    queue.push(() => (to === 'A' ? pa : pb).datagram(b, fromIp, fromPort))
  const queue: Array<() => void> = []
  const sender = (me: 'A' | 'B') => (b: Buffer, dip: number, dport: number) => {
    net.sent.push(`${me}->${dip}:${dport}`)
    const other = me === 'A' ? 'B' : 'A'
    const myPub = me === 'A' ? A_PUB : B_PUB
    const otherPub = me === 'A' ? B_PUB : A_PUB
    const myRelay = me === 'A' ? RELAY_A : RELAY_B
    if (dip === otherPub.ip && dport === otherPub.port && net.direct) deliver(other, b, myPub.ip, myPub.port)
    if (dip === myRelay.ip && dport === myRelay.port && net.relay && b[2] === 0x48 && b[3] === 0x42) {
      const answer = Buffer.from(b)
      answer[3] = 0x62
      deliver(me, answer, myRelay.ip, myRelay.port)
    }
  }
  pa = new PathManager({
    privateKey: ka.privateKey,
    publicKey: ka.publicKey,
    memory: A.memory,
    send: sender('A'),
    log,
    clock,
    initiate: initiateA,
  })
  pb = new PathManager({ privateKey: kb.privateKey, publicKey: kb.publicKey, memory: B.memory, send: sender('B'), log, clock })
  const run = () => {
    while (queue.length) queue.shift()?.()
  }
  const step = (ms: number) => {
    for (let i = 0; i < ms; i += 50) {
      now += 50
      pa.tick()
      pb.tick()
      run()
    }
  }
  const introduce = () => {
    pa.relay(bOnA, '198.51.100.10:3478', 'aa'.repeat(16))
    pb.relay(aOnB, '198.51.100.10:3479', 'bb'.repeat(16))
    run()
    pa.punch(bOnA, ['198.51.100.12:40000'])
    pb.punch(aOnB, ['198.51.100.11:40000'])
    run()
  }
  return {
    A,
    B,
    pa,
    pb,
    bOnA,
    aOnB,
    net,
    step,
    run,
    introduce,
    A_PUB,
    B_PUB,
    RELAY_A,
    RELAY_B,
    now: () => now,
    advance: (ms: number) => {
      now += ms
    },
  }
}

t.test('relay first, then direct on the first answered probe', async (t) => {
  const w = world()
  w.net.direct = false
  w.pa.relay(w.bOnA, '198.51.100.10:3478', 'aa'.repeat(16))
  w.run()
  t.equal(w.pa.pathOf(w.bOnA), 'relay-udp', 'the relay answered the bind: the path is the relay at once')
  t.equal(w.A.memory.endpointRaw(0), packEndpoint(w.RELAY_A.ip, w.RELAY_A.port), 'and the endpoint is the relay')
  w.net.direct = true
  w.pb.relay(w.aOnB, '198.51.100.10:3479', 'bb'.repeat(16))
  w.run()
  w.pa.punch(w.bOnA, ['198.51.100.12:40000'])
  w.pb.punch(w.aOnB, ['198.51.100.11:40000'])
  w.run()
  t.equal(w.pa.pathOf(w.bOnA), 'direct', 'A: direct after one probe round')
  t.equal(w.pb.pathOf(w.aOnB), 'direct', 'B: direct')
  t.equal(w.A.memory.endpointRaw(0), packEndpoint(w.B_PUB.ip, w.B_PUB.port), "A's endpoint is B's public mapping")
  t.equal(w.pa.switchCount, 1, 'one switch (relay to direct)')
})

t.test('a host candidate that answers is a local path', async (t) => {
  const w = world()
  w.pa.punch(w.bOnA, [], ['198.51.100.12:40000']) // in the fake network, B's address listed as a host address
  w.pb.punch(w.aOnB, ['198.51.100.11:40000'])
  w.run()
  t.equal(w.pa.pathOf(w.bOnA), 'local')
})

t.test('no direct path: the relay stays; probes go on the schedule, then every 25 s', async (t) => {
  const w = world()
  w.net.direct = false
  w.introduce()
  w.step(10_000)
  const sent1 = w.net.sent.filter((s) => s.startsWith('A->') && s.includes(`${w.B_PUB.ip}:`)).length
  t.equal(sent1, 6, 'six probes in the first 4 s (0, 0.25, 0.5, 1, 2, 4 s), none more by 10 s')
  w.step(20_000)
  t.equal(w.net.sent.filter((s) => s.startsWith('A->') && s.includes(`${w.B_PUB.ip}:`)).length, 7, 'the next one about 25 s later')
  t.equal(w.pa.pathOf(w.bOnA), 'relay-udp', 'still the relay')
})

t.test('a silent direct path falls back to the relay; switches are held down at MAX_SWITCHES per 30 s', async (t) => {
  const w = world()
  w.introduce()
  t.equal(w.pa.pathOf(w.bOnA), 'direct')
  const f = w.A.v.peerF64
  // A keeps sending; nothing comes back over the direct path (the NAT's mapping was flushed).
  w.net.direct = false
  for (let i = 0; i < 20; i++) {
    f[PF_LAST_TX_ANY] = w.now()
    w.step(1000)
  }
  t.equal(w.pa.pathOf(w.bOnA), 'relay-udp', `after ${DIRECT_HOLD_MS / 1000} s of silence while sending: the relay`)
  t.equal(w.A.memory.endpointRaw(0), packEndpoint(w.RELAY_A.ip, w.RELAY_A.port))
  // The direct path works again: the probes find it, but a third switch within 30 s is held down.
  w.net.direct = true
  w.step(1000)
  t.ok(w.pa.switchCount <= MAX_SWITCHES, `at most ${MAX_SWITCHES} switches in 30 s (${w.pa.switchCount})`)
  w.step(30_000)
  t.equal(w.pa.pathOf(w.bOnA), 'direct', 'after the window, direct again')
})

t.test('workers: a relay straggler does not move the endpoint while the direct path delivers (layout rule)', async (t) => {
  const w = world()
  w.introduce()
  const f = w.A.v.peerF64
  // What the worker's rule reads: the relay address and the last direct delivery.
  f[0 * PF_FIELDS + PF_LAST_RX_DIRECT] = w.now()
  w.A.memory.roamTo(0, w.RELAY_A, w.now() + 1000)
  t.equal(w.A.memory.endpointRaw(0), packEndpoint(w.B_PUB.ip, w.B_PUB.port), 'a handshake through the relay 1 s later: held')
  w.A.memory.roamTo(0, w.RELAY_A, w.now() + DIRECT_HOLD_MS + 1)
  t.equal(w.A.memory.endpointRaw(0), packEndpoint(w.RELAY_A.ip, w.RELAY_A.port), 'after 15 s without direct delivery: roams')
})

t.test('replays: a probe seen before is not answered again; an answer to no probe of ours is ignored', async (t) => {
  const w = world()
  const kb = (w.pb as unknown as { state: (p: PeerRuntime) => { key: ReturnType<typeof pairKey> } }).state(w.aOnB).key
  const ka = (w.pa as unknown as { state: (p: PeerRuntime) => { key: ReturnType<typeof pairKey> } }).state(w.bOnA).key
  const p = makeProbe(ka, w.now())
  const sent: string[] = []
  const pb = new PathManager({
    privateKey: Buffer.alloc(32),
    publicKey: Buffer.alloc(32),
    memory: w.B.memory,
    send: (_b, dip, dport) => sent.push(`${dip}:${dport}`),
    log,
    clock: w.now,
  })
  ;(pb as unknown as { byPeer: Map<unknown, unknown> }).byPeer.set(w.aOnB, {
    key: kb,
    identity: 'AAAAA',
    candidates: [],
    hostCandidates: new Set(),
    pending: new Map(),
    answered: new Map(),
    nextProbeMs: Number.POSITIVE_INFINITY,
    step: 0,
    switches: [],
    lastRequestMs: 0,
    lastProofMs: 0,
  })
  ;(pb as unknown as { byPair: Map<string, unknown> }).byPair.set(kb.pair, w.aOnB)
  pb.datagram(p.datagram, 1, 2)
  t.equal(sent.filter((s) => s === '1:2').length, 2, 'answered (and probed back) once')
  pb.datagram(p.datagram, 3, 4)
  t.equal(sent.filter((s) => s === '3:4').length, 0, 'the same probe again, from anywhere: not answered')
  const old = makeProbe(ka, w.now() - 31_000)
  pb.datagram(old.datagram, 5, 6)
  t.equal(sent.filter((s) => s === '5:6').length, 0, 'a probe older than 30 s: not answered')
  pb.datagram(makeAnswer(ka, makeProbe(kb, w.now()).nonce), 7, 8)
  t.equal(pb.pathOf(w.aOnB), undefined, 'an answer to a probe it never sent changes nothing')
})

t.test('a path that opens to where the last initiation went waits for its answer before initiating again', async (t) => {
  // A found B's mapping from the hub and sent an initiation there for waiting traffic; a new initiation at
  // once would lose the first's answer (our state replaced) and reach a busy B as a flood.
  const calls: Array<{ reason: string; at: number }> = []
  let w: ReturnType<typeof world>
  const initiate = (peer: PeerRuntime, reason: string) => {
    calls.push({ reason, at: w.now() })
    peer.hs.lastSentMs = w.now()
    peer.hs.lastSentTo = w.A.memory.endpointRaw(peer.slot)
  }
  w = world(initiate)
  const sentAt = w.now()
  Object.assign(w.bOnA, {
    session: { staged: [Buffer.alloc(1)] },
    hs: { lastSentMs: sentAt, lastSentTo: packEndpoint(w.B_PUB.ip, w.B_PUB.port) },
  })
  w.advance(60) // past INITIATION_GAP_MS
  w.pa.punch(w.bOnA, ['198.51.100.12:40000'])
  w.pb.punch(w.aOnB, ['198.51.100.11:40000'])
  w.run()
  t.equal(w.pa.pathOf(w.bOnA), 'direct', 'the path opened to the endpoint the initiation went to')
  t.same(calls, [], 'no second initiation while the first may still be answered')
  w.step(KICK_SAME_ENDPOINT_MS)
  t.equal(calls.length, 1, 'once its answer is overdue, one new initiation on the path')
  t.equal(calls[0]?.reason, 'path direct')
  t.ok(calls[0].at - sentAt >= KICK_SAME_ENDPOINT_MS, `not before ${KICK_SAME_ENDPOINT_MS} ms after the first (${calls[0].at - sentAt} ms)`)

  // The last initiation went elsewhere (a stale endpoint): the path that opens gets one at once.
  calls.length = 0
  const v = world(initiate)
  w = v
  Object.assign(v.bOnA, {
    session: { staged: [Buffer.alloc(1)] },
    hs: { lastSentMs: v.now(), lastSentTo: packEndpoint(ip('203.0.113.9'), 51820) },
  })
  v.advance(60)
  v.pa.punch(v.bOnA, ['198.51.100.12:40000'])
  v.pb.punch(v.aOnB, ['198.51.100.11:40000'])
  v.run()
  t.equal(calls.length, 1, 'an initiation went out on the new path at once')
})
