/**
 * The per-packet work of a data-plane worker, without the I/O: the worker (workers/dataplane.ts)
 * fills the slabs from the TUN queue and UDP socket and drains them; the benchmark (bench/) feeds
 * the same code synthetic packets. Stages, all sequential within one batch:
 *
 *   outbound(n)  slab of n IP packets at HEADROOM -> parse IPv4 -> route lookup -> reply-only
 *                check (firewall.ts: own address or a reply) -> keypair -> seal (transport.ts: counter,
 *                encrypt in place, re-check) -> sLens/oAddrs
 *   inbound(n)   handshake messages: mac1, under load mac2 (else a cookie reply in cSlab) -> gate -> ring
 *                transport datagrams -> index -> keypair -> replay pre-check -> open (transport.ts:
 *                decrypt in place, re-check) -> replay window -> cryptokey check (source allowed for
 *                that peer) -> destination check -> [Policies: firewall.admit (tracked flow, or a new
 *                flow the policy table allows)] [exit node: track flow] -> wLens (packet at HEADROOM)
 *   With Policies, outbound also tracks this system's own flows (firewall.trackOwn) so replies pass.
 *
 * Ownership: the slabs and length arrays belong to this pipeline (one per worker); a packet's bytes
 * are borrowed from the caller's batch until the next outbound()/inbound() call.
 * No-allocation contract: nothing per packet is allocated unless the log level is 5 (frame data,
 * at most LOG_LINES_PER_S lines per second per reason) or a datagram's length is not a multiple of
 * 16 (never true for WireGuard senders, which pad).
 */
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
  K_SEND_CTR,
  K_STATE,
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
  R,
  REASONS,
  REPLAY_WORDS,
  type SharedLayout,
  HS_COOKIE_KEY,
  HS_MAC1_KEY,
  HS_SECRETS,
  HSW_KEYS_SET,
  HSW_SECRET_SLOT,
  views,
} from '../ipc/layout.js'
import { HandshakeMacs } from '../protocol/macs.js'
import { MSG_CONFIRMED, MSG_HANDSHAKE, MSG_REKEY, MSG_STAGED, RingProducer, type RingBuffers } from '../ipc/ring.js'
import { LOCAL_PROVIDED, type DataplaneTables } from '../ipc/messages.js'
import { lookupRoute16 } from './route-table.js'
import { GATE_ANSWER, GATE_LIMITED, HandshakeGate, PATH_LIMITS } from './handshake-gate.js'
import { TokenBuckets } from './token-buckets.js'
import { replayCheckAndSet32, replayMaybeFresh } from './replay.js'
import { PROTO_ICMP, PROTO_TCP, PROTO_UDP, CT_EVICTED, CT_FULL } from './conntrack.js'
import { halfSipHash4 } from './siphash.js'
import { PATH_MAGIC, PATH_MAX, PATH_MIN } from '../protocol/path-msg.js'
import { ADMIT_ESTABLISHED, ADMIT_FRAGMENT_ORPHAN, EGRESS_DROP, EGRESS_OWN, EGRESS_REPLY, Firewall } from './firewall.js'
import { DENY_ROUTE_NOT_GRANTED, POLICY_MODE_ENFORCE, denyPolicy, denyReason, describeVerdict } from './policy.js'
import { OPEN_BAD_MAC, OPEN_OK, SEAL_COUNTER_LIMIT, open, paddedLength, seal } from './transport.js'
import {
  AEAD_TAG_SIZE,
  KEY_SIZE,
  NONCE_SIZE,
  MSG_COOKIE_REPLY,
  MSG_INITIATION,
  MSG_TRANSPORT,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_TIME_MS,
  RECV_COUNTER_LIMIT,
  SEND_COUNTER_REKEY,
  TRANSPORT_HEADER_SIZE,
  TRANSPORT_MIN_SIZE,
  INITIATION_SIZE,
  RESPONSE_SIZE,
  MSG_RESPONSE,
  COOKIE_REPLY_SIZE,
  UNDER_LOAD_HANDSHAKES_PER_S,
} from '../protocol/constants.js'

export const HEADROOM = TRANSPORT_HEADER_SIZE // room to encrypt in place

export function slotSizeFor(mtu: number): number {
  // Room for the header, the packet, up to 15 bytes of padding and the tag, rounded to a cache line.
  return (HEADROOM + mtu + 16 + AEAD_TAG_SIZE + 63) & ~63
}

/** -v 5 lines per second per reason (then one "N similar lines suppressed"). */
export const LOG_LINES_PER_S = 20
/** Ring slots that handshake messages other than answers to our initiations leave free. */
export const RING_ANSWER_RESERVE = 16
/** Packets per peer handed to control while they wait for a session (per worker). */
export const STAGED_PER_S = 2000
export const STAGED_BURST = 64
/**
 * Under load (WireGuard's shape: a busy handshake queue, or one busy within the last second): a worker is
 * under load while handshake messages with a valid mac1 arrive faster than its share of
 * UNDER_LOAD_HANDSHAKES_PER_S (burst: one second's worth), or after one found the ring to control full, and
 * for UNDER_LOAD_AFTER_MS after either. Then only messages with a valid mac2 go on to control; the others
 * get a cookie reply from the worker itself. (Not WireGuard's "queue 1/8 full": this ring also carries
 * packets waiting for a session, up to half of it, and those must not make handshakes cost a round trip.)
 */
export const UNDER_LOAD_AFTER_MS = 1000
/**
 * Handshake messages a worker remembers (by mac1) to drop verbatim repeats: a captured initiation or
 * response replayed, or a duplicated datagram. WireGuard never sends the same message twice (a retry is
 * a new message), and control would refuse the repeat after its Diffie-Hellman work (timestamp or no
 * pending handshake); here it costs neither control's work nor a token of the under-load rate. A repeat
 * that carries a valid mac2 for its source still passes (it proved it receives at that address); one
 * without gets a cookie reply. Only messages that went to control are remembered, in a two-way
 * set-associative table indexed by a keyed hash of mac1.
 */
export const RECENT_MACS = 1024
/** Log keys: the drop reasons, then the accepted verdicts. */
const LOG_ROUTED = REASONS.length
const LOG_DELIVERED = REASONS.length + 1
const LOG_KEYS = REASONS.length + 2
const LOG_KEY_NAMES: readonly string[] = [...REASONS, 'routed', 'delivered']
/**
 * Taking the replay lock: the lock guards a few dozen instructions, so a running holder lets go within a
 * few attempts, and an uncontended lock is taken at the first. After REPLAY_LOCK_SPINS attempts (a few
 * hundred microseconds) the holder is not running: preempted by the scheduler, or a worker that died in
 * it (until the supervisor frees it). Then the worker sleeps 1 ms at a time (Atomics.wait on the lock
 * word), REPLAY_LOCK_WAITS times at most, before it drops the packet (replay_lock_busy): a preempted
 * holder gets a time slice to finish, a dead one costs at most that per packet, never the thread.
 */
export const REPLAY_LOCK_SPINS = 1 << 14
export const REPLAY_LOCK_WAITS = 20

/** Takes keypair `kb`'s replay lock for `id` (bounded, see above); false when it stayed held. */
export function takeReplayLock(kpI32: Int32Array, kb: number, id: number): boolean {
  const w = kb + K_LOCK
  for (let spins = 0; spins < REPLAY_LOCK_SPINS; spins++) if (Atomics.compareExchange(kpI32, w, 0, id) === 0) return true
  for (let waits = 0; waits < REPLAY_LOCK_WAITS; waits++) {
    const held = Atomics.load(kpI32, w)
    if (held !== 0) Atomics.wait(kpI32, w, held, 1)
    if (Atomics.compareExchange(kpI32, w, 0, id) === 0) return true
  }
  return false
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
  /** Valid-mac1 handshake messages per second (all workers) over which workers are under load; Infinity: never (tests of the gate alone). */
  underLoadPerS?: number
}

type ViewCache = Array<Array<[Uint8Array, Uint8Array] | undefined>>

function rd32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0
}
/*
 * Numbers above 2^30 (IPv4 addresses, receiver indices) do not fit V8's small integers: passed to a
 * function that is not inlined they are boxed, an allocation per packet. So addresses travel as two
 * 16-bit halves and header words are written byte by byte inline.
 */

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
  /** The time as `now`, in shared form for the token buckets (setClock writes both; see TokenBuckets). */
  private readonly clock = new Float64Array([this.now])
  nowS = 0

  private readonly v: LayoutViews
  private readonly ring: RingProducer
  private readonly hsGate: HandshakeGate
  /** Path datagrams' own gate (PATH_LIMITS): a flood of them never takes the handshakes' budget. */
  private readonly pathGate: HandshakeGate
  private readonly macs = new HandshakeMacs()
  /** Valid-mac1 handshake messages this worker may see per second before it counts as under load. */
  private readonly hsLoad: TokenBuckets
  private underLoadUntil = -Infinity
  /** mac1 of the last handshake messages that went to control: RECENT_MACS / 2 sets of two ways of four words (see seen()). */
  private readonly recentMacs = new Int32Array(RECENT_MACS * 4)
  /** Per set, the way remember() writes next. */
  private readonly macNext = new Uint8Array(RECENT_MACS / 2)
  private readonly macWords = new Int32Array(4)
  private readonly macKey = crypto.getRandomValues(new Int32Array(2))
  private readonly loadRules: boolean
  /** Cookie replies made by inbound(): cCount of them, slot i at cSlab[64 i], to cAddrs[2i] (ip), [2i+1] (port). */
  readonly cSlab: Uint8Array
  readonly cLens: Int32Array
  readonly cAddrs: Uint32Array
  cCount = 0
  /** Per peer: packets handed to control while they wait for a session. */
  private readonly staged: TokenBuckets
  private readonly fw: Firewall
  private readonly mtu: number
  private readonly cBase: number
  private readonly rBase: number
  private readonly epochMs: number
  private readonly sendKeys: Uint8Array[] = new Array(KP_SLOTS)
  private readonly recvKeys: Uint8Array[] = new Array(KP_SLOTS)
  private readonly oNonce = new Uint8Array(NONCE_SIZE)
  private readonly iNonce = new Uint8Array(NONCE_SIZE)
  private readonly rekeySignalled: Float64Array
  private readonly oViews: ViewCache = []
  private readonly iViews: ViewCache = []
  private readonly post: (msg: unknown) => void
  private readonly logWindow = new Float64Array(LOG_KEYS)
  private readonly logCount = new Int32Array(LOG_KEYS)
  private readonly logSuppressed = new Int32Array(LOG_KEYS)
  /** Policy counters of the current tables (per-worker row; see PolicyTables.policyCounters). */
  private pcSab?: SharedArrayBuffer
  private pc: Float64Array<ArrayBufferLike> = new Float64Array(1)
  private pcBase = 0
  private readonly id: number
  /** This worker's mark in a held K_LOCK (worker id + 1; 0 = free). */
  private readonly lockId: number

  constructor(o: PipelineOptions) {
    this.v = views(o.layout)
    this.ring = new RingProducer(o.ring)
    this.hsGate = new HandshakeGate(this.v.kpI32, this.clock)
    this.pathGate = new HandshakeGate(this.v.kpI32, this.clock, PATH_LIMITS)
    const perS = o.underLoadPerS ?? UNDER_LOAD_HANDSHAKES_PER_S
    this.loadRules = Number.isFinite(perS)
    const share = this.loadRules ? Math.max(1, Math.floor(perS / o.layout.workers)) : 1
    this.hsLoad = new TokenBuckets(1, share, share, this.clock)
    this.cSlab = new Uint8Array(COOKIE_REPLY_SIZE * o.batch)
    this.cLens = new Int32Array(o.batch)
    this.cAddrs = new Uint32Array(2 * o.batch)
    this.staged = new TokenBuckets(o.layout.maxPeers, STAGED_PER_S, STAGED_BURST, this.clock)
    this.id = o.id
    this.lockId = o.id + 1
    this.fw = new Firewall(o.conntrack, o.id)
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
      this.sendKeys[k] = this.v.kpKeys.subarray(k * KEY_BYTES_PER_SLOT, k * KEY_BYTES_PER_SLOT + KEY_SIZE)
      this.recvKeys[k] = this.v.kpKeys.subarray(k * KEY_BYTES_PER_SLOT + KEY_SIZE, k * KEY_BYTES_PER_SLOT + 2 * KEY_SIZE)
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
    this.clock[0] = nowMs
    this.nowS = Math.floor((nowMs - this.epochMs) / 1000)
    if (this.tables.exitNode || this.tables.policy.mode === POLICY_MODE_ENFORCE) this.fw.sweep(this.nowS)
    if (this.tables.policyCounters !== this.pcSab) {
      // New tables (start or reload): this worker's row of the counters created with them.
      this.pcSab = this.tables.policyCounters
      this.pc = new Float64Array(this.pcSab)
      this.pcBase = this.id * (2 * this.tables.policy.policies + 1)
    }
    if (this.logLevel >= 5) for (let k = 0; k < LOG_KEYS; k++) if (this.logSuppressed[k] > 0) this.logAllowed(k)
  }

  /**
   * -v 5 only: may a line for `key` (a reason, LOG_ROUTED or LOG_DELIVERED) be posted now? At most
   * LOG_LINES_PER_S per second per key, so no sender can make per-packet lines at line rate; the
   * lines held back are reported once, as a count, when the key's next second starts.
   */
  private logAllowed(key: number): boolean {
    if (this.now - this.logWindow[key] >= 1000) {
      const held = this.logSuppressed[key]
      this.logWindow[key] = this.now
      this.logCount[key] = 0
      this.logSuppressed[key] = 0
      if (held > 0) this.post({ t: 'log', level: 'info', msg: `${held} similar lines suppressed (${LOG_KEY_NAMES[key]})` })
    }
    if (this.logCount[key] < LOG_LINES_PER_S) {
      this.logCount[key]++
      return true
    }
    this.logSuppressed[key]++
    return false
  }

  private log5(key: number): boolean {
    return this.logLevel >= 5 && this.logAllowed(key)
  }

  private slotViews(cache: ViewCache, slab: Uint8Array, i: number, len: number): [Uint8Array, Uint8Array] {
    const row = cache[i]
    const k = len >> 4
    let e = row[k]
    if (e === undefined) {
      const p = i * this.slot + HEADROOM
      e = [slab.subarray(p, p + len), slab.subarray(p + len, p + len + AEAD_TAG_SIZE)]
      row[k] = e
    }
    return e
  }

  /** Counts one packet under `reason`: a drop, or an event (EVENT_REASONS in src/ipc/layout.ts). */
  private countReason(reason: number): void {
    this.v.reasons[this.rBase + reason]++
  }

  /** -v 5: one line per packet decision. Only here do we build objects per packet. */
  private flowLog(dir: 'in' | 'out', peer: number, b: Uint8Array, p: number, len: number, verdict: string): void {
    this.noteFlow(b, p)
    this.postFlow(dir, peer, len, verdict)
  }

  // The inner packet's fields, noted before it is sealed in place (the outbound log is written after).
  private fProto = 0
  private fSrc = 0
  private fDst = 0
  private fSport = 0
  private fDport = 0

  private noteFlow(b: Uint8Array, p: number): void {
    const proto = b[p + 9]
    const ihl = (b[p] & 15) * 4
    const hasPorts = proto === PROTO_TCP || proto === PROTO_UDP
    this.fProto = proto
    this.fSrc = rd32(b, p + 12)
    this.fDst = rd32(b, p + 16)
    this.fSport = hasPorts ? (b[p + ihl] << 8) | b[p + ihl + 1] : proto === PROTO_ICMP ? b[p + ihl] : 0
    this.fDport = hasPorts ? (b[p + ihl + 2] << 8) | b[p + ihl + 3] : proto === PROTO_ICMP ? (b[p + ihl + 4] << 8) | b[p + ihl + 5] : 0
  }

  private postFlow(dir: 'in' | 'out', peer: number, len: number, verdict: string): void {
    this.post({
      t: 'flow',
      dir,
      peer,
      proto: this.fProto,
      src: this.fSrc,
      dst: this.fDst,
      sport: this.fSport,
      dport: this.fDport,
      len,
      verdict,
    })
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
        this.countReason(R.not_ipv4)
        continue
      }
      const peer = lookupRoute16(t.routeChild, t.routeVal, (oSlab[p + 16] << 8) | oSlab[p + 17], (oSlab[p + 18] << 8) | oSlab[p + 19])
      if (peer < 0) {
        this.countReason(R.no_route)
        if (this.log5(R.no_route)) this.flowLog('out', -1, oSlab, p, len, 'drop no_route')
        continue
      }
      const cb = this.cBase + peer * C_PEER_FIELDS
      // Reply-only, judged by ingress: our own traffic, or a reply to a flow this peer started.
      const verdict = this.fw.egress(oSlab, p, len, peer, t, this.nowS)
      if (verdict === EGRESS_DROP) {
        this.countReason(R.unsolicited)
        if (this.log5(R.unsolicited)) this.flowLog('out', peer, oSlab, p, len, 'drop unsolicited (only replies to peer flows may leave)')
        continue
      }
      if (verdict === EGRESS_REPLY) {
        counters[cb + C_FROM_LAN_BYTES] += len
        if (this.fw.lastFragTrack === CT_EVICTED) this.countReason(R.conntrack_evicted)
        else if (this.fw.lastFragTrack === CT_FULL) this.countReason(R.conntrack_full)
      } else if (verdict === EGRESS_OWN && t.policy.mode === POLICY_MODE_ENFORCE) {
        // The receiver judges our flows; we remember them so that its replies pass our admit().
        const r = this.fw.trackOwn(oSlab, p, len, peer, this.nowS)
        if (r === CT_EVICTED) this.countReason(R.conntrack_evicted)
        else if (r === CT_FULL) this.countReason(R.conntrack_full)
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
        // Packets waiting for a session may fill only half the ring: the handshake that ends the wait
        // (and other peers' handshakes) must still find room under a flood of them.
        // Each peer's waiting packets are also paced (control keeps only the last 128 anyway), so traffic
        // toward one peer that is down cannot crowd out the packets that start other peers' handshakes.
        let why: number = R.staged
        if (!this.staged.take(peer)) why = R.staged_limited
        else if (!this.ring.push(MSG_STAGED, oSlab, p, len, 0, 0, peer, 0, this.ring.capacity >> 1)) why = R.ring_full
        this.countReason(why)
        if (this.log5(why))
          this.flowLog(
            'out',
            peer,
            oSlab,
            p,
            len,
            why === R.staged ? 'queued: waiting for handshake' : `drop ${REASONS[why]} (waiting for handshake)`,
          )
        continue
      }
      // Sealing encrypts in place: what the flow log says is read from the packet before.
      if (this.logLevel >= 5) this.noteFlow(oSlab, p)
      const padded = paddedLength(len, MTU)
      for (let j = len; j < padded; j++) oSlab[p + j] = 0
      const sv =
        (padded & 15) === 0
          ? this.slotViews(this.oViews, oSlab, i, padded)
          : [oSlab.subarray(p, p + padded), oSlab.subarray(p + padded, p + padded + AEAD_TAG_SIZE)]
      const dlen = seal(kpI32, this.sendKeys[kp], kp, oSlab, i * SLOT, padded, sv[0], sv[1], this.oNonce)
      if (dlen < 0) {
        // The keypair reached its counter limit, or was retired before or during encryption.
        const why = dlen === SEAL_COUNTER_LIMIT ? R.counter_exhausted : R.expired
        this.countReason(why)
        if (this.log5(why)) this.postFlow('out', peer, len, `drop ${REASONS[why]}`)
        continue
      }
      if (
        (Atomics.load(kpI32, kb + K_SEND_CTR) >>> 0 >= SEND_COUNTER_REKEY ||
          (kpI32[kb + K_INITIATOR] === 1 && now - kpF64[kp * KF_FIELDS + KF_CREATED_MS] >= REKEY_AFTER_TIME_MS)) &&
        now - this.rekeySignalled[peer] > 1000
      ) {
        this.rekeySignalled[peer] = now
        this.ring.push(MSG_REKEY, oSlab, 0, 0, 0, 0, peer, kp)
      }
      if (this.log5(LOG_ROUTED)) this.postFlow('out', peer, len, 'routed')
      sLens[i] = dlen
      oAddrs[2 * i] = Math.floor(endpoint / 65536) >>> 0
      oAddrs[2 * i + 1] = endpoint % 65536
      counters[cb + C_TX_BYTES] += len
      counters[cb + C_TX_PKTS]++
      const pf = peer * PF_FIELDS
      peerF64[pf + PF_LAST_TX_DATA] = now
      if (peerF64[pf + PF_FIRST_UNANSWERED] <= peerF64[pf + PF_LAST_RX_ANY]) peerF64[pf + PF_FIRST_UNANSWERED] = now
      peerF64[pf + PF_LAST_TX_ANY] = now
      sends++
    }
    return sends
  }

  /** Authenticates and checks n datagrams in iSlab; returns how many packets go to the TUN (wLens > 0). */
  inbound(n: number): number {
    const { iSlab, iLens, wLens, iAddrs, tables: t, slot: SLOT, now } = this
    const { kpI32, kpF64, kpReplay, peerF64, counters } = this.v
    let writes = 0
    this.cCount = 0
    for (let i = 0; i < n; i++) {
      wLens[i] = 0
      const len = iLens[i]
      const b = i * SLOT
      const type = len > 0 ? iSlab[b] : 0
      if (type === PATH_MAGIC && len >= PATH_MIN && len <= PATH_MAX && iSlab[b + 1] === 0x45) {
        // A path datagram (a peer's probe or its answer, a relay's bind answer: src/protocol/path-msg.ts):
        // authenticated by control, after a gate of its own (PATH_LIMITS): a flood of them, which needs no
        // key at all, can neither keep control busy nor spend what the handshakes may use.
        this.countReason(R.path_msgs)
        if (this.pathGate.admit(iSlab, b, type, iAddrs[2 * i]) === GATE_LIMITED) this.countReason(R.path_limited)
        else if (!this.ring.push(MSG_HANDSHAKE, iSlab, b, len, iAddrs[2 * i], iAddrs[2 * i + 1], -1, 0, RING_ANSWER_RESERVE))
          this.countReason(R.ring_full)
        continue
      }
      if (len < 4 || iSlab[b + 1] !== 0 || iSlab[b + 2] !== 0 || iSlab[b + 3] !== 0) {
        this.countReason(R.malformed)
        continue
      }
      if (type !== MSG_TRANSPORT) {
        // Only handshake messages of their exact size reach control's ring (junk cannot fill it).
        const want = type === MSG_INITIATION ? INITIATION_SIZE : type === MSG_RESPONSE ? RESPONSE_SIZE : COOKIE_REPLY_SIZE
        if (type >= MSG_INITIATION && type <= MSG_COOKIE_REPLY && len === want) {
          this.countReason(R.handshake_msgs)
          // Initiations and responses: mac1 first, then under load mac2 (or a cookie reply from here).
          if (type !== MSG_COOKIE_REPLY && !this.macsAdmit(b, len, i)) continue
          const gate = this.hsGate.admit(iSlab, b, type, iAddrs[2 * i])
          // The answer to our own initiation may use the whole ring; other handshake messages leave it a
          // little room (and staged packets half of it).
          const reserve = gate === GATE_ANSWER ? 0 : RING_ANSWER_RESERVE
          if (gate === GATE_LIMITED) this.countReason(R.handshake_limited)
          else if (!this.ring.push(MSG_HANDSHAKE, iSlab, b, len, iAddrs[2 * i], iAddrs[2 * i + 1], -1, 0, reserve)) {
            this.countReason(R.ring_full)
            if (this.loadRules) this.underLoadUntil = this.now + UNDER_LOAD_AFTER_MS
          }
        } else this.countReason(R.malformed)
        continue
      }
      if (len < TRANSPORT_MIN_SIZE) {
        this.countReason(R.malformed)
        continue
      }
      const idxLo = iSlab[b + 4] | (iSlab[b + 5] << 8)
      const index = idxLo | (iSlab[b + 6] << 16) | (iSlab[b + 7] << 24)
      const kp = idxLo & KP_MASK
      const kb = kp * K_FIELDS
      // State and index read once; open() re-checks both after decryption.
      const state = Atomics.load(kpI32, kb + K_STATE)
      if (state === 0 || Atomics.load(kpI32, kb + K_INDEX) !== index) {
        this.countReason(R.bad_index)
        continue
      }
      const kf = kp * KF_FIELDS
      if (now - kpF64[kf + KF_CREATED_MS] >= REJECT_AFTER_TIME_MS) {
        this.countReason(R.expired)
        continue
      }
      const ctrLo = (iSlab[b + 8] | (iSlab[b + 9] << 8) | (iSlab[b + 10] << 16) | (iSlab[b + 11] << 24)) >>> 0
      const ctrHi = (iSlab[b + 12] | (iSlab[b + 13] << 8) | (iSlab[b + 14] << 16) | (iSlab[b + 15] << 24)) >>> 0
      const rb = kp * REPLAY_WORDS
      if (ctrHi >= RECV_COUNTER_LIMIT / 4294967296 || !replayMaybeFresh(kpReplay, rb, kpF64, kf + KF_REPLAY_LAST, ctrHi, ctrLo)) {
        this.countReason(R.replay)
        if (this.log5(R.replay))
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop replay (counter ${ctrHi * 4294967296 + ctrLo} already seen or too old) peer_slot=${kpI32[kb + K_PEER]}`,
          })
        continue
      }
      const clen = len - TRANSPORT_MIN_SIZE
      const nonce = this.iNonce
      for (let j = 0; j < 8; j++) nonce[4 + j] = iSlab[b + 8 + j]
      const p = b + HEADROOM
      const sv =
        (clen & 15) === 0
          ? this.slotViews(this.iViews, iSlab, i, clen)
          : [iSlab.subarray(p, p + clen), iSlab.subarray(p + clen, p + clen + AEAD_TAG_SIZE)]
      const opened = open(kpI32, this.recvKeys[kp], kb, index, sv[0], sv[1], nonce)
      if (opened !== OPEN_OK) {
        // A bad tag, or the keypair was retired during decryption (its key may have been zero).
        const why = opened === OPEN_BAD_MAC ? R.bad_mac : R.expired
        this.countReason(why)
        if (this.log5(why))
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop ${REASONS[why]} from ${iAddrs[2 * i] >>> 24}.${(iAddrs[2 * i] >>> 16) & 255}.${(iAddrs[2 * i] >>> 8) & 255}.${iAddrs[2 * i] & 255}:${iAddrs[2 * i + 1]}`,
          })
        continue
      }
      // The replay lock, bounded (takeReplayLock): uncontended in practice, one worker per flow.
      if (Atomics.compareExchange(kpI32, kb + K_LOCK, 0, this.lockId) !== 0 && !takeReplayLock(kpI32, kb, this.lockId)) {
        this.countReason(R.replay_lock_busy)
        if (this.log5(R.replay_lock_busy))
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop replay_lock_busy (held by worker ${Atomics.load(kpI32, kb + K_LOCK) - 1}) peer_slot=${kpI32[kb + K_PEER]}`,
          })
        continue
      }
      const fresh = replayCheckAndSet32(kpReplay, rb, kpF64, kf + KF_REPLAY_LAST, ctrHi, ctrLo)
      Atomics.store(kpI32, kb + K_LOCK, 0)
      if (!fresh) {
        this.countReason(R.replay)
        if (this.log5(R.replay))
          this.post({
            t: 'log',
            level: 'info',
            msg: `inbound: verdict=drop replay (counter ${ctrHi * 4294967296 + ctrLo}) peer_slot=${kpI32[kb + K_PEER]}`,
          })
        continue
      }
      const peer = kpI32[kb + K_PEER]
      if (state === KP_RECV_ONLY) this.promote(peer, kp)
      const pf = peer * PF_FIELDS
      const ep = iAddrs[2 * i] * 65536 + iAddrs[2 * i + 1]
      // Roaming (authenticated packets only), except back to the relay while the direct path delivers.
      if (ep !== peerF64[pf + PF_RELAY_EP]) {
        peerF64[pf + PF_LAST_RX_DIRECT] = now
        if (peerF64[pf + PF_ENDPOINT] !== ep) peerF64[pf + PF_ENDPOINT] = ep
      } else if (peerF64[pf + PF_ENDPOINT] !== ep) {
        if (now - peerF64[pf + PF_LAST_RX_DIRECT] < DIRECT_HOLD_MS) this.countReason(R.relay_held)
        else peerF64[pf + PF_ENDPOINT] = ep
      }
      peerF64[pf + PF_LAST_RX_ANY] = now
      const cb = this.cBase + peer * C_PEER_FIELDS
      counters[cb + C_RX_PKTS]++
      if (clen === 0) {
        this.countReason(R.keepalive)
        continue
      }
      if (clen < 20 || iSlab[p] >> 4 !== 4) {
        this.countReason(R.not_ipv4)
        continue
      }
      const tot = (iSlab[p + 2] << 8) | iSlab[p + 3]
      if (tot < 20 || tot > clen) {
        this.countReason(R.malformed)
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
        this.countReason(R.not_allowed)
        if (this.log5(R.not_allowed)) this.flowLog('in', peer, iSlab, p, tot, 'drop not_allowed (source not allowed for this peer)')
        continue
      }
      const where = lookupRoute16(t.localChild, t.localVal, dHi, dLo)
      if (where < 0) {
        this.countReason(R.not_for_us)
        if (this.log5(R.not_for_us)) this.flowLog('in', peer, iSlab, p, tot, 'drop not_for_us')
        continue
      }
      if (t.policy.mode === POLICY_MODE_ENFORCE) {
        const v = this.fw.admit(iSlab, p, tot, peer, t.policy, t.policyGen, this.nowS)
        if (v === ADMIT_FRAGMENT_ORPHAN) {
          this.countReason(R.fragment_orphan)
          if (this.log5(R.fragment_orphan))
            this.flowLog('in', peer, iSlab, p, tot, 'drop fragment_orphan (a later fragment whose first fragment was not admitted)')
          continue
        }
        if (v < 0) {
          const why = denyReason(v) === DENY_ROUTE_NOT_GRANTED ? R.policy_route_not_granted : R.policy_no_policy
          this.countReason(why)
          const near = denyPolicy(v)
          if (this.pcBase + 2 * t.policy.policies < this.pc.length)
            this.pc[this.pcBase + (near >= 0 ? t.policy.policies + near : 2 * t.policy.policies)]++
          if (this.log5(why)) this.flowLog('in', peer, iSlab, p, tot, describeVerdict(t.policyLabels, v))
          continue
        }
        if (v !== ADMIT_ESTABLISHED && this.pcBase + v < this.pc.length) this.pc[this.pcBase + v]++
        if (this.fw.lastTrack === CT_EVICTED) this.countReason(R.conntrack_evicted)
        else if (this.fw.lastTrack === CT_FULL) this.countReason(R.conntrack_full)
        if (where === LOCAL_PROVIDED) counters[cb + C_TO_LAN_BYTES] += tot
      } else if (where === LOCAL_PROVIDED) {
        const tracked = this.fw.track(iSlab, p, peer, this.nowS)
        if (tracked === CT_EVICTED) this.countReason(R.conntrack_evicted)
        else if (tracked === CT_FULL) this.countReason(R.conntrack_full)
        counters[cb + C_TO_LAN_BYTES] += tot
      }
      if (this.log5(LOG_DELIVERED)) this.flowLog('in', peer, iSlab, p, tot, where === LOCAL_PROVIDED ? 'routed to LAN' : 'delivered')
      counters[cb + C_RX_BYTES] += tot
      peerF64[pf + PF_LAST_RX_DATA] = now
      wLens[i] = tot
      writes++
    }
    return writes
  }

  /**
   * mac1 and, under load, mac2 of the initiation or response iSlab[b, b+len) from datagram i's address:
   * false when it stops here (bad mac1: dropped; no valid mac2 under load: answered with a cookie reply).
   */
  private macsAdmit(b: number, len: number, i: number): boolean {
    const hs = this.v.handshake
    const words = this.v.hsWords
    if (Atomics.load(words, HSW_KEYS_SET) !== 1 || !this.macs.mac1Valid(hs, HS_MAC1_KEY, this.iSlab, b, len)) {
      this.countReason(R.bad_mac1)
      return false
    }
    const repeat = this.seen(b, len)
    if (repeat && !this.mac2Of(b, len, i)) {
      // A copy of a message control already had: no work, no token. Its source gets a cookie reply, so a
      // peer whose message an observer raced from another address retries with a mac2 of its own.
      this.countReason(R.handshake_repeat)
      this.cookieTo(b, len, i)
      return false
    }
    const now = this.now
    if (this.loadRules && !this.hsLoad.take(0)) this.underLoadUntil = now + UNDER_LOAD_AFTER_MS
    if (now < this.underLoadUntil) {
      const ip = this.iAddrs[2 * i]
      const secret = HS_SECRETS + 32 * Atomics.load(words, HSW_SECRET_SLOT)
      if (!this.macs.mac2Valid(hs, secret, ip >>> 16, ip & 0xffff, this.iAddrs[2 * i + 1], this.iSlab, b, len)) {
        this.cookieTo(b, len, i)
        return false
      }
    }
    // Only a message that goes to control is remembered: a copy answered with a cookie reply takes
    // nothing from the original that follows it.
    if (!repeat) this.remember(b, len)
    return true
  }

  /** Stages a cookie reply to the handshake message iSlab[b, b+len) for datagram i's address (if the batch has room). */
  private cookieTo(b: number, len: number, i: number): void {
    const k = this.cCount
    if (k >= this.cLens.length) return
    const hs = this.v.handshake
    const ip = this.iAddrs[2 * i]
    const port = this.iAddrs[2 * i + 1]
    const secret = HS_SECRETS + 32 * Atomics.load(this.v.hsWords, HSW_SECRET_SLOT)
    const reply = this.macs.cookieReply(hs, HS_COOKIE_KEY, hs, secret, ip >>> 16, ip & 0xffff, port, this.iSlab, b, len)
    const o = k * COOKIE_REPLY_SIZE
    for (let j = 0; j < COOKIE_REPLY_SIZE; j++) this.cSlab[o + j] = reply[j]
    this.cLens[k] = COOKIE_REPLY_SIZE
    this.cAddrs[2 * k] = ip
    this.cAddrs[2 * k + 1] = port
    this.cCount = k + 1
    this.countReason(R.cookie_sent)
  }

  /**
   * Whether the message iSlab[b, b+len) carries a valid mac2 for datagram i's address. A repeat with one
   * passes on: the same message sent again with the cookie we gave its source (the vectors' retry).
   */
  private mac2Of(b: number, len: number, i: number): boolean {
    const s = this.iSlab
    let any = 0
    for (let j = b + len - 16; j < b + len; j++) any |= s[j]
    if (any === 0) return false
    const ip = this.iAddrs[2 * i]
    const secret = HS_SECRETS + 32 * Atomics.load(this.v.hsWords, HSW_SECRET_SLOT)
    return this.macs.mac2Valid(this.v.handshake, secret, ip >>> 16, ip & 0xffff, this.iAddrs[2 * i + 1], s, b, len)
  }

  /**
   * The recent-mac1 set of the handshake message iSlab[b, b+len): a keyed hash of its mac1 (mac1 covers
   * every byte before it), so that no one can pick messages that share a set.
   */
  private macSet(b: number, len: number): number {
    const s = this.iSlab
    const m = b + len - 32
    const w = this.macWords
    for (let j = 0; j < 4; j++) w[j] = s[m + 4 * j] | (s[m + 4 * j + 1] << 8) | (s[m + 4 * j + 2] << 16) | (s[m + 4 * j + 3] << 24)
    return halfSipHash4(this.macKey[0], this.macKey[1], 4, w[0], w[1], w[2], w[3]) & (RECENT_MACS / 2 - 1)
  }

  /** Whether the handshake message iSlab[b, b+len) repeats one of the last RECENT_MACS that went to control. */
  private seen(b: number, len: number): boolean {
    const k = this.macSet(b, len) * 8
    const r = this.recentMacs
    const w = this.macWords
    return (
      (r[k] === w[0] && r[k + 1] === w[1] && r[k + 2] === w[2] && r[k + 3] === w[3]) ||
      (r[k + 4] === w[0] && r[k + 5] === w[1] && r[k + 6] === w[2] && r[k + 7] === w[3])
    )
  }

  /** Remembers the handshake message iSlab[b, b+len) in its set (two ways; the older one goes). */
  private remember(b: number, len: number): void {
    const set = this.macSet(b, len)
    const k = set * 8 + 4 * this.macNext[set]
    this.macNext[set] ^= 1
    const r = this.recentMacs
    const w = this.macWords
    r[k] = w[0]
    r[k + 1] = w[1]
    r[k + 2] = w[2]
    r[k + 3] = w[3]
  }

  /**
   * The initiator used our receive-only `next` keypair: it becomes ours for sending too. P_CUR_KP is
   * shared with control (see the table in src/ipc/layout.ts): the worker only CASes it from what it
   * held before the promotion, so a later choice of control's is never overwritten, and takes it
   * back when control retired the keypair meanwhile. Control confirms from K_STATE (the ring message
   * may be lost) and then publishes P_CUR_KP itself.
   */
  private promote(peer: number, kp: number): void {
    const { kpI32, peerI32 } = this.v
    const kb = kp * K_FIELDS
    const cur = peer * P_FIELDS + P_CUR_KP
    const before = Atomics.load(peerI32, cur)
    if (Atomics.compareExchange(kpI32, kb + K_STATE, KP_RECV_ONLY, KP_VALID) !== KP_RECV_ONLY) return
    if (Atomics.compareExchange(peerI32, cur, before, kp) === before && Atomics.load(kpI32, kb + K_STATE) !== KP_VALID)
      Atomics.compareExchange(peerI32, cur, kp, before)
    this.ring.push(MSG_CONFIRMED, this.iSlab, 0, 0, 0, 0, peer, kp)
  }

  countTunWriteErrors(n: number): void {
    this.v.reasons[this.rBase + R.tun_write_error] += n
  }

  /** Datagrams the UDP socket did not take (its buffer stayed full, or the destination was unreachable). */
  countSendErrors(n: number): void {
    this.v.reasons[this.rBase + R.udp_send_error] += n
  }
}
