/**
 * mac1, mac2, cookies and cookie replies (whitepaper §5.4.4, §5.4.7): the one implementation, used by the
 * control thread (noise.ts wraps it) and by the data-plane workers (src/dataplane/pipeline.ts), which check
 * mac1 and, under load, mac2 before anything else and answer with cookie replies themselves.
 *
 *   mac1   = MAC(HASH("mac1----" || receiver's public key), msg[0, len-32))       at msg[len-32, len-16)
 *   cookie = MAC(secret, source ip (4 bytes, network order) || source port (2 bytes, network order))
 *   mac2   = MAC(cookie, msg[0, len-16))                                          at msg[len-16, len)
 *   cookie reply (64 B) = type 3 | 3 zero bytes | the message's sender index | nonce (24 random bytes)
 *                         | XChaCha20-Poly1305(key HASH("cookie--" || our public key), nonce, cookie,
 *                           AAD = the message's mac1)
 *
 * Messages and keys are read at offsets of any Uint8Array (a worker's slab, shared memory); nothing is
 * allocated per call. The comparisons look at all 16 bytes whatever they hold.
 */
import sodium from 'sodium-native'
import { MSG_COOKIE_REPLY } from './constants.js'
import { Blake2sMac, MAC_SIZE } from './blake2s-mac.js'

export const COOKIE_SECRET_SIZE = 32
export const NONCE_SIZE_X = 24

export class HandshakeMacs {
  private readonly b2 = new Blake2sMac()
  private readonly calc = new Uint8Array(MAC_SIZE)
  private readonly addr = new Uint8Array(6)
  private readonly cookie = Buffer.alloc(MAC_SIZE)
  private readonly key = Buffer.alloc(32)
  private readonly ad = Buffer.alloc(MAC_SIZE)
  /** The last cookie reply built (64 bytes), with views of its nonce and sealed cookie. */
  readonly reply = Buffer.alloc(64)
  private readonly replyNonce = this.reply.subarray(8, 32)
  private readonly replyBox = this.reply.subarray(32, 64)

  /** Whether msg = b[o, o+len) carries mac1 for the key at mac1Key[k, k+32). */
  mac1Valid(mac1Key: Uint8Array, k: number, b: Uint8Array, o: number, len: number): boolean {
    this.b2.mac(mac1Key, k, 32, b, o, len - 32, this.calc, 0)
    return same16(this.calc, b, o + len - 32)
  }

  /**
   * The cookie of ip:port under the secret at secret[s, s+32), into out[at, at+16). The address comes as two
   * 16-bit halves (ipHi = ip >>> 16): numbers above 2^30 passed to a function are boxed, an allocation.
   */
  cookieOf(secret: Uint8Array, s: number, ipHi: number, ipLo: number, port: number, out: Uint8Array, at: number): void {
    const a = this.addr
    a[0] = ipHi >>> 8
    a[1] = ipHi & 255
    a[2] = ipLo >>> 8
    a[3] = ipLo & 255
    a[4] = (port >>> 8) & 255
    a[5] = port & 255
    this.b2.mac(secret, s, COOKIE_SECRET_SIZE, a, 0, 6, out, at)
  }

  /** Whether msg = b[o, o+len) from ip:port (ipHi, ipLo: see cookieOf) carries mac2 made with its cookie under the secret at secret[s, s+32). */
  mac2Valid(secret: Uint8Array, s: number, ipHi: number, ipLo: number, port: number, b: Uint8Array, o: number, len: number): boolean {
    this.cookieOf(secret, s, ipHi, ipLo, port, this.cookie, 0)
    this.b2.mac(this.cookie, 0, MAC_SIZE, b, o, len - 16, this.calc, 0)
    return same16(this.calc, b, o + len - 16)
  }

  /**
   * Builds in this.reply the cookie reply to msg = b[o, o+len) from ip:port: the cookie under the secret at
   * secret[s, s+32), sealed with the cookie key at cookieKey[c, c+32). `nonce` (24 bytes at nonce[n]) fixes the
   * nonce for known-answer tests; it is random otherwise.
   */
  cookieReply(
    cookieKey: Uint8Array,
    c: number,
    secret: Uint8Array,
    s: number,
    ipHi: number,
    ipLo: number,
    port: number,
    b: Uint8Array,
    o: number,
    len: number,
    nonce?: Uint8Array,
    n = 0,
  ): Buffer {
    const r = this.reply
    r[0] = MSG_COOKIE_REPLY
    r[1] = 0
    r[2] = 0
    r[3] = 0
    for (let i = 0; i < 4; i++) r[4 + i] = b[o + 4 + i] // the message's sender index
    if (nonce) for (let i = 0; i < NONCE_SIZE_X; i++) this.replyNonce[i] = nonce[n + i]
    else sodium.randombytes_buf(this.replyNonce)
    for (let i = 0; i < 32; i++) this.key[i] = cookieKey[c + i]
    for (let i = 0; i < MAC_SIZE; i++) this.ad[i] = b[o + len - 32 + i] // AAD: the message's mac1
    this.cookieOf(secret, s, ipHi, ipLo, port, this.cookie, 0)
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(this.replyBox, this.cookie, this.ad, null, this.replyNonce, this.key)
    return r
  }
}

/** Whether a[0, 16) equals b[o, o+16), looking at every byte. */
function same16(a: Uint8Array, b: Uint8Array, o: number): boolean {
  let d = 0
  for (let i = 0; i < MAC_SIZE; i++) d |= a[i] ^ b[o + i]
  return d === 0
}
