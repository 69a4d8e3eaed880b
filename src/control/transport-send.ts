/**
 * Control's transport send path: keepalives and packets staged while a handshake was in flight.
 * ONE function seals a transport message so that it can switch to the data plane's shared seal
 * (src/dataplane/transport.ts) in one place.
 */
import sodium from 'sodium-native'
import { AEAD_TAG_SIZE, MSG_TRANSPORT, TRANSPORT_HEADER_SIZE } from '../protocol/constants.js'
import type { KeypairSlots } from './keypairs.js'

/** Seals `payload` (padded to 16 up to the MTU) as a transport message on keypair `kpSlot`. */
export function sealTransport(keypairs: KeypairSlots, kpSlot: number, payload: Uint8Array, mtu: number): Buffer {
  const ctr = keypairs.takeSendCounter(kpSlot)
  const padded = Math.min((payload.length + 15) & ~15, Math.max(payload.length, mtu))
  const out = Buffer.alloc(TRANSPORT_HEADER_SIZE + padded + AEAD_TAG_SIZE)
  out[0] = MSG_TRANSPORT
  out.writeUInt32LE(keypairs.remoteIndex(kpSlot), 4)
  out.writeUInt32LE(ctr, 8)
  out.set(payload, TRANSPORT_HEADER_SIZE)
  const nonce = Buffer.alloc(12)
  nonce.writeUInt32LE(ctr, 4)
  const m = out.subarray(TRANSPORT_HEADER_SIZE, TRANSPORT_HEADER_SIZE + padded)
  const k = keypairs.sendKey(kpSlot)
  const key = Buffer.from(k.buffer, k.byteOffset, k.byteLength)
  sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(m, out.subarray(TRANSPORT_HEADER_SIZE + padded), m, null, null, nonce, key)
  return out
}

export type SendDatagram = (buf: Uint8Array, ip: number, port: number) => void
