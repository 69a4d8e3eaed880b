/**
 * Identity and virtual-address derivation from an X25519 public key.
 *
 * - Local identity: 5 characters of Crockford base32 (25 bits) of BLAKE2s("enclave identity" || key).
 * - Virtual address: inside 100.64.0.0/10 from BLAKE2s("enclave address" || key), never the
 *   network (100.64.0.0) or broadcast (100.127.255.255) address.
 * Both are pure and stable: the same key always gives the same identity and address.
 */
import { blake2s } from '@noble/hashes/blake2s'

export const CROCKFORD_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
export const IDENTITY_LENGTH = 5
export const OVERLAY_NETWORK = 0x64400000 // 100.64.0.0
export const OVERLAY_PREFIX = 10
export const OVERLAY_SIZE = 1 << (32 - OVERLAY_PREFIX)

const enc = new TextEncoder()

function tagged(tag: string, key: Uint8Array): Uint8Array {
  const t = enc.encode(tag)
  const buf = new Uint8Array(t.length + key.length)
  buf.set(t, 0)
  buf.set(key, t.length)
  return blake2s(buf)
}

export function identityFromPublicKey(publicKey: Uint8Array): string {
  const h = tagged('enclave identity', publicKey)
  // 25 bits, big-endian, 5 bits per character.
  const bits = ((h[0] << 17) | (h[1] << 9) | (h[2] << 1) | (h[3] >> 7)) >>> 0
  let out = ''
  for (let i = IDENTITY_LENGTH - 1; i >= 0; i--) out += CROCKFORD_ALPHABET[(bits >>> (i * 5)) & 31]
  return out
}

/** Normalises user input of an identity (Crockford: case-insensitive, O→0, I/L→1). */
export function normaliseIdentity(s: string): string {
  return s.toUpperCase().replace(/O/g, '0').replace(/[IL]/g, '1')
}

export function isIdentity(s: string): boolean {
  return s.length === IDENTITY_LENGTH && [...s].every((c) => CROCKFORD_ALPHABET.includes(c))
}

/** Returns the derived virtual address as a host-order uint32. */
export function virtualAddressFromPublicKey(publicKey: Uint8Array): number {
  const h = tagged('enclave address', publicKey)
  return overlayAddressFromWord(((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]) >>> 0)
}

/** Maps any 32-bit word to an overlay host address: 1 .. size-2, never the network or broadcast. */
export function overlayAddressFromWord(x: number): number {
  const host = ((x >>> 0) % (OVERLAY_SIZE - 2)) + 1
  return (OVERLAY_NETWORK + host) >>> 0
}

export function inOverlay(addr: number): boolean {
  return addr >>> (32 - OVERLAY_PREFIX) === OVERLAY_NETWORK >>> (32 - OVERLAY_PREFIX)
}
