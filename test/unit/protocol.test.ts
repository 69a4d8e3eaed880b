import t from 'tap'
import {
  acceptInitiation,
  checkMac1,
  checkMac2,
  consumeCookieReply,
  consumeInitiation,
  consumeResponse,
  cookieChecker,
  createCookieReply,
  createInitiation,
  createResponse,
  localStatic,
  peerCrypto,
  writeMacs,
} from '../../src/protocol/noise.js'
import { generateKeyPair, tai64n, compareBytes, AEAD, AEAD_OPEN } from '../../src/protocol/primitives.js'
import { COOKIE_REFRESH_TIME_MS } from '../../src/protocol/constants.js'

function parties() {
  const a = generateKeyPair()
  const b = generateKeyPair()
  const A = localStatic(a.privateKey, a.publicKey)
  const B = localStatic(b.privateKey, b.publicKey)
  return { A, B, AtoB: peerCrypto(A, b.publicKey), BtoA: peerCrypto(B, a.publicKey) }
}

function handshake(p: ReturnType<typeof parties>, now = 1_700_000_000_000) {
  const init = createInitiation(p.A, p.AtoB, 0x1234, now)
  t.ok(checkMac1(p.B, init), 'initiation carries a valid mac1 for the responder')
  const ci = consumeInitiation(
    p.B,
    init,
    (pk) => (Buffer.compare(Buffer.from(pk), Buffer.from(p.A.publicKey)) === 0 ? p.BtoA.staticStatic : undefined),
    now,
  )
  t.ok(ci, 'responder authenticates the initiation')
  t.equal(acceptInitiation(p.BtoA, ci!, now, 20), 'ok')
  const { msg: resp, keys: rk } = createResponse(p.BtoA, 0x5678, now)
  t.ok(checkMac1(p.A, resp))
  const ik = consumeResponse(p.A, p.AtoB, resp)
  return { init, resp, ik, rk }
}

t.test('a full handshake gives both sides matching transport keys', async (t) => {
  const p = parties()
  const { init, resp, ik, rk } = handshake(p)
  t.equal(init.length, 148)
  t.equal(resp.length, 92)
  t.ok(ik, 'initiator accepts the response')
  t.same(Buffer.from(ik!.sendKey), Buffer.from(rk.recvKey))
  t.same(Buffer.from(ik!.recvKey), Buffer.from(rk.sendKey))
  t.notSame(Buffer.from(ik!.sendKey), Buffer.from(ik!.recvKey))
  t.equal(ik!.remoteIndex, 0x5678)
  t.equal(rk.remoteIndex, 0x1234)
  const c = AEAD(ik!.sendKey, 7, Buffer.from('hello'), new Uint8Array(0))
  t.equal(AEAD_OPEN(rk.recvKey, 7, c, new Uint8Array(0))?.toString(), 'hello')
})

t.test('a preshared key must match on both sides', async (t) => {
  const a = generateKeyPair()
  const b = generateKeyPair()
  const A = localStatic(a.privateKey, a.publicKey)
  const B = localStatic(b.privateKey, b.publicKey)
  const psk = Buffer.alloc(32, 7)
  const AtoB = peerCrypto(A, b.publicKey, psk)
  const BtoA = peerCrypto(B, a.publicKey, Buffer.alloc(32, 8))
  const init = createInitiation(A, AtoB, 1, 1000)
  const ci = consumeInitiation(B, init, () => BtoA.staticStatic, 1000)!
  acceptInitiation(BtoA, ci, 1000, 0)
  const { msg } = createResponse(BtoA, 2, 1000)
  t.equal(consumeResponse(A, AtoB, msg), null, 'different PSKs do not produce a session')
})

t.test('tampered, truncated and oversized handshake messages are rejected', async (t) => {
  const p = parties()
  const init = createInitiation(p.A, p.AtoB, 1, 1000)
  const ss = () => p.BtoA.staticStatic
  for (const off of [8, 50, 100, 115]) {
    const bad = Buffer.from(init)
    bad[off] ^= 1
    t.equal(consumeInitiation(p.B, bad, ss, 1000), null, `flipped byte ${off}`)
  }
  const badMac = Buffer.from(init)
  badMac[120] ^= 1
  t.notOk(checkMac1(p.B, badMac), 'mac1 detects tampering')
  const badIndex = Buffer.from(init)
  badIndex[4] ^= 1
  t.notOk(checkMac1(p.B, badIndex), 'the sender index is covered by mac1')
  t.equal(consumeInitiation(p.B, init.subarray(0, 147), ss, 1000), null, 'truncated')
  t.equal(consumeInitiation(p.B, Buffer.concat([init, Buffer.alloc(1)]), ss, 1000), null, 'oversized')
  t.equal(consumeInitiation(p.B, Buffer.alloc(148), ss, 1000), null, 'all zeros')
  const unknown = consumeInitiation(p.B, init, () => undefined, 1000)
  t.equal(unknown, null, 'an unknown static key is refused')
  const { resp } = handshake(parties())
  t.equal(consumeResponse(p.A, p.AtoB, resp.subarray(0, 91)), null, 'truncated response')
})

t.test('an initiation cannot be replayed and floods are limited', async (t) => {
  const p = parties()
  const now = 1_700_000_000_000
  const init1 = createInitiation(p.A, p.AtoB, 1, now)
  const ss = () => p.BtoA.staticStatic
  const ci1 = consumeInitiation(p.B, init1, ss, now)!
  t.equal(acceptInitiation(p.BtoA, ci1, now, 20), 'ok')
  const again = consumeInitiation(p.B, init1, ss, now + 1000)!
  t.equal(acceptInitiation(p.BtoA, again, now + 1000, 20), 'replay', 'same timestamp refused')
  const init2 = createInitiation(p.A, p.AtoB, 2, now + 100)
  t.equal(acceptInitiation(p.BtoA, consumeInitiation(p.B, init2, ss, now + 5)!, now + 5, 20), 'flood', 'too soon after the last one')
  const init3 = createInitiation(p.A, p.AtoB, 3, now + 200)
  t.equal(acceptInitiation(p.BtoA, consumeInitiation(p.B, init3, ss, now + 200)!, now + 200, 20), 'ok')
  t.ok(compareBytes(tai64n(now + 1000), tai64n(now)) > 0, 'TAI64N grows with time')
  t.equal(tai64n(now).length, 12)
})

t.test('cookie flow: reply under load, mac2 on the retry, expiry after two minutes', async (t) => {
  const p = parties()
  const now = 1_700_000_000_000
  const cc = cookieChecker(now)
  const init = createInitiation(p.A, p.AtoB, 9, now)
  t.notOk(checkMac2(cc, init, 0xc6120001, 51820, now), 'no cookie yet: mac2 invalid')
  const reply = createCookieReply(p.B, cc, init, 0xc6120001, 51820, now)
  t.equal(reply.length, 64)
  t.equal(reply[0], 3)
  t.equal(reply.readUInt32LE(4), 9, "addressed to the initiation's sender index")
  t.ok(consumeCookieReply(p.AtoB, reply, now), 'initiator decrypts the cookie')
  const retry = createInitiation(p.A, p.AtoB, 10, now + 10)
  t.ok(checkMac2(cc, retry, 0xc6120001, 51820, now + 10), 'retry carries a valid mac2')
  t.notOk(checkMac2(cc, retry, 0xc6120002, 51820, now + 10), 'the cookie is bound to the source address')
  const late = Buffer.from(retry)
  writeMacs(late, p.AtoB, now + COOKIE_REFRESH_TIME_MS + 1)
  t.ok(
    late.subarray(132).every((x) => x === 0),
    'an expired cookie is not used',
  )
})

t.test('a tampered cookie reply is refused by the initiator that would accept the genuine one', async (t) => {
  const now = 1_700_000_000_000
  // Two initiators in the same state: both sent the same initiation (same mac1), so both could accept its reply.
  const p = parties()
  const twin = peerCrypto(p.A, p.B.publicKey)
  const cc = cookieChecker(now)
  const init = createInitiation(p.A, p.AtoB, 21, now)
  twin.lastSentMac1 = p.AtoB.lastSentMac1
  t.ok(p.AtoB.lastSentMac1 && p.AtoB.lastSentMac1.length === 16, 'the initiator remembers the mac1 it sent')
  const reply = createCookieReply(p.B, cc, init, 0xc6120001, 51820, now)
  for (const [where, at] of [
    ['nonce', 8],
    ['encrypted cookie', 40],
    ['tag', 60],
  ] as const) {
    const tampered = Buffer.from(reply)
    tampered[at] ^= 1
    t.notOk(consumeCookieReply(twin, tampered, now), `a cookie reply with one bit flipped in the ${where} is refused`)
    t.equal(twin.cookie, undefined, `no cookie is stored from the tampered ${where}`)
  }
  t.notOk(consumeCookieReply(twin, reply.subarray(0, 63), now), 'a truncated cookie reply is refused')
  t.ok(consumeCookieReply(twin, reply, now), 'the same initiator accepts the genuine reply')
  t.ok(twin.cookie, 'and stores its cookie')
  const stranger = peerCrypto(p.A, generateKeyPair().publicKey)
  stranger.lastSentMac1 = p.AtoB.lastSentMac1
  t.notOk(consumeCookieReply(stranger, reply, now), "a reply sealed under another responder's key is refused")
  createInitiation(p.A, p.AtoB, 22, now + 5)
  t.notOk(consumeCookieReply(p.AtoB, reply, now + 5), 'a reply to an earlier message (another mac1) is refused')
})
