/** Issue 9, control side: exhaustion, key retirement, confirmations, floods, cookies, replays. */
import t from 'tap'
import * as keypairsModule from '../../src/agent/peers/keypairs.js'
import { PeerTimers } from '../../src/agent/peers/peer-timers.js'
import {
  KEY_BYTES_PER_SLOT,
  KP_RECV_ONLY,
  KP_SLOTS,
  KP_VALID,
  K_FIELDS,
  K_SEND_CTR,
  K_STATE,
  createLayout,
  views,
} from '../../src/ipc/layout.js'
import { AEAD_TAG_SIZE, SEND_COUNTER_LIMIT, TRANSPORT_HEADER_SIZE } from '../../src/protocol/constants.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'
import { PEER_IP, PEER_PORT, controlHarness, initiator, settle } from '../helpers/control-harness.js'
import { SourceRateLimiter } from '../../src/agent/peers/rate-limit.js'
import { applyConfig, planReload } from '../../src/agent/peers/reload.js'
import { profileFixture } from '../helpers/fixtures.js'
import { MSG_CONFIRMED } from '../../src/ipc/ring.js'
import { checkMac2, consumeCookieReply, cookieChecker, createCookieReply } from '../../src/protocol/noise.js'

// A namespace import, so that this file also runs (and fails) against code without the bound.
const MAX_SLOTS_PER_PEER = (keypairsModule as Record<string, unknown>).MAX_SLOTS_PER_PEER as number

t.test('keypair slots: bounded per peer, exhaustion returns nothing instead of throwing', async (t) => {
  const h = controlHarness({ quarantineMs: 1000 })
  const got: number[] = []
  for (let i = 0; i < MAX_SLOTS_PER_PEER + 3; i++) {
    const kp = h.keypairs.alloc(1, 0)
    if (kp) {
      got.push(kp.slot)
      h.keypairs.retire(kp.slot, 0) // what a flood of accepted initiations does: retire the previous next
    }
  }
  t.equal(got.length, MAX_SLOTS_PER_PEER, `one peer holds at most ${MAX_SLOTS_PER_PEER} slots, live and quarantined`)
  t.ok(h.keypairs.alloc(2, 0), 'another peer still gets a slot')
  t.equal(h.keypairs.alloc(1, 999), undefined, 'still bounded during the quarantine')
  t.ok(h.keypairs.alloc(1, 1000), 'slots come back when the quarantine ends')
  let n = 0
  for (let p = 100; h.keypairs.alloc(p, 1000) || h.keypairs.alloc(p + 1000, 1000); p += 2) n++
  t.ok(n > 0 && h.keypairs.freeCount === 0, `the table fills (${KP_SLOTS - 1} slots)`)
  t.equal(h.keypairs.alloc(3, 1000), undefined, 'a full table gives nothing, and does not throw')
})

t.test('a handshake with no keypair slot free is deferred with one log line, never thrown', async (t) => {
  const h = controlHarness()
  const peer = h.addPeer(generateKeyPair().publicKey, 'alice')
  for (let p = 100; h.keypairs.freeCount > 0; p++) h.keypairs.alloc(p, h.clock.now)
  t.doesNotThrow(() => h.handshakes.initiate(peer, 'test'), 'initiate does not throw')
  t.equal(h.sent.length, 0, 'no initiation went out')
  t.equal(peer.session.pendingSlot, undefined)
  const timers = new PeerTimers({
    memory: h.memory,
    sessions: h.sessions,
    handshakes: h.handshakes,
    log: h.log,
    onHealthChange: () => undefined,
    resolveEndpoint: () => undefined,
  })
  peer.hs.startedMs = h.clock.now - 6000
  peer.hs.nextRetryMs = h.clock.now - 1 // the timer wants a retry
  peer.hs.lastSentMs = -Infinity
  for (let i = 0; i < 40; i++) {
    h.clock.now += 100
    t.doesNotThrow(() => timers.tick(peer, h.clock.now))
  }
  const warned = h.lines.filter((l) => /no keypair slot free/.test(l.msg))
  t.equal(warned.length, 1, 'one rate-limited line for 41 refusals within 5 s')
})

t.test('retiring a keypair leaves its keys in place until it leaves quarantine', async (t) => {
  const h = controlHarness({ quarantineMs: 1000 })
  const kp = h.keypairs.alloc(1, 0)!
  const keys = {
    sendKey: new Uint8Array(32).fill(0x11),
    recvKey: new Uint8Array(32).fill(0x22),
    localIndex: kp.index,
    remoteIndex: 9,
    isInitiator: false,
  }
  h.keypairs.install(kp.slot, kp.index, 1, keys, KP_VALID, 0)
  const recvKey = () => [...h.v.kpKeys.subarray(kp.slot * KEY_BYTES_PER_SLOT + 32, (kp.slot + 1) * KEY_BYTES_PER_SLOT)]
  // A worker checked K_STATE (valid) and is about to decrypt when control retires the keypair:
  h.keypairs.retire(kp.slot, 100)
  t.equal(h.keypairs.state(kp.slot), 0, 'retired: workers that check now see it gone')
  t.same(recvKey(), new Array(32).fill(0x22), 'the worker already past the check still decrypts with the real key, not zeros')
  t.same([...h.keypairs.sendKey(kp.slot)], new Array(32).fill(0x11))
  h.keypairs.sweep(1099)
  t.same(recvKey(), new Array(32).fill(0x22), 'kept during the quarantine')
  h.keypairs.sweep(1100)
  t.same(recvKey(), new Array(32).fill(0), 'zeroed when the slot leaves quarantine')
  t.same([...h.keypairs.sendKey(kp.slot)], new Array(32).fill(0))
})

t.test('a confirmation is seen from shared memory even when the ring dropped its message', async (t) => {
  const h = controlHarness()
  const client = initiator(h.me.publicKey)
  const peer = h.addPeer(client.keys.publicKey, 'client')
  h.handshakes.handle(client.initiation(77, h.clock.now), PEER_IP, PEER_PORT)
  await settle()
  t.equal(h.sent.length, 1, 'answered')
  const next = peer.session.next
  t.ok(next, 'a next keypair waits for the initiator')
  if (!next) return
  h.dispatcher.pollConfirmations(h.clock.now)
  t.equal(peer.session.next, next, 'nothing to confirm before the initiator speaks')
  // A worker decrypts the initiator's first data on `next` and promotes it; its ring was full, so no message.
  t.equal(Atomics.compareExchange(h.v.kpI32, next.slot * K_FIELDS + K_STATE, KP_RECV_ONLY, KP_VALID), KP_RECV_ONLY)
  h.dispatcher.pollConfirmations(h.clock.now)
  t.equal(peer.session.current?.slot, next.slot, 'control promoted next to current on its own')
  t.equal(peer.session.next, undefined)
  t.same(
    h.up.map((p) => p.cfg.description),
    ['client'],
    'session up once',
  )
  h.dispatcher.dispatch(MSG_CONFIRMED, Buffer.alloc(0), 0, 0, peer.slot, next.slot)
  t.equal(h.up.length, 1, 'the late ring message changes nothing')
})

t.test('under load, one address with a valid cookie gets 20/s (burst 5); a legitimate peer still handshakes', async (t) => {
  const h = controlHarness({ underLoadPerS: 0 }) // always under load
  const ATTACKER = 0x7f000063
  const attacker = initiator(h.me.publicKey) // a valid mac1 needs only our public key
  const withCookie = (c: ReturnType<typeof initiator>, ip: number, port: number) => {
    h.handshakes.handle(c.initiation(1, h.clock.now), ip, port)
    const reply = h.sent.pop()
    t.equal(reply?.buf[0], 3, 'cookie reply')
    t.ok(consumeCookieReply(c.crypto, reply!.buf, h.clock.now), 'cookie accepted')
  }
  withCookie(attacker, ATTACKER, 4000)
  for (let i = 0; i < 30; i++) h.handshakes.handle(attacker.initiation(100 + i, h.clock.now), ATTACKER, 4000)
  await settle()
  t.equal(h.tasks.consume, 5, '30 initiations with a valid mac2 from one address: 5 reach the pool')
  h.clock.now += 1000
  for (let i = 0; i < 30; i++) h.handshakes.handle(attacker.initiation(200 + i, h.clock.now), ATTACKER, 4000)
  await settle()
  t.equal(h.tasks.consume, 10, 'one second later: the burst again (refill is capped at 5)')
  const client = initiator(h.me.publicKey)
  const peer = h.addPeer(client.keys.publicKey, 'legit')
  withCookie(client, PEER_IP, PEER_PORT)
  h.handshakes.handle(client.initiation(300, h.clock.now), PEER_IP, PEER_PORT)
  await settle()
  t.ok(peer.session.next, 'the legitimate peer was answered during the flood')
})

t.test('the per-address limiter forgets sources: memory stays bounded', async (t) => {
  const lim = new SourceRateLimiter(20, 5, 100)
  for (let ip = 1; ip <= 10_000; ip++) lim.allow(ip, ip)
  t.ok(lim.size <= 100, `10,000 sources, ${lim.size} remembered`)
  for (let i = 0; i < 5; i++) t.ok(lim.allow(5, 20_000))
  t.notOk(lim.allow(5, 20_000), 'the sixth in the same instant is refused')
  t.ok(lim.allow(5, 20_050), 'a token refills after 50 ms')
})

t.test('a cookie reply to our handshake response is used: the answer to the retry carries mac2', async (t) => {
  const h = controlHarness()
  const AGENT_IP = 0x7f000001
  const AGENT_PORT = 51820
  const client = initiator(h.me.publicKey)
  const clientCookies = cookieChecker(h.clock.now) // the stock initiator is under load
  const peer = h.addPeer(client.keys.publicKey, 'busy-initiator')
  h.handshakes.handle(client.initiation(11, h.clock.now), PEER_IP, PEER_PORT)
  await settle()
  const first = h.sent.pop()!.buf
  t.equal(first[0], 2, 'a response')
  t.notOk(
    checkMac2(clientCookies, first, AGENT_IP, AGENT_PORT, h.clock.now),
    'without a cookie the response fails mac2 at a loaded initiator',
  )
  // The initiator answers our response with a cookie reply (receiver index: our response's sender index).
  h.handshakes.handle(createCookieReply(client.local, clientCookies, first, AGENT_IP, AGENT_PORT, h.clock.now), PEER_IP, PEER_PORT)
  h.clock.now += 1000
  h.handshakes.handle(client.initiation(12, h.clock.now), PEER_IP, PEER_PORT)
  await settle()
  const second = h.sent.pop()!.buf
  t.equal(second[0], 2, 'a response to the retry')
  t.ok(checkMac2(clientCookies, second, AGENT_IP, AGENT_PORT, h.clock.now), 'the response now carries a valid mac2')
  t.ok(peer.session.next, 'session pending confirmation')
})

t.test('a recorded initiation stays a replay after a PresharedKey reload and after remove + re-add', async (t) => {
  const h = controlHarness()
  const client = initiator(h.me.publicKey)
  const psk1 = Buffer.alloc(32, 1)
  let peer = h.addPeer(client.keys.publicKey, 'client', psk1)
  const recorded = client.initiation(21, h.clock.now) // an on-path attacker keeps a copy
  h.handshakes.handle(recorded, PEER_IP, PEER_PORT)
  await settle()
  t.equal(h.sent.length, 1, 'the original is answered')
  const cfg = { ...peer.cfg, presharedKey: Buffer.alloc(32, 2) }
  const plan = planReload([peer], { ...profileFixture(), peers: [cfg] })
  t.equal(plan.kept[0].presharedKeyChanged, true)
  applyConfig(plan.kept[0], h.local)
  h.clock.now += 60_000
  h.handshakes.handle(recorded, PEER_IP, PEER_PORT)
  await settle()
  t.equal(h.sent.length, 1, 'replayed after the PresharedKey change: not answered')
  t.match(h.lines.at(-1), { msg: 'handshake initiation refused', obj: { verdict: 'replay' } })
  h.peers.remove(peer, h.clock.now)
  h.clock.now += 60_000
  peer = h.addPeer(client.keys.publicKey, 'client again', psk1)
  h.handshakes.handle(recorded, PEER_IP, PEER_PORT)
  await settle()
  t.equal(h.sent.length, 1, 'replayed after the peer was removed and added again: not answered')
  h.handshakes.handle(client.initiation(22, h.clock.now), PEER_IP, PEER_PORT)
  await settle()
  t.equal(h.sent.length, 2, 'a fresh initiation is answered')
  t.ok(peer.session.next)
})

t.test("control's send path (keepalives, staged packets) stops at the send-counter limit and never wraps", async (t) => {
  const v = views(createLayout(8, 1))
  const kp = new keypairsModule.KeypairSlots(v, 1000)
  const a = kp.alloc(1, 0)!
  kp.install(
    a.slot,
    a.index,
    1,
    { sendKey: new Uint8Array(32).fill(3), recvKey: new Uint8Array(32).fill(4), localIndex: 0, remoteIndex: 9, isInitiator: true },
    KP_VALID,
    0,
  )
  const first = kp.seal(a.slot, new Uint8Array(0), 1420)
  t.ok(first instanceof Uint8Array, 'a keepalive is sealed on a fresh keypair')
  t.equal(first!.length, TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE, 'header + tag, no payload')
  Atomics.store(v.kpI32, a.slot * K_FIELDS + K_SEND_CTR, SEND_COUNTER_LIMIT - 1)
  t.ok(kp.seal(a.slot, new Uint8Array(20), 1420), 'the last counter below the limit is still used')
  t.equal(kp.seal(a.slot, new Uint8Array(20), 1420), undefined, 'at the limit nothing is sealed')
  t.equal(kp.takeSendCounter(a.slot), -1, 'the counter is exhausted')
  t.equal(Atomics.load(v.kpI32, a.slot * K_FIELDS + K_SEND_CTR) >>> 0, SEND_COUNTER_LIMIT, 'and stays at the limit: it never wraps')
})
