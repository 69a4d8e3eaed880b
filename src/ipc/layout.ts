/**
 * Shared memory between the control thread and the data-plane workers.
 *
 * Everything here is a SharedArrayBuffer carved into typed arrays at fixed offsets. Control
 * writes keys and peer settings; workers write counters and timestamps. Rules:
 *  - A keypair slot is published by writing its fields and keys first, then Atomics.store of
 *    K_STATE. Workers read K_INDEX and K_STATE once before crypto (src/dataplane/transport.ts) and
 *    re-check both after encryption and after decryption.
 *  - Slots are recycled only after KEYPAIR_QUARANTINE_MS, far longer than a worker holds one.
 *  - Counters are per worker (one writer each); control sums them for status.
 */
export const LAYOUT_VERSION = 3

// ---- keypairs ----
export const KP_SLOTS = 4096
export const KP_MASK = KP_SLOTS - 1
export const KEYPAIR_QUARANTINE_MS = 10_000
export const K_STATE = 0 // 0 (not in use) | KP_RECV_ONLY | KP_VALID
export const K_INDEX = 1 // our receiver index (low bits = slot)
export const K_REMOTE = 2 // the peer's receiver index
export const K_PEER = 3 // peer slot
export const K_SEND_CTR = 4 // next send counter (uint32, Atomics.add)
export const K_LOCK = 5 // replay-window spin lock
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
export const PF_FIELDS = 8

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
])
export const R: Record<Reason, number> = Object.fromEntries(REASONS.map((r, i) => [r, i])) as Record<Reason, number>

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
