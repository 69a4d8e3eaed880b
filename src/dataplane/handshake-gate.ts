/**
 * Which handshake datagrams a worker hands to the control thread.
 *
 * The worker has checked mac1 (and under load mac2) before this gate (Pipeline.macsAdmit); a valid mac1
 * takes only our public key, so a flood of such messages could still keep the control thread busy and fill
 * the ring that carries the real handshakes. Each worker therefore passes at most HS_WORKER_PER_S (burst
 * HS_WORKER_BURST).
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
 * Time is the worker's wall clock; the buckets (TokenBuckets) treat a step backwards as no time passing.
 */
import { K_FIELDS, K_INDEX, K_STATE, KP_MASK } from '../ipc/layout.js'
import { MSG_COOKIE_REPLY, MSG_RESPONSE } from '../protocol/constants.js'
import { halfSipHash4 } from './siphash.js'
import { TokenBuckets } from './token-buckets.js'

export const HS_WORKER_PER_S = 4000
export const HS_WORKER_BURST = 128
export const HS_SOURCE_PER_S = 50
export const HS_SOURCE_BURST = 32
export const HS_BYPASS_PER_S = 20
export const HS_BYPASS_BURST = 8
const SOURCE_BITS = 12

/** The gate's rates: the worker's whole budget and each source's share once half the burst is used. */
export interface GateLimits {
  workerPerS: number
  workerBurst: number
  sourcePerS: number
  sourceBurst: number
}

export const HANDSHAKE_LIMITS: GateLimits = {
  workerPerS: HS_WORKER_PER_S,
  workerBurst: HS_WORKER_BURST,
  sourcePerS: HS_SOURCE_PER_S,
  sourceBurst: HS_SOURCE_BURST,
}

/**
 * Path datagrams (probes, relay answers: src/protocol/path-msg.ts) have a gate of their own: they carry no
 * mac1, so anyone can send them, and they must never spend the handshakes' budget. An agent sends a peer
 * at most a few dozen a second while it looks for a path.
 */
export const PATH_LIMITS: GateLimits = { workerPerS: 400, workerBurst: 64, sourcePerS: 20, sourceBurst: 16 }

/** Admission results: passed as a waiting initiation's answer, passed, or limited. */
export const GATE_ANSWER = 2
export const GATE_PASS = 1
export const GATE_LIMITED = 0

export class HandshakeGate {
  private readonly worker: TokenBuckets
  private readonly bypass: TokenBuckets
  private readonly srcIp = new Int32Array(1 << SOURCE_BITS)
  private readonly sources: TokenBuckets
  private readonly key = crypto.getRandomValues(new Int32Array(2))

  /** `clock[0]`: the worker's time in milliseconds (see TokenBuckets). */
  private readonly halfBurst: number

  constructor(
    private readonly kpI32: Int32Array,
    clock: Float64Array,
    limits: GateLimits = HANDSHAKE_LIMITS,
  ) {
    this.worker = new TokenBuckets(1, limits.workerPerS, limits.workerBurst, clock)
    this.bypass = new TokenBuckets(1, HS_BYPASS_PER_S, HS_BYPASS_BURST, clock)
    this.sources = new TokenBuckets(1 << SOURCE_BITS, limits.sourcePerS, limits.sourceBurst, clock)
    this.halfBurst = limits.workerBurst / 2
  }

  /**
   * Whether the handshake datagram b[o, o+len) of `type` from address `ip` goes to control now:
   * GATE_ANSWER (the answer to a waiting initiation of ours), GATE_PASS, or GATE_LIMITED.
   */
  admit(b: Uint8Array, o: number, type: number, ip: number): number {
    if ((type === MSG_RESPONSE || type === MSG_COOKIE_REPLY) && this.answersOurs(b, o, type) && this.bypass.take(0)) return GATE_ANSWER
    const level = this.worker.refill(0)
    if (level < 1) return GATE_LIMITED
    if (level < this.halfBurst && !this.sourceAllows(ip | 0)) return GATE_LIMITED
    this.worker.spend(0)
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
  private sourceAllows(ip: number): boolean {
    const s = halfSipHash4(this.key[0], this.key[1], 1, ip, 0, 0, 0) & ((1 << SOURCE_BITS) - 1)
    if (this.srcIp[s] !== ip) {
      this.srcIp[s] = ip
      this.sources.reset(s)
    }
    return this.sources.take(s)
  }
}
