/** Control <-> worker messages (postMessage) that are not shared memory. */
import type { SharedLayout } from './layout.js'
import type { RingBuffers } from './ring.js'
import type { WorkerIo } from '../io/packet-io.js'
import type { HandshakeState } from '../protocol/noise.js'

/** Values in the `local` table: where a destination lives on this node. */
export const LOCAL_SELF = 0
export const LOCAL_PROVIDED = 1

/**
 * An immutable snapshot of the routing state, swapped whole in each worker.
 *  route:   destination -> peer slot (longest prefix; failover already resolved by control)
 *  allow:   source -> group; groups[group] lists peer slots that may use that source (cryptokey routing)
 *  local:   destination -> LOCAL_SELF | LOCAL_PROVIDED (what a peer may send to us)
 *  selfAddr: this node's virtual address. Reply-only is judged by ingress: a packet read from the TUN
 *            for a peer leaves only if its source is selfAddr or it answers a flow that peer started.
 */
export interface RouteTables {
  gen: number
  routeChild: Int32Array
  routeVal: Int32Array
  allowChild: Int32Array
  allowVal: Int32Array
  groupStart: Int32Array
  groupPeers: Int32Array
  localChild: Int32Array
  localVal: Int32Array
  exitNode: boolean
  selfAddr: number
}

/** Route tables and the compiled policies, swapped whole in each worker. */
export interface DataplaneTables extends RouteTables, PolicyTables {}

export interface PolicyTables {
  /** Policies compiled by control (src/compile/policy.ts); mode 0 = no Policies key. */
  policy: PolicyTable
  /** Bumped at every policy compile (start, reload): flows judged by an older one are judged again. */
  policyGen: number
  /** policyLabels[i] names policy i in -v 5 drop lines. */
  policyLabels: string[]
  /** Float64 [worker][2 * policies + 1]: hits per policy, drops per policy, then "no policy allows". */
  policyCounters: SharedArrayBuffer
}

export interface WorkerInit {
  id: number
  layout: SharedLayout
  ring: RingBuffers
  conntrack: SharedArrayBuffer
  /** The worker's TUN queue and UDP socket, or its memory queues (src/io/packet-io.ts). */
  io: WorkerIo
  /** The agent's clock offset when it is not the wall clock (src/platform/clock.ts). */
  clock?: SharedArrayBuffer
  mtu: number
  batch: number
  epochMs: number
  tables: DataplaneTables
  /** The TUN queues were opened with IFF_VNET_HDR and TSO4/CSUM offload. */
  offload: boolean
  /** ...and with UDP segmentation offload (TUN_F_USO4): UDP datagrams of one flow may be merged on write. */
  uso: boolean
  /** Rounds of synthetic traffic the worker runs through its code while idle, before the JIT is left to real packets (src/dataplane/warmup.ts); 0: none. */
  warmup: number
}

export interface FlowLog {
  t: 'flow'
  dir: 'in' | 'out'
  peer: number
  proto: number
  src: number
  dst: number
  sport: number
  dport: number
  len: number
  verdict: string
}

/** The policy tables a worker evaluates (compiled by src/compile/policy.ts, read by src/dataplane/policy.ts). */
export interface PolicyTable {
  mode: number
  /** Mask words per peer or class. */
  words: number
  /** Peer slots covered by peerMask; other slots match no policy. */
  slots: number
  policies: number
  peerMask: Int32Array
  dstChild: Int32Array
  dstVal: Int32Array
  dstMask: Int32Array
  dstKind: Int32Array
  aclStart: Int32Array
  aclProto: Int32Array
  aclLo: Int32Array
  aclHi: Int32Array
}

/** Tasks for the handshake pool (workers/handshake.ts): the responder's crypto, off the control thread. */
export interface ConsumeTask {
  op: 'consume'
  msg: Uint8Array
  privateKey: Uint8Array
  publicKey: Uint8Array
  nowMs: number
}

export interface RespondTask {
  op: 'respond'
  peerPublicKey: Uint8Array
  presharedKey: Uint8Array
  state: HandshakeState
  localIndex: number
  nowMs: number
}
