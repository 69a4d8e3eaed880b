/** WireGuard protocol constants (whitepaper §5.4, §6) and our implementation limits. */

// --- protocol ---
export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com'
export const LABEL_MAC1 = 'mac1----'
export const LABEL_COOKIE = 'cookie--'

export const MSG_INITIATION = 1
export const MSG_RESPONSE = 2
export const MSG_COOKIE_REPLY = 3
export const MSG_TRANSPORT = 4

export const INITIATION_SIZE = 148
export const RESPONSE_SIZE = 92
export const COOKIE_REPLY_SIZE = 64
export const TRANSPORT_HEADER_SIZE = 16
export const TRANSPORT_MIN_SIZE = 32 // header + Poly1305 tag (a keepalive)
export const AEAD_TAG_SIZE = 16
export const KEY_SIZE = 32 // ChaCha20-Poly1305 key
export const NONCE_SIZE = 12 // 4 zero bytes + the 64-bit counter (LE)

export const REKEY_AFTER_MESSAGES = 2 ** 60
export const REKEY_AFTER_TIME_MS = 120_000
export const REJECT_AFTER_TIME_MS = 180_000
export const REKEY_ATTEMPT_TIME_MS = 90_000
export const REKEY_TIMEOUT_MS = 5_000
export const REKEY_TIMEOUT_JITTER_MAX_MS = 333
export const KEEPALIVE_TIMEOUT_MS = 10_000
export const COOKIE_REFRESH_TIME_MS = 120_000

// --- implementation ---
/**
 * Send counters live in a 32-bit shared word (Atomics.add) so that several workers can encrypt
 * for one keypair without allocating. A keypair therefore retires long before the protocol's
 * 2^60 / 2^64 limits: this is stricter than WireGuard, never looser, and still interoperates.
 * At 10 M packets/s the 2^31 rekey point is 214 s away, past REJECT_AFTER_TIME anyway.
 */
export const SEND_COUNTER_REKEY = 2 ** 31
export const SEND_COUNTER_LIMIT = 2 ** 32 - 2 ** 13 - 1
/** Counters above this cannot be represented exactly in a double; never reached in 180 s. */
export const RECV_COUNTER_LIMIT = 2 ** 53
/** Initiations accepted per peer per second (wireguard-go: HandshakeInitationRate). */
export const MAX_INITIATIONS_PER_PEER_PER_S = 50
/** Handshake messages per second above which the responder demands cookies (mac2). */
export const UNDER_LOAD_HANDSHAKES_PER_S = 1000
