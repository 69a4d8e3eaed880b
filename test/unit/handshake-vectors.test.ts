/**
 * Known-answer tests for the WireGuard handshake: messages built from FIXED static and ephemeral
 * keys, preshared key, timestamp, sender indexes, cookie secret and cookie nonce, compared byte for
 * byte with vectors computed by an independent implementation.
 *
 * The vectors below were produced once by `python3 test/helpers/wg-handshake-vectors.py` and pasted
 * verbatim. That script is written from the WireGuard whitepaper, not from our TypeScript, and uses
 * other primitives than ours (hashlib BLAKE2s/HMAC; X25519 and ChaCha20-Poly1305 from
 * pyca/cryptography over OpenSSL; HChaCha20 from draft-irtf-cfrg-xchacha). Before printing it checks
 * itself against published vectors: cacophony's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s vector and the
 * XChaCha draft's HChaCha20 and AEAD vectors. Run it again to regenerate them.
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
import { publicKeyFromPrivate } from '../../src/control/keys.js'
import { KEY_BYTES_PER_SLOT, K_FIELDS, K_INDEX, K_REMOTE, K_SEND_CTR, K_STATE, KP_VALID } from '../../src/ipc/layout.js'
import { OPEN_OK, open, sealPacket } from '../../src/dataplane/transport.js'

const V = {
  initiatorStaticPrivate: '100e325155f353e2a6c83787bf2eacbd476a8ba394af9587d6fb6436dd02d668',
  initiatorStaticPublic: '892ef5e6c056d6746cfa8f7fcfdc3a0717306fdbadf80626938b22cb9a196142',
  responderStaticPrivate: 'e023afab9c18f42dc9d6f1454c27282cac9b9e73ca0bf2f24abfeed85996ac4e',
  responderStaticPublic: '58b3d4341f6a1a144546e15ea612a3707fba7ac9ab2581c52632adbc25b04d01',
  initiatorEphemeralPrivate: '2042d10bb09d0287da0ad50d7a77db330eff4cbd3774ae11f3858a0893cef279',
  initiatorEphemeralPublic: '08d2d04fb97022c66423b65b3e5a8a62b9fb6c073c48bb0e52d7738a8e886611',
  responderEphemeralPrivate: 'e8be048d0ceb69763b70c3e7f698d5cc4bbd0cc6ec355f3d153e184d300e276a',
  responderEphemeralPublic: 'e3adee1197987f41f96766af04c3f8ad0f5b0c41ae738a73c34c0dd19f6ad272',
  presharedKey: '98fcb6d5263179d0d35dc174a64db9ed7b79723c8b0ede7386d95c8554b46bb9',
  initiatorIndex: 0xd00dfeed,
  responderIndex: 0x1badb002,
  timeMs: 1_700_000_000_123,
  tai64n: '400000006553f10a07000000',
  initiation:
    '01000000edfe0dd008d2d04fb97022c66423b65b3e5a8a62b9fb6c073c48bb0e52d7738a8e8866117baf13ff5c1e4f9c9380fca5f73580c6779b45b57aa62788ead9588abcb0afdf9f1e6ba0f2937f22003d7746423729fd37c2af5733e0e410c7c71f6fad98f0435c882299d250c8d0646fc7022897de921000e60b1b84ee72ca2d2d1d00000000000000000000000000000000',
  initiationChainKey: 'bc49526f29191c7e3dbe16d82aa55722e67f5584725a4afbe7a080f87c5f1176',
  initiationHash: '52fce8f88639bd6be830c589ce5471059fe5ceff9eb38fed21247b716683cc76',
  cookieSecret: '111cc56330bde99bca501bce9e248e960756f910d76de911e63ca2f374327b9c',
  cookieSource: '198.18.0.1:51820',
  cookie: '682368e1fbe88c8c5a499d4dee0f0090',
  cookieNonce: '076c5b4df23afbb03bd875d4c59973c42eaf1a37684ff267',
  cookieReply:
    '03000000edfe0dd0076c5b4df23afbb03bd875d4c59973c42eaf1a37684ff2679ee06c857ddbebd7909b934afb4e8a9f88dcb42a27116cf535b3e8257070c763',
  initiationWithMac2:
    '01000000edfe0dd008d2d04fb97022c66423b65b3e5a8a62b9fb6c073c48bb0e52d7738a8e8866117baf13ff5c1e4f9c9380fca5f73580c6779b45b57aa62788ead9588abcb0afdf9f1e6ba0f2937f22003d7746423729fd37c2af5733e0e410c7c71f6fad98f0435c882299d250c8d0646fc7022897de921000e60b1b84ee72ca2d2d1dd11fca2f743d760ef6249b40e538bc22',
  response:
    '0200000002b0ad1bedfe0dd0e3adee1197987f41f96766af04c3f8ad0f5b0c41ae738a73c34c0dd19f6ad272833a0ea0ff2fe73c81f632554fc0a36218ae04dfb61433e8117a2ec6668f99f400000000000000000000000000000000',
  responseHash: 'de3d52a2d47b5bf9b01f23c4b12516e02291dda64db231168fd3a2feb8b7b7c0',
  initiatorSendKey: 'd0c6bab0e3387ccc68778ae43dc9443e5909f76837a22a5416a0141c3702aa49',
  initiatorRecvKey: '2715c96a93949221227d217c246f7eab5c2d4441725c40c7bb3eae71fd03866f',
  transportFromInitiator:
    '0400000002b0ad1b0000000000000000326f800530b458cdfda72cc903a54faf8c5a5a9747424e0a2484e582787df39ddf499d2e78fef356127aa30086b24425',
  keepaliveFromResponder: '04000000edfe0dd00000000000000000910ba036eda4a322059e98a841a47e81',
  transportFromInitiatorAtCounter:
    '0400000002b0ad1befcdab8900000000e4d65ccdb9cc3b5d0c1478bd253b6aaddc358d1956950e33053cedc5b427bb2588f960c65363c74964c353163f6d6f0d',
  responseNoPsk:
    '0200000002b0ad1bedfe0dd0e3adee1197987f41f96766af04c3f8ad0f5b0c41ae738a73c34c0dd19f6ad27297dbea544604d315c0746c20d786d926cd2e0911a8ba9a0be9f90cd4f633ea5600000000000000000000000000000000',
  responseHashNoPsk: 'ef11ec6eb8c32d577ddacaeb14ae629f7bebf7542f53abcb7ba7f134c44e36bc',
  initiatorSendKeyNoPsk: '0b509d3ac5b9f7d02b7eaca84d234e3d534fbccf307f063c83eb19e77c7ed7f7',
  initiatorRecvKeyNoPsk: '61ed01e2821c7c10c22473dd2604f1006c0e609a2149dfbbe702466b0a2f19cb',
  transportFromInitiatorNoPsk:
    '0400000002b0ad1b0000000000000000f730bcb927fb7c0fc983e946250fa9d8f2a1212eb8e3df1ca62d813629de7be9e722d8d7b1b0b489bd2b77f08d880d17',
  keepaliveFromResponderNoPsk: '04000000edfe0dd00000000000000000b1671ab464550e37f2e2451354a79702',
  transportFromInitiatorAtCounterNoPsk:
    '0400000002b0ad1befcdab8900000000df7b6f1577e841c6fff63645ec9ab54888930125f66370bffb07c0714ff0117e8505b648077b3927ce398a196f6d9980',
  transportPayload: '6b6e6f776e2d616e73776572207472616e73706f72742074657374',
}

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
