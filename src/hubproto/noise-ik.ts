/**
 * Noise_IK_25519_ChaChaPoly_BLAKE2s (noiseprotocol.org, revision 34), the hub link's handshake: the agent
 * (initiator) knows the hub's static key, pinned at enrolment; the hub learns the agent's static key,
 * which is the agent's WireGuard key, from the first message. One round trip, mutual authentication,
 * forward secrecy. Built from the same audited primitives as the WireGuard handshake (src/protocol/
 * primitives.ts); checked against the cacophony test vector for this protocol name.
 *
 *   -> e, es, s, ss   (+ payload)
 *   <- e, ee, se      (+ payload)
 */
import sodium from 'sodium-native'
import { AEAD, AEAD_OPEN, DH, HASH, KDF, concat, enc, generateKeyPair, keyPairFromPrivate } from '../protocol/primitives.js'

const PROTOCOL = enc.encode('Noise_IK_25519_ChaChaPoly_BLAKE2s')
export const HUB_PROLOGUE = enc.encode('enclave-hub/1')
const EMPTY = new Uint8Array(0)

interface KeyPair {
  privateKey: Uint8Array
  publicKey: Uint8Array
}

/** The SymmetricState of the Noise framework. */
class Symmetric {
  h: Uint8Array
  ck: Uint8Array
  k: Uint8Array | null = null
  n = 0

  constructor(prologue: Uint8Array) {
    // The name is longer than HASHLEN (32), so h = HASH(name).
    this.h = HASH(PROTOCOL)
    this.ck = this.h
    this.mixHash(prologue)
  }

  mixHash(data: Uint8Array): void {
    this.h = HASH(this.h, data)
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, k] = KDF(2, this.ck, ikm)
    this.ck = ck
    this.k = k
    this.n = 0
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const c = this.k ? AEAD(this.k, this.n++, plaintext, this.h) : plaintext
    this.mixHash(c)
    return c
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array | null {
    const p = this.k ? AEAD_OPEN(this.k, this.n++, ciphertext, this.h) : ciphertext
    if (!p) return null
    this.mixHash(ciphertext)
    return p
  }

  split(): [Uint8Array, Uint8Array] {
    const [k1, k2] = KDF(2, this.ck, EMPTY)
    return [k1, k2]
  }
}

/** A transport CipherState: a key and a counter; any failure ends the session (the caller closes it). */
export class CipherState {
  private n = 0
  constructor(private readonly k: Uint8Array) {}

  encrypt(plaintext: Uint8Array): Uint8Array {
    if (this.n >= 2 ** 53) throw new Error('noise: nonce exhausted')
    return AEAD(this.k, this.n++, plaintext, EMPTY)
  }

  /** null when the message fails authentication. */
  decrypt(ciphertext: Uint8Array): Uint8Array | null {
    const p = AEAD_OPEN(this.k, this.n, ciphertext, EMPTY)
    if (p) this.n++
    return p
  }
}

export interface Transport {
  send: CipherState
  recv: CipherState
  /** The handshake hash: binds everything said in the handshake (channel binding). */
  handshakeHash: Uint8Array
  /** The other side's static public key. */
  remoteStatic: Uint8Array
}

export interface Initiator {
  message1: Uint8Array
  /** Reads message 2; null when it fails authentication. */
  readMessage2(msg: Uint8Array): { payload: Uint8Array; transport: Transport } | null
}

/** Message 1 from the agent (`s`) to the hub (`rs`), carrying `payload` encrypted to the hub only. */
export function initiate(s: KeyPair, rs: Uint8Array, payload: Uint8Array, prologue = HUB_PROLOGUE, fixedEphemeral?: Uint8Array): Initiator {
  const st = new Symmetric(prologue)
  st.mixHash(rs)
  const e = fixedEphemeral ? keyPairFromPrivate(fixedEphemeral) : generateKeyPair()
  st.mixHash(e.publicKey)
  st.mixKey(DH(e.privateKey, rs))
  const encS = st.encryptAndHash(s.publicKey)
  st.mixKey(DH(s.privateKey, rs))
  const encP = st.encryptAndHash(payload)
  const message1 = concat(e.publicKey, encS, encP)
  return {
    message1,
    readMessage2(msg) {
      if (msg.length < 32 + 16) return null
      const re = msg.subarray(0, 32)
      st.mixHash(re)
      try {
        st.mixKey(DH(e.privateKey, re))
        st.mixKey(DH(s.privateKey, re))
      } catch {
        return null
      }
      const p = st.decryptAndHash(msg.subarray(32))
      if (!p) return null
      const [k1, k2] = st.split()
      sodium.sodium_memzero(Buffer.from(e.privateKey.buffer, e.privateKey.byteOffset, e.privateKey.byteLength))
      return { payload: p, transport: { send: new CipherState(k1), recv: new CipherState(k2), handshakeHash: st.h, remoteStatic: rs } }
    },
  }
}

export interface Responder {
  /** The initiator's static public key, authenticated by the `ss` step. */
  remoteStatic: Uint8Array
  payload: Uint8Array
  /** Message 2 carrying `payload`, and the transport keys. */
  respond(payload: Uint8Array, fixedEphemeral?: Uint8Array): { message2: Uint8Array; transport: Transport }
}

/** The hub's side of message 1; null when it fails authentication or is malformed. */
export function respond(s: KeyPair, msg: Uint8Array, prologue = HUB_PROLOGUE): Responder | null {
  if (msg.length < 32 + 48 + 16) return null
  const st = new Symmetric(prologue)
  st.mixHash(s.publicKey)
  const re = msg.subarray(0, 32)
  st.mixHash(re)
  try {
    st.mixKey(DH(s.privateKey, re))
  } catch {
    return null
  }
  const rs = st.decryptAndHash(msg.subarray(32, 32 + 48))
  if (!rs) return null
  try {
    st.mixKey(DH(s.privateKey, rs))
  } catch {
    return null
  }
  const payload = st.decryptAndHash(msg.subarray(80))
  if (!payload) return null
  const remoteStatic = Uint8Array.from(rs)
  return {
    remoteStatic,
    payload,
    respond(reply, fixedEphemeral) {
      const e = fixedEphemeral ? keyPairFromPrivate(fixedEphemeral) : generateKeyPair()
      st.mixHash(e.publicKey)
      st.mixKey(DH(e.privateKey, re))
      st.mixKey(DH(e.privateKey, remoteStatic))
      const encP = st.encryptAndHash(reply)
      const [k1, k2] = st.split()
      return {
        message2: concat(e.publicKey, encP),
        transport: { send: new CipherState(k2), recv: new CipherState(k1), handshakeHash: st.h, remoteStatic },
      }
    },
  }
}
