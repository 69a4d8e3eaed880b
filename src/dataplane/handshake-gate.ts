/**
 * Which handshake datagrams a worker hands to the control thread.
 *
 * Control checks each handshake message's mac1 (BLAKE2s in JavaScript: about 8 µs here) before anything
 * else, so a flood of right-sized junk would otherwise keep the control thread busy and fill the ring
 * that carries the real handshakes. Each worker therefore admits, per source address, HS_SOURCE_PER_S
 * (burst HS_SOURCE_BURST), and in all HS_WORKER_PER_S (burst HS_WORKER_BURST). A response or cookie
 * reply addressed to a receiver index reserved for an initiation of ours that is still waiting always
 * passes: guessing one takes 2^20 tries. Control keeps its own per-address limit and cookies for
 * messages that pass.
 */
import { K_FIELDS, K_INDEX, K_STATE, KP_MASK } from '../ipc/layout.js'
import { MSG_COOKIE_REPLY, MSG_RESPONSE } from '../protocol/constants.js'

export const HS_SOURCE_PER_S = 50
export const HS_SOURCE_BURST = 32
export const HS_WORKER_PER_S = 4000
export const HS_WORKER_BURST = 128
const SOURCE_BITS = 12

export class HandshakeGate {
  private tokens = 0
  private last = 0
  private readonly srcTokens = new Float64Array(1 << SOURCE_BITS)
  private readonly srcLast = new Float64Array(1 << SOURCE_BITS)

  constructor(private readonly kpI32: Int32Array) {}

  /** Whether the handshake datagram b[o, o+len) of `type` from address `ip` goes to control at `nowMs`. */
  admit(b: Uint8Array, o: number, type: number, ip: number, nowMs: number): boolean {
    if (type === MSG_RESPONSE || type === MSG_COOKIE_REPLY) {
      const at = o + (type === MSG_RESPONSE ? 8 : 4) // the receiver index, little-endian
      const index = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)
      const slot = index & KP_MASK
      // Only a slot reserved for an initiation and not yet installed: live receiver indexes travel in
      // clear in every transport packet, so anyone on the path knows those.
      const kb = slot * K_FIELDS
      if (slot !== 0 && Atomics.load(this.kpI32, kb + K_INDEX) === index && Atomics.load(this.kpI32, kb + K_STATE) === 0) return true
    }
    this.tokens = Math.min(HS_WORKER_BURST, this.tokens + ((nowMs - this.last) * HS_WORKER_PER_S) / 1000)
    this.last = nowMs
    const s = Math.imul(ip, 0x9e3779b1) >>> (32 - SOURCE_BITS)
    const mine = Math.min(HS_SOURCE_BURST, this.srcTokens[s] + ((nowMs - this.srcLast[s]) * HS_SOURCE_PER_S) / 1000)
    this.srcLast[s] = nowMs
    if (mine < 1 || this.tokens < 1) {
      this.srcTokens[s] = mine
      return false
    }
    this.srcTokens[s] = mine - 1
    this.tokens -= 1
    return true
  }
}
