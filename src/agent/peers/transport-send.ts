/**
 * What control's own sends are built from (Sessions.sendTransport sends them: keepalives and packets
 * staged while a handshake was in flight): sealing with the data plane's own function
 * (src/dataplane/transport.ts through KeypairSlots.seal), so both paths share the counter limit and the
 * re-checks after encryption, and the type of the function that puts a datagram on the wire.
 */
import type { KeypairSlots } from './keypairs.js'

/** Seals `payload` (padded to 16 up to the MTU) on keypair `kpSlot`; undefined when it cannot send. */
export function sealTransport(keypairs: KeypairSlots, kpSlot: number, payload: Uint8Array, mtu: number): Uint8Array | undefined {
  return keypairs.seal(kpSlot, payload, mtu)
}

export type SendDatagram = (buf: Uint8Array, ip: number, port: number) => void
