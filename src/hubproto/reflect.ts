/**
 * Endpoint discovery on the WireGuard port (issue 20, hub-spec §4.1). The agent's control thread sends
 * a reflect datagram from its WireGuard socket (the very socket, so the mapping a NAT makes for it is the
 * one WireGuard traffic gets) to each of the hub's two reflect ports; the hub answers over the agent's
 * authenticated hub connection with the source address it saw (`reflected`). Nothing comes back on UDP,
 * so the data plane never reads a hub datagram, and an outsider who forges a datagram learns nothing: the
 * token is 16 random bytes the hub gave this connection, over the encrypted channel.
 *
 *   0xE5 'E' 'H' 'R' ‖ token (16) ‖ seq (u32, big-endian)
 *
 * NAT class from the two answers (RFC 4787's terms): none (the address seen is one of ours), easy
 * (endpoint-independent mapping: both ports saw the same address), hard (endpoint-dependent: each
 * destination gets its own mapping, so the address the hub saw is useless to peers), blocked (no answer:
 * UDP out is dropped), unknown (one answer only).
 */
export const REFLECT_MAGIC = Uint8Array.of(0xe5, 0x45, 0x48, 0x52)
export const REFLECT_TOKEN_BYTES = 16
export const REFLECT_SIZE = 4 + REFLECT_TOKEN_BYTES + 4

export type NatClass = 'none' | 'easy' | 'hard' | 'blocked' | 'unknown'

export function reflectDatagram(token: Uint8Array, seq: number): Buffer {
  const b = Buffer.alloc(REFLECT_SIZE)
  b.set(REFLECT_MAGIC, 0)
  b.set(token, 4)
  b.writeUInt32BE(seq >>> 0, 4 + REFLECT_TOKEN_BYTES)
  return b
}

/** The token and seq of a reflect datagram, or null for anything else. */
export function parseReflect(b: Uint8Array): { token: string; seq: number } | null {
  if (b.length !== REFLECT_SIZE) return null
  for (let i = 0; i < 4; i++) if (b[i] !== REFLECT_MAGIC[i]) return null
  const token = Buffer.from(b.buffer, b.byteOffset + 4, REFLECT_TOKEN_BYTES).toString('hex')
  const seq = Buffer.from(b.buffer, b.byteOffset, b.length).readUInt32BE(4 + REFLECT_TOKEN_BYTES)
  return { token, seq }
}

/**
 * The NAT class from what the hub's two ports saw (`seen[i]`: "ip:port", or undefined without an answer)
 * and this system's own IPv4 addresses (dotted).
 */
export function natClass(seen: ReadonlyArray<string | undefined>, local: readonly string[]): NatClass {
  const got = seen.filter((s): s is string => typeof s === 'string')
  if (got.length === 0) return 'blocked'
  if (got.some((s) => local.includes(s.slice(0, s.lastIndexOf(':'))))) return 'none'
  if (got.length < seen.length) return 'unknown'
  return got.every((s) => s === got[0]) ? 'easy' : 'hard'
}
