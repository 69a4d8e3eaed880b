/**
 * The per-packet work of a data-plane worker, without the I/O: the worker (workers/dataplane.ts)
 * fills the slabs from the TUN queue and UDP socket and drains them; the benchmark (bench/) feeds
 * the same code synthetic packets. Stages, all sequential within one batch:
 *
 *   outbound(n)  slab of n IP packets at HEADROOM -> parse IPv4 -> route lookup -> [exit node: reply-only
 *                check] -> keypair + counter (Atomics.add) -> pad + encrypt in place -> sLens/oAddrs
 *   inbound(n)   slab of n datagrams -> index -> keypair -> replay pre-check -> decrypt in place ->
 *                replay window -> cryptokey check (source allowed for that peer) -> destination check
 *                -> [exit node: track flow] -> wLens (packet at HEADROOM)
 *
 * Ownership: the slabs and length arrays belong to this pipeline (one per worker); a packet's bytes
 * are borrowed from the caller's batch until the next outbound()/inbound() call.
 * No-allocation contract: nothing per packet is allocated unless the log level is 5 (frame data)
 * or a datagram's length is not a multiple of 16 (never true for WireGuard senders, which pad).
 */
import sodium from 'sodium-native'
import {
  C_FROM_LAN_BYTES,
  C_PEER_FIELDS,
  C_RX_BYTES,
  C_RX_PKTS,
  C_TO_LAN_BYTES,
  C_TX_BYTES,
  C_TX_PKTS,
  KEY_BYTES_PER_SLOT,
  KF_CREATED_MS,
  KF_FIELDS,
  KF_REPLAY_LAST,
  KP_MASK,
  KP_RECV_ONLY,
  KP_SLOTS,
  KP_VALID,
  K_FIELDS,
  K_INDEX,
  K_INITIATOR,
  K_LOCK,
  K_PEER,
  K_REMOTE,
  K_SEND_CTR,
  K_STATE,
  type LayoutViews,
  PF_ENDPOINT,
  PF_FIELDS,
  PF_LAST_RX_ANY,
  PF_LAST_RX_DATA,
  PF_LAST_TX_ANY,
  PF_LAST_TX_DATA,
  P_CUR_KP,
  P_FIELDS,
  R,
  REASONS,
  REPLAY_WORDS,
  type SharedLayout,
  views,
} from '../ipc/layout.js'
import { MSG_CONFIRMED, MSG_HANDSHAKE, MSG_REKEY, MSG_STAGED, RingProducer, type RingBuffers } from '../ipc/ring.js'
import { LOCAL_PROVIDED, type DataplaneTables } from '../ipc/messages.js'
import { lookupRoute16 } from './route-table.js'
import { replayCheckAndSet32, replayMaybeFresh } from './replay.js'
import { PROTO_ICMP, PROTO_TCP, PROTO_UDP, ctReply16, ctTrack16, ttlFor } from './conntrack.js'
import {
  MSG_TRANSPORT,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_TIME_MS,
  RECV_COUNTER_LIMIT,
  SEND_COUNTER_LIMIT,
  SEND_COUNTER_REKEY,
} from '../protocol/constants.js'

export const HEADROOM = 16 // transport header: room to encrypt in place

export function slotSizeFor(mtu: number): number {
  return (HEADROOM + mtu + 16 + 16 + 63) & ~63
}

export interface PipelineOptions {
  id: number
  layout: SharedLayout
  ring: RingBuffers
  conntrack: SharedArrayBuffer
  mtu: number
  batch: number
  epochMs: number
  tables: DataplaneTables
  /** The TUN queue carries virtio_net_hdr (TSO/CSUM offload): writes get a zero header in front. */
  offload?: boolean
  /** Receives -v 5 flow lines and rare messages; never called per packet below level 5. */
  post: (msg: unknown) => void
}

type ViewCache = Array<Array<[Uint8Array, Uint8Array] | undefined>>

function rd32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0
}
/*
 * Numbers above 2^30 (IPv4 addresses, receiver indices) do not fit V8's small integers: passed to a
 * function that is not inlined they are boxed, an allocation per packet. So addresses travel as two
 * 16-bit halves, header words are written byte by byte inline, and port pairs come back through PORTS.
 */
const PORTS = new Int32Array(2) // [peerPort, lanPort] from portsInto()

/** Ports for conntrack, from the peer's side (ICMP echo: the identifier as the peer's "port"). */
function portsInto(b: Uint8Array, p: number, proto: number, peerIsSource: boolean): void {
  const l4 = p + (b[p] & 15) * 4
  PORTS[0] = 0
  PORTS[1] = 0
  if (proto === PROTO_TCP || proto === PROTO_UDP) {
    const sp = (b[l4] << 8) | b[l4 + 1]
    const dp = (b[l4 + 2] << 8) | b[l4 + 3]
    PORTS[0] = peerIsSource ? sp : dp
    PORTS[1] = peerIsSource ? dp : sp
  } else if (proto === PROTO_ICMP) {
    const type = b[l4]
    if (type === 8 || type === 0) PORTS[0] = (b[l4 + 4] << 8) | b[l4 + 5]
  }
}

export class Pipeline {
  readonly slot: number
  readonly batch: number
  /** Outbound: IP packets are read to slot*i + HEADROOM; datagrams to send start at slot*i. */
  readonly oSlab: Uint8Array
  readonly oLens: Int32Array
  readonly sLens: Int32Array
  readonly oAddrs: Uint32Array
  /** Inbound: datagrams are received at slot*i; plaintext packets are written from slot*i + HEADROOM. */
  readonly iSlab: Uint8Array
  readonly iLens: Int32Array
  readonly wLens: Int32Array
  readonly iAddrs: Uint32Array
  tables: DataplaneTables
  /** Offload only: where TUN reads land (a region of oSlab, after the slots), and its offset in oSlab. */
  readonly arena?: Uint8Array
  readonly arenaBase: number
  readonly offload: boolean
  readonly iArenaBase: number
  logLevel = 0
  now = Date.now()
  nowS = 0

  private readonly v: LayoutViews
  private readonly ring: RingProducer
  private readonly ct: Int32Array
  private readonly mtu: number
  private readonly cBase: number
  private readonly rBase: number
  private readonly epochMs: number
  private readonly sendKeys: Uint8Array[] = new Array(KP_SLOTS)
  private readonly recvKeys: Uint8Array[] = new Array(KP_SLOTS)
  private readonly oNonce = new Uint8Array(12)
  private readonly iNonce = new Uint8Array(12)
  private readonly rekeySignalled: Float64Array
  private readonly oViews: ViewCache = []
  private readonly iViews: ViewCache = []
  private readonly post: (msg: unknown) => void

  constructor(o: PipelineOptions) {
    this.v = views(o.layout)
    this.ring = new RingProducer(o.ring)
    this.ct = new Int32Array(o.conntrack)
    this.mtu = o.mtu
    this.batch = o.batch
    this.slot = slotSizeFor(o.mtu)
    this.epochMs = o.epochMs
    this.tables = o.tables
    this.post = o.post
    this.cBase = o.id * o.layout.maxPeers * C_PEER_FIELDS
    this.rBase = o.id * REASONS.length
    this.rekeySignalled = new Float64Array(o.layout.maxPeers)
    for (let k = 0; k < KP_SLOTS; k++) {
      this.sendKeys[k] = this.v.kpKeys.subarray(k * KEY_BYTES_PER_SLOT, k * KEY_BYTES_PER_SLOT + 32)
      this.recvKeys[k] = this.v.kpKeys.subarray(k * KEY_BYTES_PER_SLOT + 32, k * KEY_BYTES_PER_SLOT + 64)
    }
    this.offload = o.offload ?? false
    this.arenaBase = this.slot * o.batch
    const arenaBytes = this.offload ? 4 * (65536 + 128) : 0
    // Owned by this worker alone: a plain ArrayBuffer (copyWithin is ~2x faster than on shared memory).
    this.oSlab = new Uint8Array(new ArrayBuffer(this.slot * o.batch + arenaBytes))
    if (this.offload) this.arena = this.oSlab.subarray(this.arenaBase)
    // With offload, TUN writes go through GRO (offload.ts coalesceForTun) into an arena after the slots.
    this.iArenaBase = this.slot * o.batch
    this.iSlab = new Uint8Array(new ArrayBuffer(this.slot * o.batch + (this.offload ? 1 << 20 : 0)))
    this.oLens = new Int32Array(o.batch)
    this.sLens = new Int32Array(o.batch)
    this.oAddrs = new Uint32Array(2 * o.batch)
    this.iLens = new Int32Array(o.batch)
    this.wLens = new Int32Array(o.batch)
    this.iAddrs = new Uint32Array(2 * o.batch)
    for (let i = 0; i < o.batch; i++) {
      this.oViews.push(new Array((this.slot >> 4) + 2))
      this.iViews.push(new Array((this.slot >> 4) + 2))
    }
  }

  /** Call once per batch (one Date.now per batch, not per packet). */
  setClock(nowMs: number): void {
    this.now = nowMs
    this.nowS = Math.floor((nowMs - this.epochMs) / 1000)
  }

  private slotViews(cache: ViewCache, slab: Uint8Array, i: number, len: number): [Uint8Array, Uint8Array] {
    const row = cache[i]
    const k = len >> 4
    let e = row[k]
    if (e === undefined) {
      const p = i * this.slot + HEADROOM
      e = [slab.subarray(p, p + len), slab.subarray(p + len, p + len + 16)]
      row[k] = e
    }
    return e
  }

  private drop(reason: number): void {
    this.v.reasons[this.rBase + reason]++
  }

  /** -v 5: one line per packet decision. Only here do we build objects per packet. */
  private flowLog(dir: 'in' | 'out', peer: number, b: Uint8Array, p: number, len: number, verdict: string): void {
    const proto = b[p + 9]
    const ihl = (b[p] & 15) * 4
    const hasPorts = proto === PROTO_TCP || proto === PROTO_UDP
    this.post({
      t: 'flow',
      dir,
      peer,
      proto,
      src: rd32(b, p + 12),
      dst: rd32(b, p + 16),
      sport: hasPorts ? (b[p + ihl] << 8) | b[p + ihl + 1] : proto === PROTO_ICMP ? b[p + ihl] : 0,
      dport: hasPorts ? (b[p + ihl + 2] << 8) | b[p + ihl + 3] : proto === PROTO_ICMP ? (b[p + ihl + 4] << 8) | b[p + ihl + 5] : 0,
      len,
      verdict,
    })
  }

  /** Exit node: may this packet from the LAN (src in ProvidesRoutes) go to `dst`, a peer? */
  private replyAllowed(b: Uint8Array, p: number, len: number): boolean {
    const proto = b[p + 9]
    const l4 = p + (b[p] & 15) * 4
    if (proto === PROTO_ICMP && len >= l4 - p + 8 + 20) {
      const type = b[l4]
      if (type === 3 || type === 11 || type === 12) {
        // An ICMP error quoting a packet the peer sent: check the quoted flow.
        const q = l4 + 8
        const qproto = b[q + 9]
        if (len < q - p + (b[q] & 15) * 4 + 8) return false
        portsInto(b, q, qproto, true)
        return (
          ctReply16(
            this.ct,
            qproto,
            (b[q + 12] << 8) | b[q + 13],
            (b[q + 14] << 8) | b[q + 15],
            (b[q + 16] << 8) | b[q + 17],
            (b[q + 18] << 8) | b[q + 19],
            PORTS[0],
            PORTS[1],
            this.nowS,
            0,
          ) >= 0
        )
      }
    }
    const flags = proto === PROTO_TCP ? b[l4 + 13] : 0
    portsInto(b, p, proto, false)
    // The reply goes LAN -> peer: the peer is the destination.
    return (
      ctReply16(
        this.ct,
        proto,
        (b[p + 16] << 8) | b[p + 17],
        (b[p + 18] << 8) | b[p + 19],
        (b[p + 12] << 8) | b[p + 13],
        (b[p + 14] << 8) | b[p + 15],
        PORTS[0],
        PORTS[1],
        this.nowS,
        ttlFor(proto, flags),
      ) >= 0
    )
  }

  /** Classifies and encrypts n packets in oSlab; returns how many datagrams are ready (sLens > 0). */
  outbound(n: number): number {
    const { oSlab, oLens, sLens, oAddrs, tables: t, slot: SLOT, mtu: MTU, now } = this
    const { kpI32, kpF64, peerI32, peerF64, counters } = this.v
    let sends = 0
    for (let i = 0; i < n; i++) {
      sLens[i] = 0
      const len = oLens[i]
      const p = i * SLOT + HEADROOM
      if (len < 20 || oSlab[p] >> 4 !== 4) {
        this.drop(R.not_ipv4)
        continue
      }
      const peer = lookupRoute16(t.routeChild, t.routeVal, (oSlab[p + 16] << 8) | oSlab[p + 17], (oSlab[p + 18] << 8) | oSlab[p + 19])
      if (peer < 0) {
        this.drop(R.no_route)
        if (this.logLevel >= 5) this.flowLog('out', -1, oSlab, p, len, 'drop no_route')
        continue
      }
      const cb = this.cBase + peer * C_PEER_FIELDS
      if (
        t.exitNode &&
        lookupRoute16(t.providedChild, t.providedVal, (oSlab[p + 12] << 8) | oSlab[p + 13], (oSlab[p + 14] << 8) | oSlab[p + 15]) >= 0
      ) {
        if (!this.replyAllowed(oSlab, p, len)) {
          this.drop(R.unsolicited)
          if (this.logLevel >= 5) this.flowLog('out', peer, oSlab, p, len, 'drop unsolicited (LAN hosts may only reply)')
          continue
        }
        counters[cb + C_FROM_LAN_BYTES] += len
      }
      const kp = Atomics.load(peerI32, peer * P_FIELDS + P_CUR_KP)
      const endpoint = peerF64[peer * PF_FIELDS + PF_ENDPOINT]
      const kb = kp * K_FIELDS
      if (
        kp < 0 ||
        endpoint === 0 ||
        Atomics.load(kpI32, kb + K_STATE) !== KP_VALID ||
        now - kpF64[kp * KF_FIELDS + KF_CREATED_MS] >= REJECT_AFTER_TIME_MS
      ) {
        if (!this.ring.push(MSG_STAGED, oSlab, p, len, 0, 0, peer, 0)) this.drop(R.ring_full)
        else this.drop(R.staged)
        if (this.logLevel >= 5) this.flowLog('out', peer, oSlab, p, len, 'queued: waiting for handshake')
        continue
      }
      const index = kpI32[kb + K_INDEX]
      const ctr = Atomics.add(kpI32, kb + K_SEND_CTR, 1) >>> 0
      if (ctr >= SEND_COUNTER_LIMIT) {
        this.drop(R.counter_exhausted)
        continue
      }
      if (
        (ctr >= SEND_COUNTER_REKEY ||
          (kpI32[kb + K_INITIATOR] === 1 && now - kpF64[kp * KF_FIELDS + KF_CREATED_MS] >= REKEY_AFTER_TIME_MS)) &&
        now - this.rekeySignalled[peer] > 1000
      ) {
        this.rekeySignalled[peer] = now
        this.ring.push(MSG_REKEY, oSlab, 0, 0, 0, 0, peer, kp)
      }
      let padded = (len + 15) & ~15
      if (padded > MTU) padded = Math.max(len, MTU)
      for (let j = len; j < padded; j++) oSlab[p + j] = 0
      const h = i * SLOT
      oSlab[h] = MSG_TRANSPORT
      oSlab[h + 1] = 0
      oSlab[h + 2] = 0
      oSlab[h + 3] = 0
      const remote = kpI32[kb + K_REMOTE]
      oSlab[h + 4] = remote & 255
      oSlab[h + 5] = (remote >>> 8) & 255
      oSlab[h + 6] = (remote >>> 16) & 255
      oSlab[h + 7] = (remote >>> 24) & 255
      const n0 = ctr & 255
      const n1 = (ctr >>> 8) & 255
      const n2 = (ctr >>> 16) & 255
      const n3 = (ctr >>> 24) & 255
      oSlab[h + 8] = n0
      oSlab[h + 9] = n1
      oSlab[h + 10] = n2
      oSlab[h + 11] = n3
      oSlab[h + 12] = 0
      oSlab[h + 13] = 0
      oSlab[h + 14] = 0
      oSlab[h + 15] = 0
      const nonce = this.oNonce
      nonce[4] = n0
      nonce[5] = n1
      nonce[6] = n2
      nonce[7] = n3
      const sv =
        (padded & 15) === 0
          ? this.slotViews(this.oViews, oSlab, i, padded)
          : [oSlab.subarray(p, p + padded), oSlab.subarray(p + padded, p + padded + 16)]
      sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(sv[0], sv[1], sv[0], null, null, this.oNonce, this.sendKeys[kp])
      // The keypair may have been retired while we encrypted; never send under a recycled slot.
      if (Atomics.load(kpI32, kb + K_INDEX) !== index) {
        this.drop(R.expired)
        continue
      }
      if (this.logLevel >= 5) this.flowLog('out', peer, oSlab, p, len, 'routed')
      sLens[i] = HEADROOM + padded + 16
      oAddrs[2 * i] = Math.floor(endpoint / 65536) >>> 0
      oAddrs[2 * i + 1] = endpoint % 65536
      counters[cb + C_TX_BYTES] += len
      counters[cb + C_TX_PKTS]++
      const pf = peer * PF_FIELDS
      peerF64[pf + PF_LAST_TX_DATA] = now
      peerF64[pf + PF_LAST_TX_ANY] = now
      sends++
    }
    return sends
  }

  /** Authenticates and checks n datagrams in iSlab; returns how many packets go to the TUN (wLens > 0). */
  inbound(n: number): number {
    const { iSlab, iLens, wLens, iAddrs, tables: t, slot: SLOT, now } = this
    const { kpI32, kpF64, kpReplay, peerI32, peerF64, counters } = this.v
    let writes = 0
    for (let i = 0; i < n; i++) {
      wLens[i] = 0
      const len = iLens[i]
      const b = i * SLOT
      if (len < 4 || iSlab[b + 1] !== 0 || iSlab[b + 2] !== 0 || iSlab[b + 3] !== 0) {
        this.drop(R.malformed)
        continue
      }
      const type = iSlab[b]
      if (type !== MSG_TRANSPORT) {
        if (type >= 1 && type <= 3) {
          this.drop(R.handshake_msgs)
          if (!this.ring.push(MSG_HANDSHAKE, iSlab, b, len, iAddrs[2 * i], iAddrs[2 * i + 1], -1, 0)) this.drop(R.ring_full)
        } else this.drop(R.malformed)
        continue
      }
      if (len < 32) {
        this.drop(R.malformed)
        continue
      }
      const idxLo = iSlab[b + 4] | (iSlab[b + 5] << 8)
      const kp = idxLo & KP_MASK
      const kb = kp * K_FIELDS
      const state = Atomics.load(kpI32, kb + K_STATE)
      if (state === 0 || kpI32[kb + K_INDEX] !== (idxLo | (iSlab[b + 6] << 16) | (iSlab[b + 7] << 24))) {
        this.drop(R.bad_index)
        continue
      }
      const kf = kp * KF_FIELDS
      if (now - kpF64[kf + KF_CREATED_MS] >= REJECT_AFTER_TIME_MS) {
        this.drop(R.expired)
        continue
      }
      const ctrLo = (iSlab[b + 8] | (iSlab[b + 9] << 8) | (iSlab[b + 10] << 16) | (iSlab[b + 11] << 24)) >>> 0
      const ctrHi = (iSlab[b + 12] | (iSlab[b + 13] << 8) | (iSlab[b + 14] << 16) | (iSlab[b + 15] << 24)) >>> 0
      const rb = kp * REPLAY_WORDS
      if (ctrHi >= RECV_COUNTER_LIMIT / 4294967296 || !replayMaybeFresh(kpReplay, rb, kpF64, kf + KF_REPLAY_LAST, ctrHi, ctrLo)) {
        this.drop(R.replay)
        if (this.logLevel >= 5)
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop replay (counter ${ctrHi * 4294967296 + ctrLo} already seen or too old) peer_slot=${kpI32[kb + K_PEER]}`,
          })
        continue
      }
      const clen = len - 32
      const nonce = this.iNonce
      for (let j = 0; j < 8; j++) nonce[4 + j] = iSlab[b + 8 + j]
      const p = b + HEADROOM
      const sv =
        (clen & 15) === 0
          ? this.slotViews(this.iViews, iSlab, i, clen)
          : [iSlab.subarray(p, p + clen), iSlab.subarray(p + clen, p + clen + 16)]
      try {
        sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached(sv[0], null, sv[0], sv[1], null, nonce, this.recvKeys[kp])
      } catch {
        this.drop(R.bad_mac)
        if (this.logLevel >= 5)
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop bad_mac from ${iAddrs[2 * i] >>> 24}.${(iAddrs[2 * i] >>> 16) & 255}.${(iAddrs[2 * i] >>> 8) & 255}.${iAddrs[2 * i] & 255}:${iAddrs[2 * i + 1]}`,
          })
        continue
      }
      while (Atomics.compareExchange(kpI32, kb + K_LOCK, 0, 1) !== 0) {
        /* uncontended in practice: one worker per flow */
      }
      const fresh = replayCheckAndSet32(kpReplay, rb, kpF64, kf + KF_REPLAY_LAST, ctrHi, ctrLo)
      Atomics.store(kpI32, kb + K_LOCK, 0)
      if (!fresh) {
        this.drop(R.replay)
        if (this.logLevel >= 5)
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop replay (counter ${ctrHi * 4294967296 + ctrLo}) peer_slot=${kpI32[kb + K_PEER]}`,
          })
        continue
      }
      const peer = kpI32[kb + K_PEER]
      if (state === KP_RECV_ONLY && Atomics.compareExchange(kpI32, kb + K_STATE, KP_RECV_ONLY, KP_VALID) === KP_RECV_ONLY) {
        // The initiator used the new session: it becomes ours for sending too.
        Atomics.store(peerI32, peer * P_FIELDS + P_CUR_KP, kp)
        this.ring.push(MSG_CONFIRMED, iSlab, 0, 0, 0, 0, peer, kp)
      }
      const pf = peer * PF_FIELDS
      const ep = iAddrs[2 * i] * 65536 + iAddrs[2 * i + 1]
      if (peerF64[pf + PF_ENDPOINT] !== ep) peerF64[pf + PF_ENDPOINT] = ep // roaming: authenticated packets only
      peerF64[pf + PF_LAST_RX_ANY] = now
      const cb = this.cBase + peer * C_PEER_FIELDS
      counters[cb + C_RX_PKTS]++
      if (clen === 0) {
        this.drop(R.keepalive)
        continue
      }
      if (clen < 20 || iSlab[p] >> 4 !== 4) {
        this.drop(R.not_ipv4)
        continue
      }
      const tot = (iSlab[p + 2] << 8) | iSlab[p + 3]
      if (tot < 20 || tot > clen) {
        this.drop(R.malformed)
        continue
      }
      const sHi = (iSlab[p + 12] << 8) | iSlab[p + 13]
      const sLo = (iSlab[p + 14] << 8) | iSlab[p + 15]
      const dHi = (iSlab[p + 16] << 8) | iSlab[p + 17]
      const dLo = (iSlab[p + 18] << 8) | iSlab[p + 19]
      const grp = lookupRoute16(t.allowChild, t.allowVal, sHi, sLo)
      let allowed = false
      if (grp >= 0) for (let j = t.groupStart[grp]; j < t.groupStart[grp + 1]; j++) if (t.groupPeers[j] === peer) allowed = true
      if (!allowed) {
        this.drop(R.not_allowed)
        if (this.logLevel >= 5) this.flowLog('in', peer, iSlab, p, tot, 'drop not_allowed (source not allowed for this peer)')
        continue
      }
      const where = lookupRoute16(t.localChild, t.localVal, dHi, dLo)
      if (where < 0) {
        this.drop(R.not_for_us)
        if (this.logLevel >= 5) this.flowLog('in', peer, iSlab, p, tot, 'drop not_for_us')
        continue
      }
      if (where === LOCAL_PROVIDED) {
        const proto = iSlab[p + 9]
        const flags = proto === PROTO_TCP ? iSlab[p + (iSlab[p] & 15) * 4 + 13] : 0
        portsInto(iSlab, p, proto, true)
        if (ctTrack16(this.ct, proto, sHi, sLo, dHi, dLo, PORTS[0], PORTS[1], peer, this.nowS, ttlFor(proto, flags)) === 2)
          this.drop(R.conntrack_full)
        counters[cb + C_TO_LAN_BYTES] += tot
      }
      if (this.logLevel >= 5) this.flowLog('in', peer, iSlab, p, tot, where === LOCAL_PROVIDED ? 'routed to LAN' : 'delivered')
      counters[cb + C_RX_BYTES] += tot
      peerF64[pf + PF_LAST_RX_DATA] = now
      wLens[i] = tot
      writes++
    }
    return writes
  }

  countTunWriteErrors(n: number): void {
    this.v.reasons[this.rBase + R.tun_write_error] += n
  }
}
