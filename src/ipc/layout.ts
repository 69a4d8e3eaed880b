/**
 * Shared memory between the control thread and the data-plane workers.
 *
 * Everything here is a SharedArrayBuffer carved into typed arrays at fixed offsets. Each word has
 * the writers below; where two sides write one word, the table says how a conflict ends.
 *
 *   words                          writers             conflicts
 *   G_* (global)                   control             -
 *   K_INDEX K_REMOTE K_PEER        control             - (written before K_STATE publishes the slot;
 *   K_INITIATOR KF_CREATED_MS keys                       a slot is reused only after the quarantine)
 *   K_STATE                        control (store),    workers only CAS KP_RECV_ONLY -> KP_VALID (the
 *                                  workers (CAS)       initiator spoke on our `next`). Control stores 0
 *                                                      (retire) or publishes a slot that was 0: a
 *                                                      retirement wins over a promotion in either order,
 *                                                      and no promotion can land on a retired slot.
 *   K_SEND_CTR                     both (Atomics.add)  - (install resets it before publishing)
 *   K_LOCK                         workers (CAS),      the replay-window lock: 0 free, else the holder's
 *                                  supervisor (CAS)    worker id + 1. A waiter spins a bounded number of
 *                                                      times, then drops the packet (replay_lock_busy).
 *                                                      The supervisor CASes a dead worker's id back to 0
 *                                                      (releaseReplayLocks) before restarting it.
 *   KF_REPLAY_LAST, replay bitmap  workers (K_LOCK)    control clears them before publishing a slot
 *   P_CUR_KP                       both, with CAS      control stores the keypair it made current
 *                                                      (completeAsInitiator, confirm: its own view wins,
 *                                                      and a worker's pending promotion is re-published
 *                                                      by confirm). When it retires a keypair the word
 *                                                      may hold, it CASes: the expired current -> -1, a
 *                                                      `next` a worker published before control saw it
 *                                                      -> control's current (Sessions.expire and
 *                                                      installAsResponder), so a promotion made in the
 *                                                      same tick survives. dropAll stores -1 after
 *                                                      retiring every keypair; reset only on a free
 *                                                      slot. A worker that promoted `next` CASes from
 *                                                      the value it read before the promotion (a stale
 *                                                      worker never overwrites a newer choice of
 *                                                      control's), then re-reads K_STATE and takes its
 *                                                      CAS back when control retired the slot meanwhile.
 *   PF_ENDPOINT                    both, last wins     a Float64 (no CAS). Workers write the source of
 *                                                      each authenticated transport packet when it
 *                                                      differs (roaming); control the source of an
 *                                                      authenticated handshake, the configured address
 *                                                      when none is known, or 0 when the admin edits
 *                                                      Endpoint. Control may overwrite a roam that a
 *                                                      worker saw moments earlier with the handshake's
 *                                                      (older) source. Accepted: a worker rewrites the
 *                                                      word at the peer's next authenticated packet
 *                                                      (its data, or the keepalive that confirms a
 *                                                      session it initiated), so a roam is lost only
 *                                                      until the peer sends again.
 *   PF_RELAY_EP                    control             workers only read it
 *   PF_LAST_RX_DIRECT              workers             last wins (all write "now")
 *   PF_LAST_RX_DATA PF_LAST_RX_ANY workers             last wins (all write "now")
 *   PF_LAST_TX_DATA PF_LAST_TX_ANY workers, control    last wins (all write "now"; control: noteSent)
 *   PF_FIRST_UNANSWERED            workers, control    set to "now" only when not after PF_LAST_RX_ANY
 *   tableAcks                      one worker per word control only reads them: a change is applied
 *                                                      once every worker runs with its tables' gen
 *   counters, reasons              one worker per row  control only reads them, and zeroes a peer
 *                                                      slot's counters (reset) when the slot is reused,
 *                                                      after the old peer's keypairs were retired
 *   connection table (conntrack)   see src/dataplane/conntrack.ts (per-entry sequence locks)
 *   handshake: keys, HSW_KEYS_SET  control (start)     - (written before the workers start)
 *   handshake: cookie secrets,     control             double-buffered: control writes the slot not in
 *   HSW_SECRET_SLOT, HSF_SECRET_MS                     use, then stores HSW_SECRET_SLOT; workers read the
 *                                                      slot word, then that secret (SharedCookieSecret)
 *
 * Rules:
 *  - A keypair slot is published by writing its fields and keys first, then Atomics.store of
 *    K_STATE. Workers read K_INDEX and K_STATE once before crypto (src/dataplane/transport.ts) and
 *    re-check both after encryption and after decryption.
 *  - Slots are recycled only after KEYPAIR_QUARANTINE_MS, far longer than a worker holds one.
 */
import type { CookieChecker } from '../protocol/noise.js'

export const LAYOUT_VERSION = 10

// ---- keypairs ----
export const KP_SLOTS = 4096
export const KP_MASK = KP_SLOTS - 1
export const KEYPAIR_QUARANTINE_MS = 10_000
export const K_STATE = 0 // 0 (not in use) | KP_RECV_ONLY | KP_VALID
export const K_INDEX = 1 // our receiver index (low bits = slot)
export const K_REMOTE = 2 // the peer's receiver index
export const K_PEER = 3 // peer slot
export const K_SEND_CTR = 4 // next send counter (uint32, Atomics.add)
export const K_LOCK = 5 // replay-window lock: 0 free, else the holder's worker id + 1
export const K_INITIATOR = 6
export const K_FIELDS = 8
export const KF_CREATED_MS = 0
export const KF_REPLAY_LAST = 1 // highest accepted receive counter
export const KF_FIELDS = 2
export const KP_RECV_ONLY = 1 // responder's "next" keypair: receive only until the initiator speaks
export const KP_VALID = 2
export const KEY_BYTES_PER_SLOT = 64 // send key [0,32), receive key [32,64)
export const REPLAY_WORDS = 128 // 4096 bits of which 4064 form the window (>= 2048 required)

// ---- peers ----
export const P_CUR_KP = 0 // keypair slot used for sending, -1 none
export const P_FIELDS = 4
export const PF_ENDPOINT = 0 // ip * 65536 + port, 0 = unknown
export const PF_LAST_RX_DATA = 1
export const PF_LAST_TX_DATA = 2
export const PF_LAST_RX_ANY = 3 // any authenticated packet, keepalives included
export const PF_LAST_TX_ANY = 4
/** The first data we sent after the peer's last authenticated packet (WireGuard's new-handshake timer starts there). */
export const PF_FIRST_UNANSWERED = 5
/**
 * The relay address control gave this peer (ip * 65536 + port, 0 = none; issue 20). A worker does not
 * roam the endpoint to it while the direct path delivered something within DIRECT_HOLD_MS: packets still
 * in flight on the relay after a switch to direct cannot flap the endpoint back.
 */
export const PF_RELAY_EP = 6
/** When an authenticated packet last came from anywhere but PF_RELAY_EP (ms). */
export const PF_LAST_RX_DIRECT = 7
export const PF_FIELDS = 8
/** How long a direct path that delivered holds the endpoint against the relay (the 15 s). */
export const DIRECT_HOLD_MS = 15_000

// ---- per-worker counters ----
export const C_RX_BYTES = 0
export const C_TX_BYTES = 1
export const C_RX_PKTS = 2
export const C_TX_PKTS = 3
export const C_TO_LAN_BYTES = 4 // exit node: bytes this peer sent into provided routes
export const C_FROM_LAN_BYTES = 5 // exit node: reply bytes from provided routes to this peer
export const C_PEER_FIELDS = 8

/** Drop and event reasons, counted per worker. Names are shown in status and logs. */
export const REASONS = [
  'no_route',
  'not_ipv4',
  'bad_index',
  'bad_mac',
  'replay',
  'expired',
  'malformed',
  'not_allowed',
  'not_for_us',
  'unsolicited',
  'ring_full',
  'keepalive',
  'staged',
  'tun_write_error',
  'udp_send_error',
  'handshake_limited',
  'staged_limited',
  'counter_exhausted',
  'handshake_msgs',
  'conntrack_full',
  'conntrack_evicted',
  'policy_no_policy',
  'policy_route_not_granted',
  'replay_lock_busy',
  'fragment_orphan',
  'bad_mac1',
  'cookie_sent',
  'handshake_repeat',
  'path_msgs',
  'relay_held',
  'path_limited',
] as const
export type Reason = (typeof REASONS)[number]
/**
 * Reasons that count events, not drops: keepalives, packets staged for a handshake, handshake
 * messages, and flows delivered without a connection-table entry (table full, or an entry evicted).
 */
export const EVENT_REASONS: ReadonlySet<string> = new Set<Reason>([
  'keepalive',
  'staged',
  'handshake_msgs',
  'conntrack_full',
  'conntrack_evicted',
  'cookie_sent',
  'path_msgs',
  'relay_held',
])
export const R: Record<Reason, number> = Object.fromEntries(REASONS.map((r, i) => [r, i])) as Record<Reason, number>

// ---- handshake keys and cookie secrets (bytes of SharedLayout.handshake) ----
export const HS_MAC1_KEY = 0 // HASH("mac1----" || our public key): mac1 of messages to us
export const HS_COOKIE_KEY = 32 // HASH("cookie--" || our public key): seals the cookies we send
export const HS_SECRETS = 64 // two 32-byte cookie secrets; HSW_SECRET_SLOT says which is in use
export const HS_WORDS = 128 // Int32 words from here
export const HSW_KEYS_SET = 0 // 1 once control wrote the keys; workers drop every handshake before
export const HSW_SECRET_SLOT = 1
export const HS_F64 = 136 // Float64 words from here
export const HSF_SECRET_MS = 0 // when the secret in use was made
export const HS_BYTES = 144

// ---- global control words ----
export const G_STOP = 0
export const G_CONFIG_GEN = 1
export const G_LOG_LEVEL = 2
export const G_FIELDS = 8

export interface SharedLayout {
  version: number
  maxPeers: number
  workers: number
  global: SharedArrayBuffer
  kpI32: SharedArrayBuffer
  kpF64: SharedArrayBuffer
  kpKeys: SharedArrayBuffer
  kpReplay: SharedArrayBuffer
  peerI32: SharedArrayBuffer
  peerF64: SharedArrayBuffer
  counters: SharedArrayBuffer // Float64 [worker][peer][C_PEER_FIELDS]
  reasons: SharedArrayBuffer // Float64 [worker][REASONS]
  tableAcks: SharedArrayBuffer // Int32 [worker]: the generation of the tables the worker runs with
  handshake: SharedArrayBuffer // HS_*: our mac1 and cookie keys, the cookie secrets
}

export function createLayout(maxPeers: number, workers: number): SharedLayout {
  return {
    version: LAYOUT_VERSION,
    maxPeers,
    workers,
    global: new SharedArrayBuffer(G_FIELDS * 4),
    kpI32: new SharedArrayBuffer(KP_SLOTS * K_FIELDS * 4),
    kpF64: new SharedArrayBuffer(KP_SLOTS * KF_FIELDS * 8),
    kpKeys: new SharedArrayBuffer(KP_SLOTS * KEY_BYTES_PER_SLOT),
    kpReplay: new SharedArrayBuffer(KP_SLOTS * REPLAY_WORDS * 4),
    peerI32: new SharedArrayBuffer(maxPeers * P_FIELDS * 4),
    peerF64: new SharedArrayBuffer(maxPeers * PF_FIELDS * 8),
    counters: new SharedArrayBuffer(workers * maxPeers * C_PEER_FIELDS * 8),
    reasons: new SharedArrayBuffer(workers * REASONS.length * 8),
    tableAcks: new SharedArrayBuffer(workers * 4),
    handshake: new SharedArrayBuffer(HS_BYTES),
  }
}

/** Control, before the workers start: our mac1 and cookie keys (they change only with our key pair). */
export function writeHandshakeKeys(l: SharedLayout, mac1Key: Uint8Array, cookieKey: Uint8Array): void {
  const b = new Uint8Array(l.handshake)
  b.set(mac1Key, HS_MAC1_KEY)
  b.set(cookieKey, HS_COOKIE_KEY)
  Atomics.store(new Int32Array(l.handshake, HS_WORDS, 2), HSW_KEYS_SET, 1)
}

/**
 * The responder's cookie secret in shared memory, as a CookieChecker (src/protocol/noise.ts) for control:
 * reading `secret` gives the slot in use; assigning one (a rotation) writes the other slot, then switches.
 * Workers read the same slot (the pipeline) and never write.
 */
export class SharedCookieSecret implements CookieChecker {
  private readonly bytes: Uint8Array
  private readonly words: Int32Array
  private readonly f64: Float64Array
  constructor(l: SharedLayout, nowMs: number) {
    this.bytes = new Uint8Array(l.handshake)
    this.words = new Int32Array(l.handshake, HS_WORDS, 2)
    this.f64 = new Float64Array(l.handshake, HS_F64, 1)
    this.secret = crypto.getRandomValues(new Uint8Array(32)) // later ones: refreshCookieSecret (noise.ts)
    this.secretMs = nowMs
  }
  get secret(): Uint8Array {
    const at = HS_SECRETS + 32 * Atomics.load(this.words, HSW_SECRET_SLOT)
    return this.bytes.subarray(at, at + 32)
  }
  set secret(v: Uint8Array) {
    const next = 1 - Atomics.load(this.words, HSW_SECRET_SLOT)
    this.bytes.set(v.subarray(0, 32), HS_SECRETS + 32 * next)
    Atomics.store(this.words, HSW_SECRET_SLOT, next)
  }
  get secretMs(): number {
    return this.f64[HSF_SECRET_MS]
  }
  set secretMs(v: number) {
    this.f64[HSF_SECRET_MS] = v
  }
}

export interface LayoutViews {
  global: Int32Array
  kpI32: Int32Array
  kpF64: Float64Array
  kpKeys: Uint8Array
  kpReplay: Uint32Array
  peerI32: Int32Array
  peerF64: Float64Array
  counters: Float64Array
  reasons: Float64Array
  tableAcks: Int32Array
  handshake: Uint8Array
  hsWords: Int32Array
}

export function views(l: SharedLayout): LayoutViews {
  if (l.version !== LAYOUT_VERSION) throw new Error(`shared layout version ${l.version}, expected ${LAYOUT_VERSION}`)
  return {
    global: new Int32Array(l.global),
    kpI32: new Int32Array(l.kpI32),
    kpF64: new Float64Array(l.kpF64),
    kpKeys: new Uint8Array(l.kpKeys),
    kpReplay: new Uint32Array(l.kpReplay),
    peerI32: new Int32Array(l.peerI32),
    peerF64: new Float64Array(l.peerF64),
    counters: new Float64Array(l.counters),
    reasons: new Float64Array(l.reasons),
    tableAcks: new Int32Array(l.tableAcks),
    handshake: new Uint8Array(l.handshake),
    hsWords: new Int32Array(l.handshake, HS_WORDS, 2),
  }
}

export function packEndpoint(ip: number, port: number): number {
  return (ip >>> 0) * 65536 + port
}
export function endpointIp(e: number): number {
  return Math.floor(e / 65536) >>> 0
}
export function endpointPort(e: number): number {
  return e % 65536
}
