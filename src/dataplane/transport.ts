/**
 * The transport message (WireGuard type 4), sealed and opened in one place: the workers' Pipeline
 * and control's single-packet path (keepalives, packets staged during a handshake) both use it.
 *
 *   [0] type 4 | [1..3] zero | [4..7] receiver index (LE) | [8..15] counter (LE) | ciphertext | tag
 *
 * Keypair slots live in shared memory (src/ipc/layout.ts) and control may retire one at any time
 * (state 0, index 0, keys zeroed). So: the index and state are read once before the crypto, and
 * re-checked after it. A packet sealed or opened while its keypair was retired is dropped, never
 * sent or accepted (its keys may have been zero during the crypto).
 * The 32-bit send counter is taken by compare-and-swap: it stops at SEND_COUNTER_LIMIT, never wraps.
 */
import sodium from 'sodium-native'
import { KEY_BYTES_PER_SLOT, K_FIELDS, K_INDEX, K_REMOTE, K_SEND_CTR, K_STATE, KP_VALID } from '../ipc/layout.js'
import { AEAD_TAG_SIZE, KEY_SIZE, NONCE_SIZE, MSG_TRANSPORT, SEND_COUNTER_LIMIT, TRANSPORT_HEADER_SIZE } from '../protocol/constants.js'

/** seal() failures (a datagram length is >= TRANSPORT_MIN_SIZE). */
export const SEAL_NO_SESSION = -1
export const SEAL_COUNTER_LIMIT = -2
export const SEAL_RETIRED = -3
/** open() results. */
export const OPEN_OK = 0
export const OPEN_BAD_MAC = -1
export const OPEN_RETIRED = -2

/** Plaintext length after padding to 16 (never past the MTU, never shorter than the packet). */
export function paddedLength(len: number, mtu: number): number {
  const padded = (len + 15) & ~15
  return padded > mtu ? Math.max(len, mtu) : padded
}

/**
 * Takes the next send counter of the keypair at kb (= slot * K_FIELDS), or -1 when the keypair has
 * reached SEND_COUNTER_LIMIT. The result is the counter as a signed 32-bit number (-1 = 0xffffffff is
 * above the limit, so it is never a real counter).
 */
export function takeSendCounter(kpI32: Int32Array, kb: number): number {
  for (;;) {
    const c = Atomics.load(kpI32, kb + K_SEND_CTR)
    if (c >>> 0 >= SEND_COUNTER_LIMIT) return -1
    if (Atomics.compareExchange(kpI32, kb + K_SEND_CTR, c, (c + 1) | 0) === c) return c
  }
}

/**
 * Seals buf[h+16, h+16+padded) (already padded with zeros) in place for keypair slot kp, writes the
 * header at h and the tag after the ciphertext. `body` and `tag` are views of those two ranges;
 * `nonce` is 12 bytes of scratch whose first four bytes stay zero. Returns the datagram length or
 * SEAL_NO_SESSION / SEAL_COUNTER_LIMIT / SEAL_RETIRED.
 */
export function seal(
  kpI32: Int32Array,
  sendKey: Uint8Array,
  kp: number,
  buf: Uint8Array,
  h: number,
  padded: number,
  body: Uint8Array,
  tag: Uint8Array,
  nonce: Uint8Array,
): number {
  const kb = kp * K_FIELDS
  const index = Atomics.load(kpI32, kb + K_INDEX)
  if (Atomics.load(kpI32, kb + K_STATE) !== KP_VALID) return SEAL_NO_SESSION
  const ctr = takeSendCounter(kpI32, kb)
  if (ctr === -1) return SEAL_COUNTER_LIMIT
  const remote = kpI32[kb + K_REMOTE]
  buf[h] = MSG_TRANSPORT
  buf[h + 1] = 0
  buf[h + 2] = 0
  buf[h + 3] = 0
  buf[h + 4] = remote & 255
  buf[h + 5] = (remote >>> 8) & 255
  buf[h + 6] = (remote >>> 16) & 255
  buf[h + 7] = (remote >>> 24) & 255
  const n0 = ctr & 255
  const n1 = (ctr >>> 8) & 255
  const n2 = (ctr >>> 16) & 255
  const n3 = (ctr >>> 24) & 255
  buf[h + 8] = n0
  buf[h + 9] = n1
  buf[h + 10] = n2
  buf[h + 11] = n3
  buf[h + 12] = 0
  buf[h + 13] = 0
  buf[h + 14] = 0
  buf[h + 15] = 0
  nonce[4] = n0
  nonce[5] = n1
  nonce[6] = n2
  nonce[7] = n3
  sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(body, tag, body, null, null, nonce, sendKey)
  // Retired while we encrypted (the key may have been zero): never send it.
  if (Atomics.load(kpI32, kb + K_STATE) !== KP_VALID || Atomics.load(kpI32, kb + K_INDEX) !== index) return SEAL_RETIRED
  return TRANSPORT_HEADER_SIZE + padded + AEAD_TAG_SIZE
}

/**
 * Opens a transport message in place for the keypair at kb whose receiver index the caller has
 * matched (`index`, as read before the crypto). `nonce` holds the counter in bytes 4..11.
 */
export function open(
  kpI32: Int32Array,
  recvKey: Uint8Array,
  kb: number,
  index: number,
  body: Uint8Array,
  tag: Uint8Array,
  nonce: Uint8Array,
): number {
  try {
    sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached(body, null, body, tag, null, nonce, recvKey)
  } catch {
    return OPEN_BAD_MAC
  }
  // Retired while we decrypted: the key may have been zero, so the packet proves nothing.
  if (Atomics.load(kpI32, kb + K_STATE) === 0 || Atomics.load(kpI32, kb + K_INDEX) !== index) return OPEN_RETIRED
  return OPEN_OK
}

/**
 * Control's single-packet path: a whole transport datagram for `payload` under keypair slot kp, or
 * a SEAL_* code. Allocates (a few packets per handshake or keepalive, never per data packet).
 */
export function sealPacket(kpI32: Int32Array, kpKeys: Uint8Array, kp: number, payload: Uint8Array, mtu: number): Uint8Array | number {
  const padded = paddedLength(payload.length, mtu)
  const out = new Uint8Array(TRANSPORT_HEADER_SIZE + padded + AEAD_TAG_SIZE)
  out.set(payload, TRANSPORT_HEADER_SIZE)
  const body = out.subarray(TRANSPORT_HEADER_SIZE, TRANSPORT_HEADER_SIZE + padded)
  const tag = out.subarray(TRANSPORT_HEADER_SIZE + padded)
  const key = kpKeys.subarray(kp * KEY_BYTES_PER_SLOT, kp * KEY_BYTES_PER_SLOT + KEY_SIZE)
  const r = seal(kpI32, key, kp, out, 0, padded, body, tag, new Uint8Array(NONCE_SIZE))
  return r < 0 ? r : out
}
