/**
 * Paths through NAT against an attacker (issue 20, review 20), in process. Each failed on 45919ce:
 * P1  A flood of 0xE5 'E' datagrams from spoofed sources (no key needed) spent the handshake gate's budget:
 *     "not ok - the peer's initiation reaches control during the flood (1 of 20)". Path datagrams now have
 *     a gate of their own (PATH_LIMITS).
 * P2  The replay set of answered probes held 64 nonces, fewer than one peer's own probing in the window:
 *     "not ok - a replayed probe is neither answered nor probed back" (2 datagrams). It now keeps every
 *     nonce of the window (up to MAX_ANSWERED) and refuses when full.
 * R1  The relay bound a side on the token alone, so a token holder that spoofs its source pointed its
 *     peer's traffic at a third party: "not ok - nothing of B's reaches an address that did not prove it
 *     can receive" (20 of 20). A new source is now bound only after echoing a cookie sent to it.
 * H1  A hub route inside a hand-configured peer's exit route was accepted and took its traffic (longest
 *     match): "not ok - no hub route inside (or equal to) the hand-configured 10.1.0.0/16". It is dropped.
 */
import dgram from 'node:dgram'
import t from 'tap'
import { sessionPair } from '../../bench/testbed.js'
import { mergeHubLayer } from '../../src/config/hub-layer.js'
import { identityFromPublicKey } from '../../src/config/identity.js'
import { validateProfile } from '../../src/config/profile.js'
import type { HubMap } from '../../src/hubproto/map.js'
import { PeerMemory } from '../../src/agent/peers/peer-memory.js'
import type { PeerRuntime } from '../../src/agent/peers/peer-table.js'
import { PathManager } from '../../src/agent/network/paths.js'
import { HS_WORKER_PER_S } from '../../src/dataplane/handshake-gate.js'
import { UdpRelay, parseRelayBound, relayBindDatagram } from '../../src/hub/relay.js'
import { HS_SECRETS, HSW_SECRET_SLOT, REASONS, createLayout, views } from '../../src/ipc/layout.js'
import { MSG_HANDSHAKE } from '../../src/ipc/ring.js'
import { createLogger } from '../../src/log/logger.js'
import { makeProbe, pairKey, parsePath } from '../../src/protocol/path-msg.js'
import { MAC, generateKeyPair } from '../../src/protocol/primitives.js'

const log = createLogger(0, 'logfmt', { out: { write: () => undefined } })

type Pair = ReturnType<typeof sessionPair>
let serial = 0

/**
 * One batch into the client's inbound path: `flood` datagrams (path probes, or initiations with a valid
 * mac1) from spoofed sources, with one initiation from the peer's own address in the middle. Returns
 * whether the peer's initiation reached control.
 */
function batch(p: Pair, flood: number, kind: 'path' | 'init', spoof: () => number): boolean {
  const pipe = p.client
  const n = flood + 1
  const mid = flood >> 1
  for (let i = 0; i < n; i++) {
    const o = i * pipe.slot
    const legit = i === mid
    if (!legit && kind === 'path') {
      pipe.iSlab.fill(0, o, o + 44)
      pipe.iSlab.set([0xe5, 0x45, 0x50, 0x51], o)
      new DataView(pipe.iSlab.buffer, pipe.iSlab.byteOffset + o).setUint32(20, serial++, true)
      pipe.iLens[i] = 44
    } else {
      pipe.iSlab.fill(0, o, o + 148)
      pipe.iSlab[o] = 1
      new DataView(pipe.iSlab.buffer, pipe.iSlab.byteOffset + o).setUint32(40, serial++, true)
      pipe.iSlab[o + 44] = legit ? 0x77 : 0
      pipe.iSlab.set(MAC(p.c.local.mac1Key, pipe.iSlab.subarray(o, o + 116)), o + 116)
      if (legit) {
        // The peer holds a cookie for its address (from an earlier cookie reply): a valid mac2.
        const slot = Atomics.load(p.c.v.hsWords, HSW_SECRET_SLOT)
        const secret = p.c.v.handshake.subarray(HS_SECRETS + 32 * slot, HS_SECRETS + 32 * slot + 32)
        const cookie = MAC(secret, Uint8Array.of(198, 18, 0, 2, 51820 >> 8, 51820 & 255))
        pipe.iSlab.set(MAC(cookie, pipe.iSlab.subarray(o, o + 132)), o + 132)
      }
      pipe.iLens[i] = 148
    }
    pipe.iAddrs[2 * i] = legit ? 0xc6120002 : spoof()
    pipe.iAddrs[2 * i + 1] = legit ? 51820 : 40000
  }
  pipe.inbound(n)
  return p.c.ring.drain().some((m) => m.kind === MSG_HANDSHAKE && m.ip === 0xc6120002 && m.payload[44] === 0x77)
}

function floodRun(kind: 'path' | 'init'): { passed: number; tries: number; limited: number } {
  // Default under-load rule (as deployed). 20,000 spoofed datagrams a second (7 Mbit/s of 44-byte probes),
  // five times the worker's gate rate, for 2 s; the peer retries its initiation every 100 ms.
  const p = sessionPair(256)
  let clock = 5_000_000
  let x = 0x0b000000
  let passed = 0
  let tries = 0
  for (let ms = 0; ms < 2000; ms += 10) {
    p.client.setClock(clock)
    const withPeer = ms % 100 === 0
    const flood = 200
    if (withPeer) {
      tries++
      if (batch(p, flood, kind, () => x++)) passed++
    } else batch(p, flood - 1, kind, () => x++)
    clock += 10
  }
  return { passed, tries, limited: p.c.v.reasons[REASONS.indexOf('handshake_limited')] }
}

t.test('P1 control: a spoofed flood of initiations leaves a peer’s initiation (with its cookie) passing', async (t) => {
  const r = floodRun('init')
  t.comment(`initiation flood: the peer's initiation reached control ${r.passed} of ${r.tries}; handshake_limited ${r.limited}`)
  t.ok(r.passed >= r.tries - 1, `under load the spoofed ones stop at mac2, the peer's passes (${r.passed} of ${r.tries})`)
})

t.test('P1: a spoofed flood of 0xE5 path datagrams does not starve a peer’s initiations', async (t) => {
  const r = floodRun('path')
  t.comment(`0xE5 flood at ${200 * 100}/s vs gate ${HS_WORKER_PER_S}/s: the peer's initiation reached control ${r.passed} of ${r.tries}`)
  t.ok(r.passed >= r.tries - 1, `the peer's initiation reaches control during the flood (${r.passed} of ${r.tries})`)
})

/** B's PathManager for its peer A; A's probes made with A's key directly (as a capture would hold them). */
function bSide() {
  let now = 1_000_000
  const ka = generateKeyPair()
  const kb = generateKeyPair()
  const l = createLayout(4, 1)
  const memory = new PeerMemory(views(l), 4, 1)
  const sent: Array<{ b: Buffer; ip: number; port: number }> = []
  const pm = new PathManager({
    privateKey: kb.privateKey,
    publicKey: kb.publicKey,
    memory,
    send: (b, ip, port) => sent.push({ b: Buffer.from(b), ip, port }),
    log,
    clock: () => now,
  })
  const aOnB = {
    slot: 0,
    cfg: { publicKey: ka.publicKey, identity: 'AAAAA', source: 'hub' },
    session: { staged: [] },
  } as unknown as PeerRuntime
  pm.punch(aOnB, ['198.51.100.11:40000'])
  const kA = pairKey(ka.privateKey, ka.publicKey, kb.publicKey)
  return { pm, sent, kA, advance: (ms: number) => (now += ms), now: () => now }
}

t.test('P2: a probe already answered is not answered again within the window', async (t) => {
  const w = bSide()
  const A_NAT = 0xc6336410 // 198.51.100.16
  const ATTACKER = 0xcb00710a // 203.0.113.10
  const captured = makeProbe(w.kA, w.now())
  w.pm.datagram(captured.datagram, A_NAT, 40000)
  t.ok(
    w.sent.some((s) => s.ip === A_NAT && parsePath(s.b)?.kind === 'answer'),
    'the first copy is answered',
  )
  // A's ordinary probing of B's 16 candidates at the 6 steps of the schedule (within 8 s): 96 probes.
  for (let step = 0; step < 6; step++) {
    for (let c = 0; c < 16; c++) w.pm.datagram(makeProbe(w.kA, w.now()).datagram, A_NAT, 40000 + c)
    w.advance(1000)
  }
  w.sent.length = 0
  w.pm.datagram(captured.datagram, ATTACKER, 9999)
  const toAttacker = w.sent.filter((s) => s.ip === ATTACKER)
  t.comment(
    `replayed ${(w.now() - 1_000_000) / 1000} s later from the attacker: B sent it ${toAttacker.length} datagrams (${toAttacker.map((s) => parsePath(s.b)?.kind).join(', ')})`,
  )
  t.equal(toAttacker.length, 0, 'a replayed probe is neither answered nor probed back')
})

t.test('R1: the relay forwards only to an address that asked for it (a bound source that can receive)', async (t) => {
  const relay = new UdpRelay({ log, host: '127.0.0.1', sweepMs: 0 })
  const sock = async () => {
    const s = dgram.createSocket('udp4')
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
    return s
  }
  const b = await sock()
  const victim = await sock()
  t.teardown(async () => {
    await relay.close()
    b.close()
    victim.close()
  })
  const got: Buffer[] = []
  victim.on('message', (m) => got.push(m))
  const bAcks: string[] = []
  b.on('message', (m) => {
    const k = parseRelayBound(m)
    if (k) bAcks.push(k)
  })
  const g = await relay.allocate('A|B', 'A', 'B')
  // A holds its token and spoofs the victim's address: modelled by sending A's bind from the victim's socket.
  victim.send(relayBindDatagram(g.A.token), g.A.port, '127.0.0.1')
  b.send(relayBindDatagram(g.B.token), g.B.port, '127.0.0.1')
  const end = Date.now() + 3000
  while ((!bAcks.length || !got.length) && Date.now() < end) await new Promise((r) => setTimeout(r, 5))
  const data = Buffer.alloc(1400, 0xab)
  data.set([4, 0, 0, 0])
  for (let i = 0; i < 20; i++) b.send(data, g.B.port, '127.0.0.1')
  const end2 = Date.now() + 3000
  while (got.filter((m) => m.length === 1400).length < 20 && Date.now() < end2) await new Promise((r) => setTimeout(r, 5))
  const forwarded = got.filter((m) => m.length === 1400).length
  t.comment(`the victim, which never sent a bind of its own, received ${forwarded} of 20 of B's 1400-byte datagrams`)
  t.equal(forwarded, 0, 'nothing of B’s reaches an address that did not prove it can receive')
})

t.test('H1: a hub route never takes part of a hand-configured peer’s exit route', async (t) => {
  const me = generateKeyPair()
  const lan = generateKeyPair()
  const hubExit = generateKeyPair()
  const lanId = identityFromPublicKey(lan.publicKey)
  const hubId = identityFromPublicKey(hubExit.publicKey)
  const local = validateProfile('/nonexistent/review20/Universe.profile', {
    PrivateKey: me.privateKey.toString('base64'),
    Peers: [{ PublicKey: lan.publicKey.toString('base64'), Endpoint: '192.0.2.1:51820', Description: 'office router' }],
    ExitNode: { AvailableRoutes: { [lanId]: ['10.1.0.0/16'] } },
    Hub: { Urls: ['http://192.0.2.10:8443'], PublicKey: generateKeyPair().publicKey.toString('base64') },
  })
  const map: HubMap = {
    Self: { Identity: identityFromPublicKey(me.publicKey), VirtualAddress: '100.64.1.1', Tags: [], State: 'approved', ProvidesRoutes: [] },
    Peers: [{ PublicKey: hubExit.publicKey.toString('base64'), Identity: hubId, VirtualAddress: '100.64.1.2', Tags: [] }],
    Policies: [],
    AvailableRoutes: { [hubId]: ['10.1.2.0/24', '10.1.0.0/16'] },
  }
  const r = mergeHubLayer(local, map)
  const taken = r.profile.exitNode.availableRoutes.get(hubId)?.map((c) => c.text) ?? []
  t.comment(
    `hub exit ${hubId} accepted without consent for: ${taken.join(', ') || 'nothing'}; notAccepted/skipped: ${[...r.notAccepted, ...r.skippedHub].length}`,
  )
  t.same(taken, [], 'no hub route inside (or equal to) the hand-configured 10.1.0.0/16')
})
