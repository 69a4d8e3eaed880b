/**
 * Enrolment keys in Enclave's form: five groups of five Crockford base32 characters joined by dashes
 * (XXXXX-XXXXX-XXXXX-XXXXX-XXXXX, 125 random bits). The first group names the key in lists and logs;
 * the hub stores only the SHA-256 of the whole key and compares in constant time.
 */
import crypto from 'node:crypto'
import { CROCKFORD_ALPHABET } from '../config/identity.js'
import { constantTimeEqual, randomBytes } from '../protocol/primitives.js'

export const KEY_FORM = 'five groups of five characters joined by dashes, XXXXX-XXXXX-XXXXX-XXXXX-XXXXX'

export function newEnrolmentKey(): { key: string; keyId: string; sha256: string } {
  const bytes = randomBytes(25)
  let s = ''
  for (let i = 0; i < 25; i++) s += CROCKFORD_ALPHABET[bytes[i] & 31]
  const key = s.match(/.{5}/g)?.join('-') ?? s
  return { key, keyId: key.slice(0, 5), sha256: sha256Hex(key) }
}

/** Upper-cases and maps Crockford's look-alikes (O->0, I/L->1); null when it is not a key. */
export function normaliseEnrolmentKey(s: string): string | null {
  const k = s.trim().toUpperCase().replace(/O/g, '0').replace(/[IL]/g, '1')
  if (!/^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){4}$/.test(k)) return null
  return k
}

export function sha256Hex(s: string): string {
  return crypto.createHash('sha256').update(s).digest('hex')
}

export function keyMatches(key: string, storedSha256: string): boolean {
  return constantTimeEqual(Buffer.from(sha256Hex(key), 'hex'), Buffer.from(storedSha256, 'hex'))
}
