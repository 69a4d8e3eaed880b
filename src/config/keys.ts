/** X25519 key handling (sodium-native). Keys travel as base64 strings in profiles, as in wg(8). */
import sodium from 'sodium-native'
import { generateKeyPair } from '../protocol/primitives.js'

export const KEY_BYTES = 32

/** A fresh clamped X25519 private key, as `wg genkey` makes (the protocol's own key generation). */
export function generatePrivateKey(): Buffer {
  return generateKeyPair().privateKey
}

export function publicKeyFromPrivate(privateKey: Uint8Array): Buffer {
  const pk = Buffer.alloc(KEY_BYTES)
  sodium.crypto_scalarmult_base(pk, Buffer.from(privateKey.buffer, privateKey.byteOffset, privateKey.byteLength))
  return pk
}

/**
 * Decodes a base64 key; returns a reason string when it is not a 32-byte key.
 * The reason never quotes the input: it may be a private or preshared key, and reasons reach logs
 * and the control socket's replies.
 */
export function decodeKey(s: unknown): Buffer | string {
  if (typeof s !== 'string') return 'must be a base64 string of a 32-byte key'
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0)
    return `is not valid base64 (${s.length} characters; a key is 44 characters of A-Z a-z 0-9 + / ending in =)`
  const b = Buffer.from(s, 'base64')
  if (b.length !== KEY_BYTES) return `decodes to ${b.length} bytes; a key is ${KEY_BYTES} bytes (44 base64 characters)`
  return b
}
