/**
 * The primitives of the WireGuard construction, from audited libraries only:
 * BLAKE2s, keyed BLAKE2s and HMAC-BLAKE2s from @noble/hashes; X25519 and the AEADs from sodium-native.
 */
import { blake2s } from '@noble/hashes/blake2s'
import { hmac } from '@noble/hashes/hmac'
import sodium from 'sodium-native'

export const enc = new TextEncoder()

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

export const HASH = (...parts: Uint8Array[]): Uint8Array => blake2s(concat(...parts))
export const MAC = (key: Uint8Array, data: Uint8Array): Uint8Array => blake2s(data, { key, dkLen: 16 })
export const HMAC = (key: Uint8Array, data: Uint8Array): Uint8Array => hmac(blake2s, key, data)

/** HKDF as in the whitepaper: returns n 32-byte outputs. */
export function KDF(n: 1 | 2 | 3, key: Uint8Array, input: Uint8Array): Uint8Array[] {
  const t0 = HMAC(key, input)
  const out: Uint8Array[] = []
  let prev: Uint8Array = new Uint8Array(0)
  for (let i = 1; i <= n; i++) {
    prev = HMAC(t0, concat(prev, Uint8Array.of(i)))
    out.push(prev)
  }
  return out
}

export function DH(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  const out = Buffer.alloc(32)
  sodium.crypto_scalarmult(out, b(privateKey), b(publicKey))
  if (sodium.sodium_is_zero(out)) throw new Error('DH produced the all-zero point')
  return out
}

export function generateKeyPair(): { privateKey: Buffer; publicKey: Buffer } {
  const privateKey = Buffer.alloc(32)
  sodium.randombytes_buf(privateKey)
  privateKey[0] &= 248
  privateKey[31] = (privateKey[31] & 127) | 64
  const publicKey = Buffer.alloc(32)
  sodium.crypto_scalarmult_base(publicKey, privateKey)
  return { privateKey, publicKey }
}

/** The key pair of a given private key (fixed keys in known-answer tests). */
export function keyPairFromPrivate(privateKey: Uint8Array): { privateKey: Buffer; publicKey: Buffer } {
  const publicKey = Buffer.alloc(32)
  sodium.crypto_scalarmult_base(publicKey, b(privateKey))
  return { privateKey: Buffer.from(privateKey), publicKey }
}

function counterNonce(counter: number): Buffer {
  const n = Buffer.alloc(12)
  n.writeUInt32LE(counter >>> 0, 4)
  n.writeUInt32LE(Math.floor(counter / 2 ** 32), 8)
  return n
}

export function AEAD(key: Uint8Array, counter: number, plaintext: Uint8Array, ad: Uint8Array): Buffer {
  const c = Buffer.alloc(plaintext.length + 16)
  sodium.crypto_aead_chacha20poly1305_ietf_encrypt(c, b(plaintext), b(ad), null, counterNonce(counter), b(key))
  return c
}

/** Returns null when authentication fails. */
export function AEAD_OPEN(key: Uint8Array, counter: number, ciphertext: Uint8Array, ad: Uint8Array): Buffer | null {
  if (ciphertext.length < 16) return null
  const m = Buffer.alloc(ciphertext.length - 16)
  try {
    sodium.crypto_aead_chacha20poly1305_ietf_decrypt(m, null, b(ciphertext), b(ad), counterNonce(counter), b(key))
  } catch {
    return null
  }
  return m
}

export function XAEAD(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Buffer {
  const c = Buffer.alloc(plaintext.length + 16)
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(c, b(plaintext), b(ad), null, b(nonce), b(key))
  return c
}

export function XAEAD_OPEN(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Buffer | null {
  if (ciphertext.length < 16) return null
  const m = Buffer.alloc(ciphertext.length - 16)
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(m, null, b(ciphertext), b(ad), b(nonce), b(key))
  } catch {
    return null
  }
  return m
}

export function randomBytes(n: number): Buffer {
  const out = Buffer.alloc(n)
  sodium.randombytes_buf(out)
  return out
}

export function constantTimeEqual(a: Uint8Array, c: Uint8Array): boolean {
  return a.length === c.length && sodium.sodium_memcmp(b(a), b(c))
}

function b(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

/**
 * TAI64N of now, with the nanoseconds rounded down to ~16 ms as wireguard-go does,
 * so the timestamp does not leak fine-grained clock information.
 */
export function tai64n(nowMs: number): Buffer {
  const out = Buffer.alloc(12)
  const secs = Math.floor(nowMs / 1000)
  const nanos = Math.floor((nowMs % 1000) * 1e6) & ~0xffffff
  out.writeUInt32BE(0x40000000, 0)
  out.writeUInt32BE(secs + 10, 4) // 2^62 + 10 + unix seconds (valid until 2106)
  out.writeUInt32BE(nanos >>> 0, 8)
  return out
}

export function compareBytes(a: Uint8Array, c: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, c.length); i++) if (a[i] !== c[i]) return a[i] - c[i]
  return a.length - c.length
}
