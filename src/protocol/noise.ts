/**
 * The WireGuard handshake: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with WireGuard's identifier,
 * labels, TAI64N timestamps, mac1/mac2 and cookie replies (whitepaper §5.4).
 *
 * Pure functions over explicit state, run on the control thread; nothing here touches I/O.
 * Message layouts (little-endian indices):
 *   initiation  148 B: type(1) reserved(3) sender(4) ephemeral(32) static(48) timestamp(28) mac1(16) mac2(16)
 *   response     92 B: type(1) reserved(3) sender(4) receiver(4) ephemeral(32) empty(16) mac1(16) mac2(16)
 *   cookie reply 64 B: type(1) reserved(3) receiver(4) nonce(24) cookie(32)
 */
import {
  AEAD,
  AEAD_OPEN,
  DH,
  HASH,
  KDF,
  MAC,
  XAEAD_OPEN,
  compareBytes,
  enc,
  generateKeyPair,
  keyPairFromPrivate,
  randomBytes,
  tai64n,
} from './primitives.js'
import { HandshakeMacs } from './macs.js'
import {
  CONSTRUCTION,
  COOKIE_REFRESH_TIME_MS,
  COOKIE_REPLY_SIZE,
  IDENTIFIER,
  INITIATION_SIZE,
  LABEL_COOKIE,
  LABEL_MAC1,
  MSG_INITIATION,
  MSG_RESPONSE,
  RESPONSE_SIZE,
} from './constants.js'

const C0 = HASH(enc.encode(CONSTRUCTION))
const H0 = HASH(C0, enc.encode(IDENTIFIER))
const ZERO32 = new Uint8Array(32)
const EMPTY = new Uint8Array(0)

export interface LocalStatic {
  privateKey: Uint8Array
  publicKey: Uint8Array
  /** HASH(LABEL_MAC1 || our public key): peers' mac1 on messages to us. */
  mac1Key: Uint8Array
  /** HASH(LABEL_COOKIE || our public key): encrypts cookies we send. */
  cookieKey: Uint8Array
}

export function localStatic(privateKey: Uint8Array, publicKey: Uint8Array): LocalStatic {
  return { privateKey, publicKey, mac1Key: HASH(enc.encode(LABEL_MAC1), publicKey), cookieKey: HASH(enc.encode(LABEL_COOKIE), publicKey) }
}

export interface HandshakeState {
  role: 'initiator' | 'responder'
  chainKey: Uint8Array
  hash: Uint8Array
  ephemeralPrivate?: Uint8Array
  remoteEphemeral?: Uint8Array
  localIndex: number
  remoteIndex: number
  createdMs: number
}

export interface PeerCrypto {
  publicKey: Uint8Array
  presharedKey: Uint8Array
  /** DH(our static, their static), computed once. */
  staticStatic: Uint8Array
  mac1Key: Uint8Array
  cookieKey: Uint8Array
  /** Greatest TAI64N seen in an initiation from this peer (replay protection). */
  lastTimestamp: Uint8Array
  /** When we last accepted an initiation from this peer (flood protection). */
  lastInitiationMs: number
  /** The cookie the peer gave us, with the time we got it. */
  cookie?: { value: Uint8Array; receivedMs: number }
  /** mac1 of the last handshake message we sent this peer (the cookie reply's AD). */
  lastSentMac1?: Uint8Array
  handshake?: HandshakeState
}

export function peerCrypto(local: LocalStatic, publicKey: Uint8Array, presharedKey?: Uint8Array): PeerCrypto {
  return {
    publicKey,
    presharedKey: presharedKey ?? ZERO32,
    staticStatic: DH(local.privateKey, publicKey),
    mac1Key: HASH(enc.encode(LABEL_MAC1), publicKey),
    cookieKey: HASH(enc.encode(LABEL_COOKIE), publicKey),
    lastTimestamp: new Uint8Array(12),
    lastInitiationMs: -Infinity,
  }
}

export interface SessionKeys {
  sendKey: Uint8Array
  recvKey: Uint8Array
  localIndex: number
  remoteIndex: number
  isInitiator: boolean
}

/** Writes mac1 (and mac2 when we hold a fresh cookie) into a handshake message in place. */
export function writeMacs(msg: Buffer, peer: PeerCrypto, nowMs: number): void {
  const m1 = msg.length - 32
  const mac1 = MAC(peer.mac1Key, msg.subarray(0, m1))
  msg.set(mac1, m1)
  peer.lastSentMac1 = mac1
  if (peer.cookie && nowMs - peer.cookie.receivedMs < COOKIE_REFRESH_TIME_MS) {
    msg.set(MAC(peer.cookie.value, msg.subarray(0, m1 + 16)), m1 + 16)
  } else {
    msg.fill(0, m1 + 16)
  }
}

/** The checks and cookie replies the workers use too (src/protocol/macs.ts), made on first use. */
let shared: HandshakeMacs | undefined
const macs = (): HandshakeMacs => {
  shared ??= new HandshakeMacs()
  return shared
}

export function checkMac1(local: LocalStatic, msg: Uint8Array): boolean {
  return msg.length >= 32 && macs().mac1Valid(local.mac1Key, 0, msg, 0, msg.length)
}

/** `ephemeralPrivate` fixes the ephemeral key for known-answer tests; it is fresh and random otherwise. */
export function createInitiation(
  local: LocalStatic,
  peer: PeerCrypto,
  localIndex: number,
  nowMs: number,
  ephemeralPrivate?: Uint8Array,
): Buffer {
  const e = ephemeralPrivate ? keyPairFromPrivate(ephemeralPrivate) : generateKeyPair()
  let h = HASH(H0, peer.publicKey)
  let [c] = KDF(1, C0, e.publicKey)
  h = HASH(h, e.publicKey)
  let k: Uint8Array
  ;[c, k] = KDF(2, c, DH(e.privateKey, peer.publicKey))
  const encStatic = AEAD(k, 0, local.publicKey, h)
  h = HASH(h, encStatic)
  ;[c, k] = KDF(2, c, peer.staticStatic)
  const encTimestamp = AEAD(k, 0, tai64n(nowMs), h)
  h = HASH(h, encTimestamp)

  const msg = Buffer.alloc(INITIATION_SIZE)
  msg[0] = MSG_INITIATION
  msg.writeUInt32LE(localIndex >>> 0, 4)
  msg.set(e.publicKey, 8)
  msg.set(encStatic, 40)
  msg.set(encTimestamp, 88)
  writeMacs(msg, peer, nowMs)
  peer.handshake = { role: 'initiator', chainKey: c, hash: h, ephemeralPrivate: e.privateKey, localIndex, remoteIndex: 0, createdMs: nowMs }
  return msg
}

export interface ConsumedInitiation {
  peerPublicKey: Uint8Array
  timestamp: Uint8Array
  state: HandshakeState
}

/**
 * Decrypts an initiation (mac1 already checked). Returns the initiator's static key and the
 * state to respond with, or null if it does not authenticate. The caller finds the peer by key
 * and applies the timestamp and rate checks with acceptInitiation().
 */
export function consumeInitiation(
  local: LocalStatic,
  msg: Uint8Array,
  staticStaticFor: (pk: Uint8Array) => Uint8Array | undefined,
  nowMs: number,
): ConsumedInitiation | null {
  if (msg.length !== INITIATION_SIZE || msg[0] !== MSG_INITIATION) return null
  const view = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength)
  const remoteIndex = view.readUInt32LE(4)
  const ephemeral = msg.slice(8, 40)
  let h = HASH(H0, local.publicKey)
  let [c] = KDF(1, C0, ephemeral)
  h = HASH(h, ephemeral)
  let k: Uint8Array
  try {
    ;[c, k] = KDF(2, c, DH(local.privateKey, ephemeral))
  } catch {
    return null
  }
  const encStatic = msg.subarray(40, 88)
  const peerPk = AEAD_OPEN(k, 0, encStatic, h)
  if (!peerPk) return null
  h = HASH(h, encStatic)
  const ss = staticStaticFor(peerPk)
  if (!ss) return null
  ;[c, k] = KDF(2, c, ss)
  const encTimestamp = msg.subarray(88, 116)
  const timestamp = AEAD_OPEN(k, 0, encTimestamp, h)
  if (!timestamp) return null
  h = HASH(h, encTimestamp)
  return {
    peerPublicKey: peerPk,
    timestamp,
    state: { role: 'responder', chainKey: c, hash: h, remoteEphemeral: ephemeral, localIndex: 0, remoteIndex, createdMs: nowMs },
  }
}

/** Replay and flood checks for an authenticated initiation; updates the peer when accepted. */
export function acceptInitiation(
  peer: PeerCrypto,
  ci: ConsumedInitiation,
  nowMs: number,
  minIntervalMs: number,
): 'ok' | 'replay' | 'flood' {
  if (compareBytes(ci.timestamp, peer.lastTimestamp) <= 0) return 'replay'
  if (nowMs - peer.lastInitiationMs < minIntervalMs) return 'flood'
  peer.lastTimestamp = ci.timestamp
  peer.lastInitiationMs = nowMs
  peer.handshake = ci.state
  return 'ok'
}

/** `ephemeralPrivate` fixes the ephemeral key for known-answer tests; it is fresh and random otherwise. */
export function createResponse(
  peer: PeerCrypto,
  localIndex: number,
  nowMs: number,
  ephemeralPrivate?: Uint8Array,
): { msg: Buffer; keys: SessionKeys } {
  const st = peer.handshake
  if (st?.role !== 'responder' || !st.remoteEphemeral) throw new Error('no initiation to respond to')
  const e = ephemeralPrivate ? keyPairFromPrivate(ephemeralPrivate) : generateKeyPair()
  let c = st.chainKey
  let h = st.hash
  ;[c] = KDF(1, c, e.publicKey)
  h = HASH(h, e.publicKey)
  ;[c] = KDF(1, c, DH(e.privateKey, st.remoteEphemeral))
  ;[c] = KDF(1, c, DH(e.privateKey, peer.publicKey))
  const [c2, tau, k] = KDF(3, c, peer.presharedKey)
  c = c2
  h = HASH(h, tau)
  const empty = AEAD(k, 0, EMPTY, h)
  h = HASH(h, empty)

  const msg = Buffer.alloc(RESPONSE_SIZE)
  msg[0] = MSG_RESPONSE
  msg.writeUInt32LE(localIndex >>> 0, 4)
  msg.writeUInt32LE(st.remoteIndex >>> 0, 8)
  msg.set(e.publicKey, 12)
  msg.set(empty, 44)
  writeMacs(msg, peer, nowMs)
  const [t1, t2] = KDF(2, c, EMPTY)
  peer.handshake = undefined
  return { msg, keys: { sendKey: t2, recvKey: t1, localIndex, remoteIndex: st.remoteIndex, isInitiator: false } }
}

/** Consumes a response to our initiation (mac1 already checked). Null if it does not authenticate. */
export function consumeResponse(local: LocalStatic, peer: PeerCrypto, msg: Uint8Array): SessionKeys | null {
  const st = peer.handshake
  if (st?.role !== 'initiator' || !st.ephemeralPrivate || msg.length !== RESPONSE_SIZE) return null
  const view = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength)
  const remoteIndex = view.readUInt32LE(4)
  if (view.readUInt32LE(8) !== st.localIndex >>> 0) return null
  const ephemeral = msg.slice(12, 44)
  let c = st.chainKey
  let h = st.hash
  try {
    ;[c] = KDF(1, c, ephemeral)
    h = HASH(h, ephemeral)
    ;[c] = KDF(1, c, DH(st.ephemeralPrivate, ephemeral))
    ;[c] = KDF(1, c, DH(local.privateKey, ephemeral))
  } catch {
    return null
  }
  const [c2, tau, k] = KDF(3, c, peer.presharedKey)
  c = c2
  h = HASH(h, tau)
  if (!AEAD_OPEN(k, 0, msg.subarray(44, 60), h)) return null
  const [t1, t2] = KDF(2, c, EMPTY)
  peer.handshake = undefined
  return { sendKey: t1, recvKey: t2, localIndex: st.localIndex, remoteIndex, isInitiator: true }
}

// ---- cookies (responder side) ----

/**
 * The responder's cookie secret, replaced by a random one when it is COOKIE_REFRESH_TIME old at its next
 * use. The agent's lives in shared memory (SharedCookieSecret in src/ipc/layout.ts), so that the workers
 * answer with cookies under the same secret.
 */
export interface CookieChecker {
  secret: Uint8Array
  secretMs: number
}

export function cookieChecker(nowMs: number): CookieChecker {
  return { secret: randomBytes(32), secretMs: nowMs }
}

/** Replaces the secret once it is COOKIE_REFRESH_TIME old; returns it. */
export function refreshCookieSecret(cc: CookieChecker, nowMs: number): Uint8Array {
  if (nowMs - cc.secretMs >= COOKIE_REFRESH_TIME_MS) {
    cc.secret = randomBytes(32)
    cc.secretMs = nowMs
  }
  return cc.secret
}

export function checkMac2(cc: CookieChecker, msg: Uint8Array, srcIp: number, srcPort: number, nowMs: number): boolean {
  return msg.length >= 32 && macs().mac2Valid(refreshCookieSecret(cc, nowMs), 0, srcIp >>> 16, srcIp & 0xffff, srcPort, msg, 0, msg.length)
}

/**
 * A cookie reply to a handshake message from srcIp:srcPort (whose mac1 was valid).
 * `nonce` fixes the 24-byte nonce for known-answer tests; it is random otherwise.
 */
export function createCookieReply(
  local: LocalStatic,
  cc: CookieChecker,
  msg: Uint8Array,
  srcIp: number,
  srcPort: number,
  nowMs: number,
  nonce?: Uint8Array,
): Buffer {
  const secret = refreshCookieSecret(cc, nowMs)
  return Buffer.from(macs().cookieReply(local.cookieKey, 0, secret, 0, srcIp >>> 16, srcIp & 0xffff, srcPort, msg, 0, msg.length, nonce))
}

/** Initiator side: stores the cookie from a reply to our last message. */
export function consumeCookieReply(peer: PeerCrypto, msg: Uint8Array, nowMs: number): boolean {
  if (msg.length !== COOKIE_REPLY_SIZE || !peer.lastSentMac1) return false
  const cookie = XAEAD_OPEN(peer.cookieKey, msg.subarray(8, 32), msg.subarray(32, 64), peer.lastSentMac1)
  if (!cookie) return false
  peer.cookie = { value: cookie, receivedMs: nowMs }
  return true
}

export function readReceiverIndex(msg: Uint8Array, offset: number): number {
  return (msg[offset] | (msg[offset + 1] << 8) | (msg[offset + 2] << 16) | (msg[offset + 3] << 24)) >>> 0
}
