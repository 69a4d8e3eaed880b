/**
 * Words that control and the workers both write (the table in src/ipc/layout.ts), with the real
 * parts: control's KeypairSlots, PeerMemory, Sessions and RingDispatcher (test/helpers/control-harness.ts)
 * over one shared layout, and a real Pipeline on that layout as the worker. The remote peer seals its
 * transport packets with its own copy of the session keys, as a stock WireGuard peer would.
 */
import t from 'tap'
import sodium from 'sodium-native'
import { PEER_IP, PEER_PORT, controlHarness } from '../helpers/control-harness.js'
import { KeypairSlots } from '../../src/agent/peers/keypairs.js'
import { createConntrack } from '../../src/dataplane/conntrack.js'
import { HEADROOM, Pipeline } from '../../src/dataplane/pipeline.js'
import { compatPolicyTable } from '../../src/dataplane/policy.js'
import { buildRouteTable } from '../../src/dataplane/route-table.js'
import { sealPacket } from '../../src/dataplane/transport.js'
import { KP_VALID, P_CUR_KP, P_FIELDS, R, createLayout, views } from '../../src/ipc/layout.js'
import { LOCAL_SELF } from '../../src/ipc/messages.js'
import { MSG_STAGED, RingConsumer, createRing } from '../../src/ipc/ring.js'
import type { SessionKeys } from '../../src/protocol/noise.js'
import { REJECT_AFTER_TIME_MS } from '../../src/protocol/constants.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

const SELF = 0x64400001
const FROM = { ip: PEER_IP, port: PEER_PORT }

function key(): Uint8Array {
  const k = Buffer.alloc(32)
  sodium.randombytes_buf(k)
  return k
}

/** Control's parts, one peer, a worker's Pipeline on the same shared memory, and the remote peer's keys. */
function setup() {
  const h = controlHarness()
  const peer = h.addPeer(generateKeyPair().publicKey)
  const va = 0x64400002 + peer.slot
  const rt = buildRouteTable([{ addr: va, len: 32, value: peer.slot }])
  const at = buildRouteTable([{ addr: va, len: 32, value: 0 }])
  const lt = buildRouteTable([{ addr: SELF, len: 32, value: LOCAL_SELF }])
  const ring = createRing(256)
  const pipe = new Pipeline({
    id: 0,
    layout: h.layout,
    ring,
    conntrack: createConntrack(),
    mtu: 1420,
    batch: 4,
    epochMs: h.clock.now,
    tables: {
      gen: 1,
      routeChild: rt.child,
      routeVal: rt.val,
      allowChild: at.child,
      allowVal: at.val,
      groupStart: Int32Array.of(0, 1),
      groupPeers: Int32Array.of(peer.slot),
      localChild: lt.child,
      localVal: lt.val,
      exitNode: false,
      selfAddr: SELF | 0,
      policy: compatPolicyTable(),
      policyGen: 1,
      policyLabels: [],
      policyCounters: new SharedArrayBuffer(8),
    },
    post: () => undefined,
  })
  // The remote peer: its own keypair table, holding the mirror of each of our sessions.
  const rv = views(createLayout(4, 1))
  const remote = new KeypairSlots(rv)
  const mirrors = new Map<number, { slot: number; index: number }>()

  /** Session keys for one of our keypairs (index `localIndex`), mirrored on the remote peer. */
  const session = (localIndex: number, isInitiator: boolean, now: number): SessionKeys => {
    const r = remote.alloc(0, now)!
    const ours = { sendKey: key(), recvKey: key(), localIndex, remoteIndex: r.index, isInitiator }
    remote.install(
      r.slot,
      r.index,
      0,
      { sendKey: ours.recvKey, recvKey: ours.sendKey, localIndex: r.index, remoteIndex: localIndex, isInitiator: !isInitiator },
      KP_VALID,
      now,
    )
    mirrors.set(localIndex & 4095, r)
    return ours
  }
  /** Our current keypair, as when our initiation was answered. */
  const initiatorSession = (now: number) => {
    const kp = h.sessions.beginInitiation(peer, now)!
    h.sessions.completeAsInitiator(peer, session(kp.index, true, now), FROM, now)
    return kp.slot
  }
  /** Our `next` keypair (receive-only), as when we answered the peer's initiation. */
  const responderSession = (now: number) => {
    const kp = h.keypairs.alloc(peer.slot, now)!
    h.sessions.installAsResponder(peer, kp.slot, kp.index, session(kp.index, false, now), FROM, now)
    return kp.slot
  }
  /** The remote peer sends a keepalive on the mirror of our keypair `slot`; the worker receives it. */
  const receive = (slot: number) => {
    const d = sealPacket(rv.kpI32, rv.kpKeys, mirrors.get(slot)!.slot, new Uint8Array(0), 1420)
    if (typeof d === 'number') throw new Error(`sealPacket: ${d}`)
    pipe.iSlab.set(d, 0)
    pipe.iLens[0] = d.length
    pipe.iAddrs[0] = PEER_IP
    pipe.iAddrs[1] = PEER_PORT
    pipe.inbound(1)
  }
  const consumer = new RingConsumer(ring)
  /** The worker sends one IP packet to the peer: which of our keypairs sealed it (-1: handed to control). */
  const send = (): number => {
    const pkt = new Uint8Array(40)
    pkt[0] = 0x45
    pkt[3] = 40
    pkt[8] = 64
    pkt[9] = 17
    new DataView(pkt.buffer).setUint32(12, SELF)
    new DataView(pkt.buffer).setUint32(16, va)
    pipe.oSlab.set(pkt, HEADROOM)
    pipe.oLens[0] = pkt.length
    if (pipe.outbound(1) !== 1) return -1
    const receiver = new DataView(pipe.oSlab.buffer).getUint32(4, true)
    for (const [ours, m] of mirrors) if (m.index === receiver) return ours
    throw new Error(`sealed for an unknown receiver index ${receiver}`)
  }
  const staged = () => consumer.drain().filter((m) => m.kind === MSG_STAGED).length
  return { h, peer, pipe, initiatorSession, responderSession, receive, send, staged }
}

type Setup = ReturnType<typeof setup>
/** P_CUR_KP: the keypair workers send with. */
const sendWord = (s: Setup) => Atomics.load(s.h.v.peerI32, s.peer.slot * P_FIELDS + P_CUR_KP)
const stagedCount = (s: Setup) => s.h.v.reasons[R.staged]

t.test("a worker's promotion of `next` survives control expiring the old current keypair in the same tick", async (t) => {
  for (const order of ['worker promotes, then control expires', 'control expires, then worker promotes']) {
    const s = setup()
    const t0 = s.h.clock.now
    const current = s.initiatorSession(t0)
    const t1 = t0 + REJECT_AFTER_TIME_MS // control's timers expire `current` at this tick
    const next = s.responderSession(t1 - 1000)
    s.pipe.setClock(t1)
    t.equal(sendWord(s), current, `${order}: before, workers send with the current keypair`)
    if (order.startsWith('worker')) {
      s.receive(next)
      t.equal(sendWord(s), next, `${order}: the worker promoted next and published it`)
      s.h.sessions.expire(s.peer, 'current', t1)
    } else {
      s.h.sessions.expire(s.peer, 'current', t1)
      s.receive(next)
    }
    t.equal(s.h.keypairs.state(next), KP_VALID, `${order}: next is valid`)
    t.equal(sendWord(s), next, `${order}: the send word still holds the promoted keypair`)
    t.equal(s.send(), next, `${order}: the worker seals the next packet itself, on the promoted keypair`)
    t.equal(stagedCount(s), 0, `${order}: nothing was handed to control's slow path`)
    t.equal(s.staged(), 0, `${order}: no staged packet in the ring`)
    s.h.dispatcher.pollConfirmations(t1) // control's next tick
    t.equal(s.peer.session.current?.slot, next, `${order}: control confirmed it`)
    t.equal(sendWord(s), next, `${order}: control and shared memory agree`)
  }
})

t.test('confirm() publishes the keypair it makes current, whatever control wrote since the promotion', async (t) => {
  const s = setup()
  const t0 = s.h.clock.now
  s.initiatorSession(t0)
  const next = s.responderSession(t0 + 1000)
  s.pipe.setClock(t0 + 2000)
  s.receive(next)
  // In the same tick, before polling confirmations, control completes an initiation of its own.
  const mine = s.initiatorSession(t0 + 2000)
  t.equal(sendWord(s), mine, "control's own new session is published")
  s.h.dispatcher.pollConfirmations(t0 + 2000)
  t.equal(s.peer.session.current?.slot, next, 'control made the promoted keypair current')
  t.equal(sendWord(s), next, 'and workers send with the same one')
  t.equal(s.send(), next, 'the worker seals on it')
})

t.test("control retiring an unconfirmed promoted `next` puts the workers back on control's current", async (t) => {
  const s = setup()
  const t0 = s.h.clock.now
  const current = s.initiatorSession(t0)
  const next = s.responderSession(t0 + 1000)
  s.pipe.setClock(t0 + 2000)
  s.receive(next)
  t.equal(sendWord(s), next, 'the worker promoted next')
  // Before control polls, a new initiation from the peer replaces `next` (the old one is retired).
  const newer = s.responderSession(t0 + 2000)
  t.not(newer, next, 'a new next keypair')
  t.equal(s.h.keypairs.state(next), 0, 'the promoted keypair is retired')
  t.equal(sendWord(s), current, "the send word is back on control's current")
  t.equal(s.send(), current, 'the worker seals on it')
  t.equal(stagedCount(s), 0, "nothing goes through control's slow path")
})
