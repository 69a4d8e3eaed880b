/**
 * Which handshake datagrams a worker hands to the control thread.
 *
 * Control checks each handshake message's mac1 (BLAKE2s in JavaScript: about 8 µs here) before anything
 * else, so a flood of right-sized junk would keep the control thread busy and fill the ring that carries
 * the real handshakes. Each worker therefore passes at most HS_WORKER_PER_S (burst HS_WORKER_BURST).
 * Below that nothing else is limited: a spoofer sending a victim's address at a modest rate changes
 * nothing. Once a flood has used half the burst, each source address gets a share of what passes
 * (HS_SOURCE_PER_S, burst HS_SOURCE_BURST), kept per exact address in a table placed by a keyed hash
 * (a random key per worker), so one flooding address cannot take it all and nobody can aim at a
 * victim's entry without sending from the victim's own address.
 *
 * A response or cookie reply to a receiver index reserved for an initiation of ours that is still
 * waiting (state 0, index set: Keypairs.alloc) passes outside these limits, up to HS_BYPASS_PER_S
 * (burst HS_BYPASS_BURST): that index travels in clear in our initiation, so an observer on the path may
 * use it too, but only that far. Live receiver indexes (in every transport packet) get no such pass.
 *
 * Time is the worker's wall clock: a step backwards counts as no time passing, never as debt, and
 * refills go on from the new time.
 */
import { K_FIELDS, K_INDEX, K_STATE, KP_MASK } from '../ipc/layout.js'
import { MSG_COOKIE_REPLY, MSG_RESPONSE } from '../protocol/constants.js'
import { halfSipHash4 } from './siphash.js'

export const HS_WORKER_PER_S = 4000
export const HS_WORKER_BURST = 128
export const HS_SOURCE_PER_S = 50
export const HS_SOURCE_BURST = 32
export const HS_BYPASS_PER_S = 20
export const HS_BYPASS_BURST = 8
const SOURCE_BITS = 12

/** Admission results: passed as a waiting initiation's answer, passed, or limited. */
export const GATE_ANSWER = 2
export const GATE_PASS = 1
export const GATE_LIMITED = 0

/** A token bucket in two numbers: refilled by elapsed time (never negative), capped at `burst`. */
function refill(tokens: number, last: number, now: number, perS: number, burst: number): number {
  const elapsed = now - last
  return elapsed > 0 ? Math.min(burst, tokens + (elapsed * perS) / 1000) : tokens
}

export class HandshakeGate {
  private tokens = HS_WORKER_BURST
  private last = 0
  private bypassTokens = HS_BYPASS_BURST
  private bypassLast = 0
  private readonly srcIp = new Int32Array(1 << SOURCE_BITS)
  private readonly srcTokens = new Float64Array(1 << SOURCE_BITS)
  private readonly srcLast = new Float64Array(1 << SOURCE_BITS)
  private readonly key = crypto.getRandomValues(new Int32Array(2))

  constructor(private readonly kpI32: Int32Array) {}

  /**
   * Whether the handshake datagram b[o, o+len) of `type` from address `ip` goes to control at `nowMs`:
   * GATE_ANSWER (the answer to a waiting initiation of ours), GATE_PASS, or GATE_LIMITED.
   */
  admit(b: Uint8Array, o: number, type: number, ip: number, nowMs: number): number {
    if ((type === MSG_RESPONSE || type === MSG_COOKIE_REPLY) && this.answersOurs(b, o, type)) {
      this.bypassTokens = refill(this.bypassTokens, this.bypassLast, nowMs, HS_BYPASS_PER_S, HS_BYPASS_BURST)
      this.bypassLast = nowMs
      if (this.bypassTokens >= 1) {
        this.bypassTokens -= 1
        return GATE_ANSWER
      }
    }
    this.tokens = refill(this.tokens, this.last, nowMs, HS_WORKER_PER_S, HS_WORKER_BURST)
    this.last = nowMs
    if (this.tokens < 1) return GATE_LIMITED
    if (this.tokens < HS_WORKER_BURST / 2 && !this.sourceAllows(ip | 0, nowMs)) return GATE_LIMITED
    this.tokens -= 1
    return GATE_PASS
  }

  private answersOurs(b: Uint8Array, o: number, type: number): boolean {
    const at = o + (type === MSG_RESPONSE ? 8 : 4) // the receiver index, little-endian
    const index = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)
    const slot = index & KP_MASK
    const kb = slot * K_FIELDS
    // State first: retire() clears the index before the state, so a slot being retired never passes.
    return slot !== 0 && Atomics.load(this.kpI32, kb + K_STATE) === 0 && Atomics.load(this.kpI32, kb + K_INDEX) === index
  }

  /** Under a flood: the source's own share. An entry taken over by another address starts full. */
  private sourceAllows(ip: number, nowMs: number): boolean {
    const s = halfSipHash4(this.key[0], this.key[1], 1, ip, 0, 0, 0) & ((1 << SOURCE_BITS) - 1)
    let tokens: number
    if (this.srcIp[s] !== ip || this.srcLast[s] === 0) {
      this.srcIp[s] = ip
      tokens = HS_SOURCE_BURST
    } else tokens = refill(this.srcTokens[s], this.srcLast[s], nowMs, HS_SOURCE_PER_S, HS_SOURCE_BURST)
    this.srcLast[s] = nowMs
    if (tokens < 1) {
      this.srcTokens[s] = tokens
      return false
    }
    this.srcTokens[s] = tokens - 1
    return true
  }
}
