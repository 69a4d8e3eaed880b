/**
 * Named accessors over the per-peer shared memory (src/ipc/layout.ts): the keypair workers send
 * with, the endpoint, the timestamps workers write, and the per-worker counters control sums.
 * The offset arithmetic lives here and nowhere else in control.
 */
import {
  C_PEER_FIELDS,
  type LayoutViews,
  PF_ENDPOINT,
  PF_RELAY_EP,
  PF_LAST_RX_DIRECT,
  DIRECT_HOLD_MS,
  PF_FIELDS,
  PF_LAST_RX_ANY,
  PF_LAST_RX_DATA,
  PF_LAST_TX_ANY,
  PF_LAST_TX_DATA,
  PF_FIRST_UNANSWERED,
  P_CUR_KP,
  P_FIELDS,
  REASONS,
  endpointIp,
  endpointPort,
  packEndpoint,
} from '../../ipc/layout.js'
import { intToIp } from '../../common/ipv4.js'

export interface Endpoint {
  ip: number
  port: number
}

export interface PeerTimes {
  lastRxAny: number
  lastRxData: number
  lastTxAny: number
  lastTxData: number
  /** The first data sent after the last authenticated receive (0: none yet). */
  firstUnanswered: number
}

type PeerViews = Pick<LayoutViews, 'peerI32' | 'peerF64' | 'counters' | 'reasons'>

export class PeerMemory {
  constructor(
    private readonly v: PeerViews,
    private readonly maxPeers: number,
    private readonly workers: number,
  ) {}

  /** Clears a peer slot before use: no send keypair, no endpoint, no timestamps, zero counters. */
  reset(peer: number): void {
    Atomics.store(this.v.peerI32, peer * P_FIELDS + P_CUR_KP, -1)
    this.v.peerF64.fill(0, peer * PF_FIELDS, peer * PF_FIELDS + PF_FIELDS)
    for (let w = 0; w < this.workers; w++) {
      const b = (w * this.maxPeers + peer) * C_PEER_FIELDS
      this.v.counters.fill(0, b, b + C_PEER_FIELDS)
    }
  }

  /** The keypair slot workers send with (-1: none). Control's choice: a worker's promotion is replaced. */
  setSendKeypair(peer: number, kpSlot: number): void {
    Atomics.store(this.v.peerI32, peer * P_FIELDS + P_CUR_KP, kpSlot)
  }

  /** Clears the send keypair only if it is still `kpSlot` (a worker may have promoted another since). */
  clearSendKeypairIf(peer: number, kpSlot: number): boolean {
    return this.replaceSendKeypairIf(peer, kpSlot, -1)
  }

  /** Sets the send keypair to `replacement` only if it is still `kpSlot` (compare-and-swap). */
  replaceSendKeypairIf(peer: number, kpSlot: number, replacement: number): boolean {
    return Atomics.compareExchange(this.v.peerI32, peer * P_FIELDS + P_CUR_KP, kpSlot, replacement) === kpSlot
  }

  /** The raw packed endpoint (0 = unknown); workers update it when the peer roams. */
  endpointRaw(peer: number): number {
    return this.v.peerF64[peer * PF_FIELDS + PF_ENDPOINT]
  }

  endpoint(peer: number): Endpoint | undefined {
    const e = this.endpointRaw(peer)
    return e !== 0 ? { ip: endpointIp(e), port: endpointPort(e) } : undefined
  }

  setEndpoint(peer: number, ep: Endpoint | undefined): void {
    this.v.peerF64[peer * PF_FIELDS + PF_ENDPOINT] = ep ? packEndpoint(ep.ip, ep.port) : 0
  }

  /**
   * The source of an authenticated handshake becomes the endpoint (roaming), as the workers do for
   * transport packets: not the relay while the direct path delivered within DIRECT_HOLD_MS.
   */
  roamTo(peer: number, ep: Endpoint, now: number): void {
    const f = this.v.peerF64
    const b = peer * PF_FIELDS
    const e = packEndpoint(ep.ip, ep.port)
    if (e === f[b + PF_RELAY_EP] && now - f[b + PF_LAST_RX_DIRECT] < DIRECT_HOLD_MS && f[b + PF_ENDPOINT] !== 0) return
    f[b + PF_ENDPOINT] = e
  }

  /** The relay address of this peer (0 = none): workers do not roam to it while the direct path delivers. */
  setRelay(peer: number, ep: Endpoint | undefined): void {
    this.v.peerF64[peer * PF_FIELDS + PF_RELAY_EP] = ep ? packEndpoint(ep.ip, ep.port) : 0
  }

  relayRaw(peer: number): number {
    return this.v.peerF64[peer * PF_FIELDS + PF_RELAY_EP]
  }

  /** A probe answered on the direct path: it counts as a direct delivery (the workers hold the endpoint). */
  noteDirect(peer: number, now: number): void {
    const f = this.v.peerF64
    if (f[peer * PF_FIELDS + PF_LAST_RX_DIRECT] < now) f[peer * PF_FIELDS + PF_LAST_RX_DIRECT] = now
  }

  /** When an authenticated packet last came from anywhere but the relay (ms; 0 never). */
  lastRxDirect(peer: number): number {
    return this.v.peerF64[peer * PF_FIELDS + PF_LAST_RX_DIRECT]
  }

  times(peer: number): PeerTimes {
    const f = this.v.peerF64
    const b = peer * PF_FIELDS
    return {
      lastRxAny: f[b + PF_LAST_RX_ANY],
      lastRxData: f[b + PF_LAST_RX_DATA],
      lastTxAny: f[b + PF_LAST_TX_ANY],
      lastTxData: f[b + PF_LAST_TX_DATA],
      firstUnanswered: f[b + PF_FIRST_UNANSWERED],
    }
  }

  /** Control sent a transport message itself (keepalive, staged packet). */
  noteSent(peer: number, data: boolean, now: number): void {
    const b = peer * PF_FIELDS
    this.v.peerF64[b + PF_LAST_TX_ANY] = now
    if (data) {
      this.v.peerF64[b + PF_LAST_TX_DATA] = now
      if (this.v.peerF64[b + PF_FIRST_UNANSWERED] <= this.v.peerF64[b + PF_LAST_RX_ANY]) this.v.peerF64[b + PF_FIRST_UNANSWERED] = now
    }
  }

  /** One per-peer counter (C_*) summed over the workers. */
  counter(peer: number, field: number): number {
    let s = 0
    for (let w = 0; w < this.workers; w++) s += this.v.counters[(w * this.maxPeers + peer) * C_PEER_FIELDS + field]
    return s
  }

  /** Drop and event reasons summed over the workers. */
  reasons(): Record<string, number> {
    const out: Record<string, number> = {}
    REASONS.forEach((r, i) => {
      let s = 0
      for (let w = 0; w < this.workers; w++) s += this.v.reasons[w * REASONS.length + i]
      out[r] = s
    })
    return out
  }
}

export function endpointText(ep: Endpoint | undefined): string | undefined {
  return ep ? `${intToIp(ep.ip)}:${ep.port}` : undefined
}
