/**
 * Path datagrams on the WireGuard port (issue 20, hub-spec §4.2): how two enclave agents that the hub
 * introduced find a direct path between them, and how the hub's UDP relay answers a bind. They are
 * enclave's own: the first byte 0xE5 is no WireGuard message type (a stock WireGuard peer, which is never
 * sent one, would drop it), the second is 'E'.
 *
 *   probe:        0xE5 'E' 'P' 'Q' ‖ pair (8) ‖ nonce (16) ‖ mac (16)          44 bytes
 *   answer:       0xE5 'E' 'P' 'A' ‖ pair (8) ‖ nonce (16, the probe's) ‖ mac  44 bytes
 *   relay bind:   0xE5 'E' 'H' 'B' ‖ token (16)   agent -> hub relay port       20 bytes
 *   challenge:    0xE5 'E' 'H' 'c' ‖ token ‖ cookie (16)   relay -> a new source  36 bytes
 *   confirm:      0xE5 'E' 'H' 'C' ‖ token ‖ cookie (16)   the source -> relay    36 bytes
 *   bind answer:  0xE5 'E' 'H' 'b' ‖ token (16)   hub relay port -> agent       20 bytes
 * (the relay binds a side to a source only once it echoed the cookie sent to it: src/hub/relay.ts)
 *
 * Keys, from WireGuard's own primitives (no new construction): the pair key is
 * KDF1(HASH("enclave path probe v1"), DH(our static private, the peer's static public)), the same on both
 * sides and known to no one else. `pair` = MAC(pair key, "pair")[0, 8): the receiver finds the peer by it
 * without a key or an identity on the wire (an observer sees a constant per pair, nothing it can link to a
 * system). `mac` = MAC(pair key, role ‖ everything before it), MAC being WireGuard's keyed BLAKE2s-128 and
 * role the sender's side (0 for the lower public key): a probe reflected back to its sender does not verify.
 * The nonce is the sender's clock in milliseconds (8 bytes, big-endian) and 8 random bytes: a probe more
 * than PROBE_WINDOW_MS away from the receiver's clock is refused, and one seen already is refused; an
 * answer is believed only for a nonce its receiver sent within PROBE_WINDOW_MS.
 */
import { DH, HASH, KDF, MAC, compareBytes, constantTimeEqual, enc, randomBytes } from './primitives.js'
import { RELAY_BIND_SIZE, parseRelayBound, parseRelayChallenge } from './relay-msg.js'

export const PATH_MAGIC = 0xe5
export const PATH_E = 0x45
export const PROBE_SIZE = 44
/** Bounds the workers pass to control (probes, and the relay's answers of src/protocol/relay-msg.ts, fit). */
export const PATH_MIN = RELAY_BIND_SIZE
export const PATH_MAX = PROBE_SIZE
export const PROBE_WINDOW_MS = 30_000

const Q = 0x51 // 'Q'
const A = 0x41 // 'A'
const LABEL = HASH(enc.encode('enclave path probe v1'))

export interface PairKey {
  key: Uint8Array
  /** 8 bytes, hex: how a probe names its pair. */
  pair: string
  /** This side's role (0: our public key sorts lower). */
  role: number
}

/** The pair key between our static key and a peer's public key. */
export function pairKey(ourPrivate: Uint8Array, ourPublic: Uint8Array, peerPublic: Uint8Array): PairKey {
  const [key] = KDF(1, LABEL, DH(ourPrivate, peerPublic))
  const pair = Buffer.from(MAC(key, enc.encode('pair')).subarray(0, 8)).toString('hex')
  return { key, pair, role: compareBytes(ourPublic, peerPublic) < 0 ? 0 : 1 }
}

function sealed(k: PairKey, kind: number, nonce: Uint8Array, role: number): Buffer {
  const b = Buffer.alloc(PROBE_SIZE)
  b[0] = PATH_MAGIC
  b[1] = PATH_E
  b[2] = 0x50 // 'P'
  b[3] = kind
  Buffer.from(k.pair, 'hex').copy(b, 4)
  b.set(nonce, 12)
  b.set(MAC(k.key, Buffer.concat([Buffer.of(role), b.subarray(0, 28)])), 28)
  return b
}

/** A new probe for the pair, and its nonce (hex) to match the answer with. */
export function makeProbe(k: PairKey, nowMs: number): { datagram: Buffer; nonce: string } {
  const nonce = Buffer.alloc(16)
  nonce.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(nowMs))), 0)
  randomBytes(8).copy(nonce, 8)
  return { datagram: sealed(k, Q, nonce, k.role), nonce: nonce.toString('hex') }
}

/** The answer to a verified probe (same nonce). */
export function makeAnswer(k: PairKey, nonce: string): Buffer {
  return sealed(k, A, Buffer.from(nonce, 'hex'), k.role)
}

export type PathDatagram =
  | { kind: 'probe' | 'answer'; pair: string; nonce: string; sentMs: number; b: Buffer }
  | { kind: 'bind'; token: string }
  | { kind: 'challenge'; token: string; cookie: Buffer }
  | null

/** What a path datagram is (not yet verified), or null for anything else. */
export function parsePath(b: Uint8Array): PathDatagram {
  if (b[0] !== PATH_MAGIC || b[1] !== PATH_E) return null
  const buf = Buffer.from(b.buffer, b.byteOffset, b.length)
  if (b.length === PROBE_SIZE && b[2] === 0x50 && (b[3] === Q || b[3] === A))
    return {
      kind: b[3] === Q ? 'probe' : 'answer',
      pair: buf.subarray(4, 12).toString('hex'),
      nonce: buf.subarray(12, 28).toString('hex'),
      sentMs: Number(buf.readBigUInt64BE(12)),
      b: buf,
    }
  const token = parseRelayBound(b)
  if (token) return { kind: 'bind', token }
  const c = parseRelayChallenge(b)
  return c ? { kind: 'challenge', ...c } : null
}

/** Whether a probe or answer was made by the other side of pair `k` (its mac, with the peer's role). */
export function verifyPath(k: PairKey, b: Buffer): boolean {
  if (b.length !== PROBE_SIZE) return false
  const want = MAC(k.key, Buffer.concat([Buffer.of(1 - k.role), b.subarray(0, 28)]))
  return constantTimeEqual(want, b.subarray(28, 44))
}
