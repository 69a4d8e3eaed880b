/**
 * The peers of this run, indexed by peer slot, public key, identity, virtual address and the
 * receiver index of our in-flight initiation (no linear search on any packet or message path).
 * A removed peer's slot is reused only after the keypair quarantine, so that a worker still
 * holding an old keypair never attributes its packets to the slot's next owner.
 */
import type { PeerConfig } from '../../config/profile.js'
import type { PeerCrypto } from '../../protocol/noise.js'
import { intToIp } from '../../common/ipv4.js'
import type { KeypairRef } from './keypairs.js'
import type { Endpoint } from './peer-memory.js'

/**
 * One peer's runtime state, in wireguard-go's peer.go shape: each group has one writer, and every other
 * part only reads it (test/unit/boundaries.test.ts checks the writers):
 *   cfg, crypto      reload (applyConfig) and Handshakes (the handshake in flight, cookies)
 *   session          Sessions: keypairs previous/current/next, our pending initiation, staged packets
 *   hs               Handshakes: when the current handshake attempt started, when we last sent one, the next retry
 *   ep               endpoints.ts: the endpoint from the profile, when its name was last looked up
 *   health, seen     PeerTimers: unresponsive since, rekey-on-receive done; what was last logged
 * The endpoint workers send to (learned by roaming) is in shared memory (PeerMemory), not here.
 */
export interface PeerRuntime {
  readonly slot: number
  cfg: PeerConfig
  crypto: PeerCrypto
  readonly session: PeerSession
  readonly hs: PeerHandshakeState
  readonly ep: PeerEndpointState
  readonly health: PeerHealth
  readonly seen: PeerSeen
}

export interface PeerSession {
  current?: KeypairRef
  previous?: KeypairRef
  next?: KeypairRef
  /** Keypair slot reserved for our in-flight initiation. */
  pendingSlot?: number
  lastHandshakeMs?: number
  /** Packets waiting for the session (at most MAX_STAGED_PER_PEER). */
  staged: Buffer[]
}

export interface PeerHandshakeState {
  /** When the current attempt to get a session started (undefined: none in progress). */
  startedMs?: number
  lastSentMs: number
  /** Where the last initiation went (packed ip * 65536 + port). */
  lastSentTo?: number
  /** The round trip of our last answered initiation (ms): the path's, at that moment. */
  rttMs?: number
  nextRetryMs: number
}

export interface PeerEndpointState {
  /** Endpoint resolved from the profile (host names looked up at start, reload, and while handshakes fail). */
  configured?: Endpoint
  lastResolveMs?: number
}

export interface PeerHealth {
  /** Set when a send went unanswered for KEEPALIVE+REKEY_TIMEOUT (used for exit-node failover). */
  unresponsiveSinceMs?: number
  rekeyOnRxDone?: number
}

export interface PeerSeen {
  endpoint?: number
  state?: string
}

export type PeerStateName = 'Up' | 'Connecting' | 'Down'

export function peerState(p: PeerRuntime, nowMs: number, rejectAfterMs: number): PeerStateName {
  if (p.session.current && nowMs - p.session.current.createdMs < rejectAfterMs && p.health.unresponsiveSinceMs === undefined) return 'Up'
  if (p.hs.startedMs !== undefined) return 'Connecting'
  return 'Down'
}

export function newPeer(slot: number, cfg: PeerConfig, crypto: PeerCrypto): PeerRuntime {
  return {
    slot,
    cfg,
    crypto,
    session: { staged: [] },
    hs: { lastSentMs: Number.NEGATIVE_INFINITY, nextRetryMs: 0 },
    ep: {},
    health: {},
    seen: {},
  }
}

const keyOf = (publicKey: Uint8Array) => Buffer.from(publicKey).toString('base64')

export class PeerTable implements Iterable<PeerRuntime> {
  private readonly bySlot = new Map<number, PeerRuntime>()
  private readonly byKey = new Map<string, PeerRuntime>()
  private readonly byIndex = new Map<number, PeerRuntime>()
  private readonly indexOf = new Map<PeerRuntime, number>()
  private readonly free: number[] = []
  private readonly releasing: Array<{ slot: number; at: number }> = []
  /** Replay floors of removed peers, by public key: restored if the key comes back in this run. */
  private readonly replayFloor = new Map<string, { lastTimestamp: Uint8Array; lastInitiationMs: number }>()

  constructor(
    maxPeers: number,
    private readonly slotReuseDelayMs: number,
  ) {
    for (let s = maxPeers - 1; s >= 0; s--) this.free.push(s)
  }

  get size(): number {
    return this.bySlot.size
  }

  [Symbol.iterator](): Iterator<PeerRuntime> {
    return this.bySlot.values()
  }

  list(): PeerRuntime[] {
    return [...this.bySlot.values()]
  }

  /** A free peer slot, or undefined when the table is full. */
  takeSlot(now: number): number | undefined {
    while (this.releasing.length && this.releasing[0].at <= now) this.free.push(this.releasing.shift()!.slot)
    return this.free.pop()
  }

  /** Adds a peer; a key removed earlier in this run gets its initiation replay floor back. */
  add(peer: PeerRuntime): void {
    const k = keyOf(peer.cfg.publicKey)
    const floor = this.replayFloor.get(k)
    if (floor) {
      peer.crypto.lastTimestamp = floor.lastTimestamp
      peer.crypto.lastInitiationMs = floor.lastInitiationMs
      this.replayFloor.delete(k)
    }
    this.bySlot.set(peer.slot, peer)
    this.byKey.set(k, peer)
  }

  remove(peer: PeerRuntime, now: number): void {
    if (this.bySlot.get(peer.slot) !== peer) return
    this.bySlot.delete(peer.slot)
    this.byKey.delete(keyOf(peer.cfg.publicKey))
    const { lastTimestamp, lastInitiationMs } = peer.crypto
    this.replayFloor.set(keyOf(peer.cfg.publicKey), { lastTimestamp, lastInitiationMs })
    this.setInitiationIndex(peer, undefined)
    this.releasing.push({ slot: peer.slot, at: now + this.slotReuseDelayMs })
  }

  get(slot: number): PeerRuntime | undefined {
    return this.bySlot.get(slot)
  }

  byPublicKey(publicKey: Uint8Array): PeerRuntime | undefined {
    return this.byKey.get(keyOf(publicKey))
  }

  /** By identity or virtual address (operator requests). */
  byName(which: string): PeerRuntime | undefined {
    for (const p of this.bySlot.values()) if (p.cfg.identity === which || intToIp(p.cfg.virtualAddress) === which) return p
    return undefined
  }

  /** Records the receiver index of our in-flight initiation to `peer` (undefined: none). */
  setInitiationIndex(peer: PeerRuntime, index: number | undefined): void {
    const old = this.indexOf.get(peer)
    if (old !== undefined) this.byIndex.delete(old)
    this.indexOf.delete(peer)
    if (index === undefined) return
    this.byIndex.set(index >>> 0, peer)
    this.indexOf.set(peer, index >>> 0)
  }

  /** The peer whose in-flight initiation carries receiver index `index` (its Noise state still held). */
  byInitiationIndex(index: number): PeerRuntime | undefined {
    const p = this.byIndex.get(index >>> 0)
    return p && p.crypto.handshake?.localIndex !== undefined && p.crypto.handshake.localIndex >>> 0 === index >>> 0 ? p : undefined
  }
}
