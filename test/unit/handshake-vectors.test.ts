/**
 * Known-answer tests for the WireGuard handshake: messages built from FIXED static and ephemeral
 * keys, preshared key, timestamp, sender indexes, cookie secret and cookie nonce, compared byte for
 * byte with vectors from an independent implementation (test/helpers/handshake-vectors.ts says how
 * they were made).
 */
import t from 'tap'
import {
  type LocalStatic,
  type PeerCrypto,
  acceptInitiation,
  checkMac1,
  checkMac2,
  consumeCookieReply,
  consumeInitiation,
  consumeResponse,
  createCookieReply,
  createInitiation,
  createResponse,
  localStatic,
  peerCrypto,
  writeMacs,
} from '../../src/protocol/noise.js'
import { keyPairFromPrivate, tai64n } from '../../src/protocol/primitives.js'
import { publicKeyFromPrivate } from '../../src/config/keys.js'
import { KEY_BYTES_PER_SLOT, K_FIELDS, K_INDEX, K_REMOTE, K_SEND_CTR, K_STATE, KP_VALID } from '../../src/ipc/layout.js'
import { OPEN_OK, open, sealPacket } from '../../src/dataplane/transport.js'
import { V } from '../helpers/handshake-vectors.js'

const hex = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('hex')
const bin = (h: string): Buffer => Buffer.from(h, 'hex')
const SRC_IP = 0xc6120001 // 198.18.0.1, V.cookieSource
const SRC_PORT = 51820

/** Both parties from the fixed private keys; the public keys come from our own X25519. */
function parties(psk: Buffer) {
  const I = localStatic(bin(V.initiatorStaticPrivate), publicKeyFromPrivate(bin(V.initiatorStaticPrivate)))
  const R = localStatic(bin(V.responderStaticPrivate), publicKeyFromPrivate(bin(V.responderStaticPrivate)))
  return { I, R, IR: peerCrypto(I, R.publicKey, psk), RI: peerCrypto(R, I.publicKey, psk) }
}

function consumeVectorInitiation(R: LocalStatic, RI: PeerCrypto) {
  return consumeInitiation(R, bin(V.initiation), (pk) => (hex(pk) === V.initiatorStaticPublic ? RI.staticStatic : undefined), V.timeMs)
}

t.test('fixed keys and timestamp: our public keys and TAI64N equal the independent ones', async (t) => {
  t.equal(hex(publicKeyFromPrivate(bin(V.initiatorStaticPrivate))), V.initiatorStaticPublic, 'initiator static public key')
  t.equal(hex(publicKeyFromPrivate(bin(V.responderStaticPrivate))), V.responderStaticPublic, 'responder static public key')
  t.equal(hex(keyPairFromPrivate(bin(V.initiatorEphemeralPrivate)).publicKey), V.initiatorEphemeralPublic, 'initiator ephemeral')
  t.equal(hex(keyPairFromPrivate(bin(V.responderEphemeralPrivate)).publicKey), V.responderEphemeralPublic, 'responder ephemeral')
  t.equal(hex(tai64n(V.timeMs)), V.tai64n, 'TAI64N of the fixed time, nanoseconds rounded down to 2^24')
})

t.test('initiation: our bytes (ephemeral, static, timestamp, mac1, zero mac2) equal the vector', async (t) => {
  const { I, IR } = parties(bin(V.presharedKey))
  const init = createInitiation(I, IR, V.initiatorIndex, V.timeMs, bin(V.initiatorEphemeralPrivate))
  t.equal(hex(init), V.initiation, 'initiation, all 148 bytes')
  t.equal(hex(IR.handshake!.chainKey), V.initiationChainKey, 'chaining key after the initiation')
  t.equal(hex(IR.handshake!.hash), V.initiationHash, 'hash after the initiation')
  t.equal(hex(IR.lastSentMac1!), V.initiation.slice(232, 264), 'the mac1 remembered for a cookie reply')
})

t.test("the responder reads the vector's initiation: mac1, static key, timestamp, state", async (t) => {
  const { R, RI } = parties(bin(V.presharedKey))
  t.ok(checkMac1(R, bin(V.initiation)), 'mac1 verifies under the responder key')
  const ci = consumeVectorInitiation(R, RI)
  t.ok(ci, 'the initiation authenticates')
  t.equal(hex(ci!.peerPublicKey), V.initiatorStaticPublic, "decrypted initiator's static key")
  t.equal(hex(ci!.timestamp), V.tai64n, 'decrypted timestamp')
  t.equal(ci!.state.remoteIndex, V.initiatorIndex, 'sender index')
  t.equal(hex(ci!.state.chainKey), V.initiationChainKey, 'chaining key')
  t.equal(hex(ci!.state.hash), V.initiationHash, 'hash')
})

t.test('cookie reply (XChaCha20-Poly1305, fixed nonce) and mac2 with its cookie equal the vector', async (t) => {
  const { I, R, IR } = parties(bin(V.presharedKey))
  const cc = { secret: bin(V.cookieSecret), secretMs: V.timeMs }
  const reply = createCookieReply(R, cc, bin(V.initiation), SRC_IP, SRC_PORT, V.timeMs, bin(V.cookieNonce))
  t.equal(hex(reply), V.cookieReply, 'cookie reply, all 64 bytes')

  const init = createInitiation(I, IR, V.initiatorIndex, V.timeMs, bin(V.initiatorEphemeralPrivate))
  t.ok(consumeCookieReply(IR, bin(V.cookieReply), V.timeMs), "the initiator opens the vector's cookie reply")
  t.equal(hex(IR.cookie!.value), V.cookie, 'and gets the cookie')
  writeMacs(init, IR, V.timeMs + 1000)
  t.equal(hex(init), V.initiationWithMac2, 'the initiation sent again with that cookie: mac1 and mac2')
  t.ok(checkMac2(cc, bin(V.initiationWithMac2), SRC_IP, SRC_PORT, V.timeMs), "the responder accepts the vector's mac2")
})

for (const [name, psk, s] of [
  ['with a preshared key', V.presharedKey, ''],
  ['without a preshared key', '00'.repeat(32), 'NoPsk'],
] as const) {
  const vec = (k: string): string => (V as Record<string, string | number>)[k + s] as string

  t.test(`response ${name}: our bytes and transport keys equal the vector`, async (t) => {
    const { R, RI } = parties(bin(psk))
    t.equal(acceptInitiation(RI, consumeVectorInitiation(R, RI)!, V.timeMs, 0), 'ok')
    const { msg, keys } = createResponse(RI, V.responderIndex, V.timeMs, bin(V.responderEphemeralPrivate))
    t.equal(hex(msg), vec('response'), 'response, all 92 bytes')
    t.equal(hex(keys.recvKey), vec('initiatorSendKey'), "responder's receive key")
    t.equal(hex(keys.sendKey), vec('initiatorRecvKey'), "responder's send key")
    t.equal(keys.remoteIndex, V.initiatorIndex)
    t.equal(keys.localIndex, V.responderIndex)
  })

  t.test(`the initiator reads the vector's response ${name}`, async (t) => {
    const { I, IR } = parties(bin(psk))
    createInitiation(I, IR, V.initiatorIndex, V.timeMs, bin(V.initiatorEphemeralPrivate))
    t.ok(checkMac1(I, bin(vec('response'))), 'mac1 verifies under the initiator key')
    const keys = consumeResponse(I, IR, bin(vec('response')))
    t.ok(keys, 'the response authenticates')
    t.equal(hex(keys!.sendKey), vec('initiatorSendKey'), "initiator's send key")
    t.equal(hex(keys!.recvKey), vec('initiatorRecvKey'), "initiator's receive key")
    t.equal(keys!.remoteIndex, V.responderIndex)
  })

  t.test(`transport messages ${name} (counter 0 each way, then 0x89abcdef) equal the vector`, async (t) => {
    // One keypair slot laid out as the workers share it.
    const slot = (localIndex: number, remoteIndex: number, sendKey: string, recvKey: string) => {
      const kpI32 = new Int32Array(K_FIELDS)
      const kpKeys = new Uint8Array(KEY_BYTES_PER_SLOT)
      kpI32[K_STATE] = KP_VALID
      kpI32[K_INDEX] = localIndex | 0
      kpI32[K_REMOTE] = remoteIndex | 0
      kpI32[K_SEND_CTR] = 0
      kpKeys.set(bin(sendKey), 0)
      kpKeys.set(bin(recvKey), 32)
      return { kpI32, kpKeys, recvKey: bin(recvKey), localIndex }
    }
    const ini = slot(V.initiatorIndex, V.responderIndex, vec('initiatorSendKey'), vec('initiatorRecvKey'))
    const res = slot(V.responderIndex, V.initiatorIndex, vec('initiatorRecvKey'), vec('initiatorSendKey'))
    const data = sealPacket(ini.kpI32, ini.kpKeys, 0, bin(V.transportPayload), 1420)
    t.equal(hex(data as Uint8Array), vec('transportFromInitiator'), 'initiator data, payload padded to 16')
    ini.kpI32[K_SEND_CTR] = 0x89abcdef | 0
    const later = sealPacket(ini.kpI32, ini.kpKeys, 0, bin(V.transportPayload), 1420)
    t.equal(hex(later as Uint8Array), vec('transportFromInitiatorAtCounter'), 'initiator data at counter 0x89abcdef')
    const keepalive = sealPacket(res.kpI32, res.kpKeys, 0, new Uint8Array(0), 1420)
    t.equal(hex(keepalive as Uint8Array), vec('keepaliveFromResponder'), 'responder keepalive')

    const opened = (to: typeof ini, msg: Buffer): string | number => {
      const body = msg.subarray(16, msg.length - 16)
      const nonce = new Uint8Array(12)
      nonce.set(msg.subarray(8, 16), 4)
      const r = open(to.kpI32, to.recvKey, 0, to.localIndex | 0, body, msg.subarray(msg.length - 16), nonce)
      return r === OPEN_OK ? hex(body) : r
    }
    const padded = V.transportPayload + '00'.repeat(32 - V.transportPayload.length / 2)
    t.equal(opened(res, bin(vec('transportFromInitiator'))), padded, "the responder opens the vector's data message")
    t.equal(opened(ini, bin(vec('keepaliveFromResponder'))), '', "the initiator opens the vector's keepalive")
    t.equal(opened(res, bin(vec('transportFromInitiatorAtCounter'))), padded, "and the vector's message at counter 0x89abcdef")
  })
}
