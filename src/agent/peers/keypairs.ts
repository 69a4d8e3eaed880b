/**
 * Keypair slots in shared memory: allocation, installation, retirement and quarantine.
 *
 * A slot's fields live at `slot * K_FIELDS` (Int32), `slot * KF_FIELDS` (Float64), its keys at
 * `slot * KEY_BYTES_PER_SLOT` and its replay window at `slot * REPLAY_WORDS`; on the control side only
 * this file does that arithmetic (the data plane does its own: src/dataplane/pipeline.ts, transport.ts). Our receiver index is random in its high 20 bits and carries the slot in its low 12, so
 * workers find a slot without a lookup (and re-check K_INDEX after crypto).
 *
 * A retired slot waits KEYPAIR_QUARANTINE_MS before reuse, far longer than a worker holds one.
 *
 * Exhaustion never throws: `alloc` returns undefined when the table is full or when the peer already
 * holds MAX_SLOTS_PER_PEER slots (live or quarantined), and the caller refuses or defers the handshake.
 */
import sodium from 'sodium-native'
import { sealPacket, takeSendCounter } from '../../dataplane/transport.js'
import {
  KEYPAIR_QUARANTINE_MS,
  KEY_BYTES_PER_SLOT,
  KF_CREATED_MS,
  KF_FIELDS,
  KF_REPLAY_LAST,
  KP_MASK,
  KP_SLOTS,
  K_FIELDS,
  K_INDEX,
  K_INITIATOR,
  K_PEER,
  K_REMOTE,
  K_SEND_CTR,
  K_STATE,
  type LayoutViews,
  REPLAY_WORDS,
} from '../../ipc/layout.js'
import type { SessionKeys } from '../../protocol/noise.js'

export interface KeypairRef {
  slot: number
  index: number
  createdMs: number
  isInitiator: boolean
}

/**
 * Slots one peer may hold, live and quarantined together. A peer needs at most 4 live slots
 * (previous, current, next and our in-flight initiation); 4 more cover what normal operation
 * retires within one quarantine (a retry every REKEY_TIMEOUT retires one pending slot, a rekey one
 * keypair). Without a bound, 50 accepted initiations per second held ~500 slots per peer, and a few
 * peers exhausted all 4,096. With it, 4,096 slots serve 511 peers at their worst.
 */
export const MAX_SLOTS_PER_PEER = 8

type KeypairViews = Pick<LayoutViews, 'kpI32' | 'kpF64' | 'kpKeys' | 'kpReplay'>

export class KeypairSlots {
  private free: number[] = []
  /** Retired slots in retirement order (so the head is always the first to leave). */
  private quarantine: Array<{ slot: number; peer: number; until: number }> = []
  /** Slots held per peer slot (live + quarantined). */
  private readonly held = new Map<number, number>()
  /** Peer slot owning each allocated keypair slot. */
  private readonly ownerSlot = new Int32Array(KP_SLOTS).fill(-1)

  constructor(
    private readonly v: KeypairViews,
    private readonly quarantineMs = KEYPAIR_QUARANTINE_MS,
  ) {
    for (let s = KP_SLOTS - 1; s >= 1; s--) this.free.push(s) // slot 0 unused: index 0 is never valid
  }

  get freeCount(): number {
    return this.free.length
  }

  get quarantined(): number {
    return this.quarantine.length
  }

  /** Slots peer `peer` holds now (live and quarantined). */
  heldBy(peer: number): number {
    return this.held.get(peer) ?? 0
  }

  /**
   * Reserves a slot for peer slot `peer` with a fresh receiver index (state 0: invisible to workers
   * until installed). Undefined when the peer is at its bound or the table is full.
   */
  alloc(peer: number, now: number): { slot: number; index: number } | undefined {
    this.sweep(now)
    if (this.heldBy(peer) >= MAX_SLOTS_PER_PEER) return undefined
    const slot = this.free.pop()
    if (slot === undefined) return undefined
    this.held.set(peer, this.heldBy(peer) + 1)
    this.ownerSlot[slot] = peer
    const index = ((sodium.randombytes_uniform(0x100000) << 12) | slot) >>> 0
    Atomics.store(this.v.kpI32, slot * K_FIELDS + K_STATE, 0)
    Atomics.store(this.v.kpI32, slot * K_FIELDS + K_INDEX, index | 0)
    return { slot, index }
  }

  /**
   * Takes a slot out of service; it is reused only after the quarantine. The keys stay in place
   * until then: a worker may be between its state check and its crypto, and must not find an
   * all-zero key there (a packet sealed under zeros would authenticate). They are zeroed when the
   * slot leaves quarantine (sweep).
   */
  retire(slot: number, now: number): void {
    const kb = slot * K_FIELDS
    // The index first: a worker that finds the index but state 0 takes the slot for a pending initiation.
    Atomics.store(this.v.kpI32, kb + K_INDEX, 0)
    Atomics.store(this.v.kpI32, kb + K_STATE, 0)
    this.quarantine.push({ slot, peer: this.ownerSlot[slot], until: now + this.quarantineMs })
  }

  /** Writes keys and fields, then publishes the state (workers read K_STATE first). */
  install(slot: number, index: number, peerSlot: number, keys: SessionKeys, state: number, now: number): KeypairRef {
    const kb = slot * K_FIELDS
    this.v.kpKeys.set(keys.sendKey, slot * KEY_BYTES_PER_SLOT)
    this.v.kpKeys.set(keys.recvKey, slot * KEY_BYTES_PER_SLOT + 32)
    this.v.kpI32[kb + K_REMOTE] = keys.remoteIndex | 0
    this.v.kpI32[kb + K_PEER] = peerSlot
    this.v.kpI32[kb + K_INITIATOR] = keys.isInitiator ? 1 : 0
    Atomics.store(this.v.kpI32, kb + K_SEND_CTR, 0)
    this.v.kpF64[slot * KF_FIELDS + KF_CREATED_MS] = now
    this.v.kpF64[slot * KF_FIELDS + KF_REPLAY_LAST] = 0
    this.v.kpReplay.fill(0, slot * REPLAY_WORDS, (slot + 1) * REPLAY_WORDS)
    Atomics.store(this.v.kpI32, kb + K_INDEX, index | 0)
    Atomics.store(this.v.kpI32, kb + K_STATE, state) // publish last
    return { slot, index, createdMs: now, isInitiator: keys.isInitiator }
  }

  state(slot: number): number {
    return Atomics.load(this.v.kpI32, slot * K_FIELDS + K_STATE)
  }

  /** The peer slot owning the live keypair with receiver index `index`, if any. */
  ownerOf(index: number): number | undefined {
    const slot = index & KP_MASK
    if (slot === 0 || this.state(slot) === 0 || Atomics.load(this.v.kpI32, slot * K_FIELDS + K_INDEX) >>> 0 !== index >>> 0)
      return undefined
    return this.v.kpI32[slot * K_FIELDS + K_PEER]
  }

  remoteIndex(slot: number): number {
    return this.v.kpI32[slot * K_FIELDS + K_REMOTE] >>> 0
  }

  /** Takes the next send counter (shared with the workers); -1 once the keypair reached its limit. */
  takeSendCounter(slot: number): number {
    return takeSendCounter(this.v.kpI32, slot * K_FIELDS)
  }

  /**
   * Seals `payload` as one transport datagram on this slot with the data plane's own seal (counter
   * limit, state and index re-checked after encryption); undefined when the keypair cannot send.
   */
  seal(slot: number, payload: Uint8Array, mtu: number): Uint8Array | undefined {
    const out = sealPacket(this.v.kpI32, this.v.kpKeys, slot, payload, mtu)
    return typeof out === 'number' ? undefined : out
  }

  /** A view of the send key (borrowed: valid until the slot is retired). */
  sendKey(slot: number): Uint8Array {
    return new Uint8Array(this.v.kpKeys.buffer, slot * KEY_BYTES_PER_SLOT, 32)
  }

  /** Frees the slots whose quarantine ended, zeroing their keys (call on every tick too). */
  sweep(now: number): void {
    while (this.quarantine.length && this.quarantine[0].until <= now) {
      const q = this.quarantine.shift()!
      this.v.kpKeys.fill(0, q.slot * KEY_BYTES_PER_SLOT, (q.slot + 1) * KEY_BYTES_PER_SLOT)
      const n = this.heldBy(q.peer) - 1
      if (n > 0) this.held.set(q.peer, n)
      else this.held.delete(q.peer)
      this.ownerSlot[q.slot] = -1
      this.free.push(q.slot)
    }
  }
}
