/**
 * Sessions: which keypair slot is a peer's previous, current and next, and the transitions between
 * them (initiator completes, responder installs, data confirms, timers expire), plus control's own
 * sends on a session (keepalives, packets staged while the handshake was in flight).
 * The keypair table and the peer table are parts of their own; this file only calls them.
 */
import { KP_RECV_ONLY, KP_VALID } from '../../ipc/layout.js'
import type { SessionKeys } from '../../protocol/noise.js'
import { REJECT_AFTER_TIME_MS } from '../../protocol/constants.js'
import type { KeypairWhich } from '../../protocol/timers.js'
import type { KeypairSlots } from './keypairs.js'
import type { Endpoint, PeerMemory } from './peer-memory.js'
import type { PeerRuntime, PeerTable } from './peer-table.js'
import { type SendDatagram, sealTransport } from './transport-send.js'

/** Packets kept per peer while its handshake is in flight (oldest dropped first). */
export const MAX_STAGED_PER_PEER = 128

export class Sessions {
  constructor(
    private readonly keypairs: KeypairSlots,
    private readonly memory: PeerMemory,
    private readonly peers: PeerTable,
    private readonly send: SendDatagram,
    private readonly mtu: number,
  ) {}

  /** The endpoint workers learned (roaming) or else the configured one. */
  endpointOf(peer: PeerRuntime): Endpoint | undefined {
    return this.memory.endpoint(peer.slot) ?? peer.ep.configured
  }

  /** True when the current keypair can carry data now. */
  canSend(peer: PeerRuntime, now: number): boolean {
    const kp = peer.session.current
    return !!kp && this.keypairs.state(kp.slot) === KP_VALID && now - kp.createdMs < REJECT_AFTER_TIME_MS && !!this.endpointOf(peer)
  }

  /**
   * Reserves the keypair slot for a new initiation of ours (the previous one's slot is retired).
   * Undefined when no slot is free for this peer: the caller defers the handshake.
   */
  beginInitiation(peer: PeerRuntime, now: number): { slot: number; index: number } | undefined {
    this.abandonInitiation(peer, now)
    const kp = this.keypairs.alloc(peer.slot, now)
    if (!kp) return undefined
    peer.session.pendingSlot = kp.slot
    this.peers.setInitiationIndex(peer, kp.index)
    return kp
  }

  /** Drops our in-flight initiation, if any. */
  abandonInitiation(peer: PeerRuntime, now: number): void {
    if (peer.session.pendingSlot !== undefined) this.keypairs.retire(peer.session.pendingSlot, now)
    peer.session.pendingSlot = undefined
    this.peers.setInitiationIndex(peer, undefined)
  }

  /** Our initiation was answered: the new keypair becomes current at once. */
  completeAsInitiator(peer: PeerRuntime, keys: SessionKeys, from: Endpoint, now: number): boolean {
    const slot = peer.session.pendingSlot
    if (slot === undefined) return false
    peer.session.pendingSlot = undefined
    this.peers.setInitiationIndex(peer, undefined)
    if (peer.session.previous) this.keypairs.retire(peer.session.previous.slot, now)
    peer.session.previous = peer.session.current
    peer.session.current = this.keypairs.install(slot, keys.localIndex, peer.slot, keys, KP_VALID, now)
    this.memory.setSendKeypair(peer.slot, slot)
    this.memory.roamTo(peer.slot, from, now)
    peer.session.lastHandshakeMs = now
    return true
  }

  /** We answered an initiation: the keypair receives only until the initiator's first data. */
  installAsResponder(peer: PeerRuntime, slot: number, index: number, keys: SessionKeys, from: Endpoint, now: number): void {
    if (peer.session.next) this.retireUnconfirmed(peer, peer.session.next.slot, now)
    peer.session.next = this.keypairs.install(slot, index, peer.slot, keys, KP_RECV_ONLY, now)
    this.memory.roamTo(peer.slot, from, now)
    peer.session.lastHandshakeMs = now
  }

  /**
   * The keypair slot of `next` when a worker has already promoted it in shared memory
   * (KP_RECV_ONLY -> KP_VALID), whether or not its "confirmed" message made it through the ring.
   */
  promotedByWorker(peer: PeerRuntime): number | undefined {
    return peer.session.next && this.keypairs.state(peer.session.next.slot) === KP_VALID ? peer.session.next.slot : undefined
  }

  /** The initiator spoke on our `next` keypair (a worker promoted it): it becomes current. */
  confirm(peer: PeerRuntime, kpSlot: number, now: number): boolean {
    if (!peer.session.next || peer.session.next.slot !== kpSlot) return false
    if (peer.session.previous) this.keypairs.retire(peer.session.previous.slot, now)
    peer.session.previous = peer.session.current
    peer.session.current = peer.session.next
    peer.session.next = undefined
    // The worker that promoted it published it too, unless control cleared or replaced the word in
    // between (expire, completeAsInitiator): control's view is what workers send with.
    this.memory.setSendKeypair(peer.slot, kpSlot)
    this.abandonInitiation(peer, now) // the peer's session makes ours moot
    return true
  }

  /**
   * A keypair reached REJECT_AFTER_TIME. Returns true when it was the current one. The send word is
   * cleared only if it still holds that keypair: a worker may have promoted `next` into it in the
   * same tick, and confirm() makes that one current.
   */
  expire(peer: PeerRuntime, which: KeypairWhich, now: number): boolean {
    const kp = peer.session[which]
    if (!kp) return false
    peer.session[which] = undefined
    if (which === 'current') {
      this.keypairs.retire(kp.slot, now)
      this.memory.clearSendKeypairIf(peer.slot, kp.slot)
    } else this.retireUnconfirmed(peer, kp.slot, now)
    return which === 'current'
  }

  /**
   * Retires a keypair other than the current one. A worker may have promoted it (a `next`) and
   * published it for sending before control confirmed it: then workers go back to control's
   * current. Retirement comes first, so a worker promoting it now takes its word back itself.
   */
  private retireUnconfirmed(peer: PeerRuntime, slot: number, now: number): void {
    this.keypairs.retire(slot, now)
    this.memory.replaceSendKeypairIf(peer.slot, slot, peer.session.current?.slot ?? -1)
  }

  /**
   * Retires every keypair of a peer that is being removed, then clears the send word: with every
   * keypair retired no worker can promote one any more (one that promoted just before takes its
   * word back when it sees the retirement).
   */
  dropAll(peer: PeerRuntime, now: number): void {
    for (const kp of [peer.session.current, peer.session.previous, peer.session.next]) if (kp) this.keypairs.retire(kp.slot, now)
    this.memory.setSendKeypair(peer.slot, -1)
    peer.session.current = peer.session.previous = peer.session.next = undefined
    this.abandonInitiation(peer, now)
  }

  /** Sends one transport message on the current keypair; false when there is no usable session. */
  sendTransport(peer: PeerRuntime, payload: Uint8Array, now: number): boolean {
    const kp = peer.session.current
    const ep = this.endpointOf(peer)
    if (!kp || !ep || this.keypairs.state(kp.slot) !== KP_VALID) return false
    const datagram = sealTransport(this.keypairs, kp.slot, payload, this.mtu)
    if (!datagram) return false
    this.send(datagram, ep.ip, ep.port)
    this.memory.noteSent(peer.slot, payload.length > 0, now)
    return true
  }

  /** Keeps a packet until the session is up; returns false when it was sent at once instead. */
  stage(peer: PeerRuntime, pkt: Buffer, now: number): boolean {
    if (this.canSend(peer, now) && this.sendTransport(peer, pkt, now)) return false
    peer.session.staged.push(pkt)
    if (peer.session.staged.length > MAX_STAGED_PER_PEER) peer.session.staged.shift()
    return true
  }

  /** Sends staged packets; returns how many went out. */
  flushStaged(peer: PeerRuntime, now: number): number {
    const list = peer.session.staged
    peer.session.staged = []
    let sent = 0
    for (const pkt of list) if (this.sendTransport(peer, pkt, now)) sent++
    return sent
  }

  /** Forgets the packets waiting for a session (a handshake that was given up). */
  dropStaged(peer: PeerRuntime): number {
    const n = peer.session.staged.length
    peer.session.staged = []
    return n
  }
}
