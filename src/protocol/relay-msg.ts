/**
 * The hub relay's datagrams on the wire (issue 20), one definition for the relay (src/hub/relay.ts,
 * workers/relay-pump.ts) and the agent (src/agent/network/paths.ts). The agent's side of them reaches
 * control through src/protocol/path-msg.ts (they start 0xE5 'E' as every path datagram):
 *
 *   bind       0xE5 'E' 'H' 'B' ‖ token (16)              agent -> its relay port
 *   challenge  0xE5 'E' 'H' 'c' ‖ token ‖ cookie (16)     relay -> a new source
 *   confirm    0xE5 'E' 'H' 'C' ‖ token ‖ cookie (16)     that source -> relay
 *   bound      0xE5 'E' 'H' 'b' ‖ token (16)              relay -> the bound source
 */
import crypto from 'node:crypto'

export const RELAY_TOKEN_BYTES = 16
export const RELAY_BIND_SIZE = 4 + RELAY_TOKEN_BYTES
export const RELAY_BIND_MAGIC = Uint8Array.of(0xe5, 0x45, 0x48, 0x42) // 0xE5 'E' 'H' 'B'
export const RELAY_BOUND_MAGIC = Uint8Array.of(0xe5, 0x45, 0x48, 0x62) // 0xE5 'E' 'H' 'b'
/** Return routability: the relay's challenge to a new source, and the source's echo of it. */
export const RELAY_CHALLENGE_MAGIC = Uint8Array.of(0xe5, 0x45, 0x48, 0x63) // 0xE5 'E' 'H' 'c'
export const RELAY_CONFIRM_MAGIC = Uint8Array.of(0xe5, 0x45, 0x48, 0x43) // 0xE5 'E' 'H' 'C'
export const RELAY_COOKIE_BYTES = 16
export const RELAY_CONFIRM_SIZE = RELAY_BIND_SIZE + RELAY_COOKIE_BYTES

/** The bind datagram for a side's token (hex or bytes). */
export function relayBindDatagram(token: string | Uint8Array): Buffer {
  return tokenDatagram(RELAY_BIND_MAGIC, token)
}

/** The relay's answer to a good bind. */
export function relayBoundDatagram(token: string | Uint8Array): Buffer {
  return tokenDatagram(RELAY_BOUND_MAGIC, token)
}

/** The challenge (token ‖ cookie) of a relay to a new source, or null (for the agent side). */
export function parseRelayChallenge(b: Uint8Array): { token: string; cookie: Buffer } | null {
  if (b.length !== RELAY_CONFIRM_SIZE) return null
  for (let i = 0; i < 4; i++) if (b[i] !== RELAY_CHALLENGE_MAGIC[i]) return null
  const buf = Buffer.from(b.buffer, b.byteOffset, b.length)
  return { token: buf.subarray(4, RELAY_BIND_SIZE).toString('hex'), cookie: Buffer.from(buf.subarray(RELAY_BIND_SIZE)) }
}

/** The relay's challenge to a new source: the token and the cookie that source must echo. */
export function relayChallengeDatagram(token: Uint8Array, cookie: Uint8Array): Buffer {
  return Buffer.concat([tokenDatagram(RELAY_CHALLENGE_MAGIC, token), cookie])
}

/**
 * The cookie a source must echo to be bound to a side (return routability): a keyed hash of the side's
 * token and the source's address and port, under the relay's secret.
 */
export function relayCookie(secret: Uint8Array, token: Uint8Array, address: string, port: number): Buffer {
  return crypto.createHmac('sha256', secret).update(token).update(`${address}:${port}`).digest().subarray(0, RELAY_COOKIE_BYTES)
}

/** The agent's echo of a challenge: the bind is complete when the relay gets it from the same source. */
export function relayConfirmDatagram(token: string | Uint8Array, cookie: Uint8Array): Buffer {
  return Buffer.concat([tokenDatagram(RELAY_CONFIRM_MAGIC, token), cookie])
}

/** The token (hex) of a `bound` answer, or null for anything else (for the agent side). */
export function parseRelayBound(b: Uint8Array): string | null {
  if (b.length !== RELAY_BIND_SIZE) return null
  for (let i = 0; i < 4; i++) if (b[i] !== RELAY_BOUND_MAGIC[i]) return null
  return Buffer.from(b.buffer, b.byteOffset + 4, RELAY_TOKEN_BYTES).toString('hex')
}

function tokenDatagram(magic: Uint8Array, token: string | Uint8Array): Buffer {
  const t = typeof token === 'string' ? Buffer.from(token, 'hex') : token
  if (t.length !== RELAY_TOKEN_BYTES) throw new Error(`relay token must be ${RELAY_TOKEN_BYTES} bytes`)
  const b = Buffer.alloc(RELAY_BIND_SIZE)
  b.set(magic, 0)
  b.set(t, 4)
  return b
}

/** WireGuard message sizes: initiation, response, cookie reply; transport data is at least 32. */
const WG_INITIATION = 148
const WG_RESPONSE = 92
const WG_COOKIE = 64
const WG_TRANSPORT_MIN = 32

/**
 * True when b[o, o+n) has the shape of a WireGuard message (type 1..4, three zero bytes, the type's size).
 * Allocation-free: the batched relay calls it per datagram of its slab.
 */
export function looksLikeWireGuard(b: Uint8Array, o = 0, n = b.length - o): boolean {
  if (n < WG_TRANSPORT_MIN || b[o + 1] !== 0 || b[o + 2] !== 0 || b[o + 3] !== 0) return false
  switch (b[o]) {
    case 1:
      return n === WG_INITIATION
    case 2:
      return n === WG_RESPONSE
    case 3:
      return n === WG_COOKIE
    case 4:
      return true
    default:
      return false
  }
}
