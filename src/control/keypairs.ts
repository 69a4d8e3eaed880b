/**
 * Keypair slots in shared memory: allocation, installation, retirement and quarantine.
 *
 * A slot's fields live at `slot * K_FIELDS` (Int32), `slot * KF_FIELDS` (Float64), its keys at
 * `slot * KEY_BYTES_PER_SLOT` and its replay window at `slot * REPLAY_WORDS`; only this file does that
 * arithmetic. Our receiver index is random in its high 20 bits and carries the slot in its low 12, so
 * workers find a slot without a lookup (and re-check K_INDEX after crypto).
 *
 * A retired slot waits KEYPAIR_QUARANTINE_MS before reuse, far longer than a worker holds one.
 */
import sodium from 'sodium-native'
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
} from '../ipc/layout.js'
import type { SessionKeys } from '../protocol/noise.js'

export interface KeypairRef {
  slot: number
  index: number
  createdMs: number
  isInitiator: boolean
}

type KeypairViews = Pick<LayoutViews, 'kpI32' | 'kpF64' | 'kpKeys' | 'kpReplay'>

export class KeypairSlots {
  private free: number[] = []
  /** Retired slots in retirement order (so the head is always the first to leave). */
  private quarantine: Array<{ slot: number; until: number }> = []

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

  /** Reserves a slot with a fresh receiver index (state 0: invisible to workers until installed). */
  alloc(now: number): { slot: number; index: number } {
    this.releaseExpired(now)
    const slot = this.free.pop()
    if (slot === undefined) throw new Error('keypair table exhausted')
    const index = ((sodium.randombytes_uniform(0x100000) << 12) | slot) >>> 0
    Atomics.store(this.v.kpI32, slot * K_FIELDS + K_STATE, 0)
    Atomics.store(this.v.kpI32, slot * K_FIELDS + K_INDEX, index | 0)
    return { slot, index }
  }

  /** Takes a slot out of service; it is reused only after the quarantine. */
  retire(slot: number, now: number): void {
    const kb = slot * K_FIELDS
    Atomics.store(this.v.kpI32, kb + K_STATE, 0)
    Atomics.store(this.v.kpI32, kb + K_INDEX, 0)
    this.v.kpKeys.fill(0, slot * KEY_BYTES_PER_SLOT, (slot + 1) * KEY_BYTES_PER_SLOT)
    this.quarantine.push({ slot, until: now + this.quarantineMs })
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

  /** Takes the next send counter (shared with the workers). */
  takeSendCounter(slot: number): number {
    return Atomics.add(this.v.kpI32, slot * K_FIELDS + K_SEND_CTR, 1) >>> 0
  }

  /** A view of the send key (borrowed: valid until the slot is retired). */
  sendKey(slot: number): Uint8Array {
    return new Uint8Array(this.v.kpKeys.buffer, slot * KEY_BYTES_PER_SLOT, 32)
  }

  private releaseExpired(now: number): void {
    while (this.quarantine.length && this.quarantine[0].until <= now) this.free.push(this.quarantine.shift()!.slot)
  }
}
