/**
 * A client/exit-node pair of Pipelines with one session installed in shared memory the way control
 * does after a handshake, plus synthetic IPv4/UDP packets: a fixture for the benchmark, the allocation
 * probe and the Pipeline unit tests (kept out of src/, which holds only what the agent runs).
 */
import {
  createLayout,
  views,
  KEY_BYTES_PER_SLOT,
  K_FIELDS,
  K_INDEX,
  K_PEER,
  K_REMOTE,
  K_STATE,
  KF_CREATED_MS,
  KF_FIELDS,
  KP_VALID,
  P_CUR_KP,
  P_FIELDS,
  PF_ENDPOINT,
  PF_FIELDS,
  packEndpoint,
} from '../src/ipc/layout.js'
import { createRing, RingConsumer } from '../src/ipc/ring.js'
import { createConntrack } from '../src/dataplane/conntrack.js'
import { buildRouteTable } from '../src/dataplane/route-table.js'
import { HEADROOM, Pipeline } from '../src/dataplane/pipeline.js'
import type { DataplaneTables } from '../src/ipc/messages.js'
import { LOCAL_PROVIDED, LOCAL_SELF } from '../src/ipc/messages.js'
import sodium from 'sodium-native'
import { compatPolicyTable } from '../src/dataplane/policy.js'

export const A_VA = 0x64400001
export const B_VA = 0x64400002
export const LAN = 0xac1a0000 // 172.26.0.0/20 behind B
/** A second peer of the exit node (slot 1), with no session: for checks that involve another peer. */
export const C_VA = 0x64400003

function tables(selfVa: number, peerVa: number, provides: boolean): DataplaneTables {
  const rt = buildRouteTable([
    { addr: peerVa, len: 32, value: 0 },
    ...(provides ? [{ addr: C_VA, len: 32, value: 1 }] : [{ addr: LAN, len: 20, value: 0 }]),
  ])
  const at = buildRouteTable([
    { addr: peerVa, len: 32, value: 0 },
    ...(provides ? [{ addr: C_VA, len: 32, value: 2 }] : [{ addr: LAN, len: 20, value: 0 }]),
  ])
  const lt = buildRouteTable([
    { addr: selfVa, len: 32, value: LOCAL_SELF },
    ...(provides ? [{ addr: LAN, len: 20, value: LOCAL_PROVIDED }] : []),
  ])
  return {
    gen: 1,
    routeChild: rt.child,
    routeVal: rt.val,
    allowChild: at.child,
    allowVal: at.val,
    groupStart: Int32Array.of(0, 1, 2, 3),
    groupPeers: Int32Array.of(0, 0, 1),
    localChild: lt.child,
    localVal: lt.val,
    exitNode: provides,
    selfAddr: selfVa | 0,
    policy: compatPolicyTable(),
    policyGen: 1,
    policyLabels: [],
    policyCounters: new SharedArrayBuffer(8),
  }
}

function side(
  selfVa: number,
  peerVa: number,
  provides: boolean,
  sendKey: Uint8Array,
  recvKey: Uint8Array,
  localIndex: number,
  remoteIndex: number,
  batch: number,
  post: (msg: unknown) => void,
) {
  const layout = createLayout(64, 1)
  const v = views(layout)
  const kp = localIndex & 4095
  v.kpKeys.set(sendKey, kp * KEY_BYTES_PER_SLOT)
  v.kpKeys.set(recvKey, kp * KEY_BYTES_PER_SLOT + 32)
  v.kpI32[kp * K_FIELDS + K_REMOTE] = remoteIndex | 0
  v.kpI32[kp * K_FIELDS + K_PEER] = 0
  v.kpI32[kp * K_FIELDS + K_INDEX] = localIndex | 0
  v.kpF64[kp * KF_FIELDS + KF_CREATED_MS] = Date.now()
  Atomics.store(v.kpI32, kp * K_FIELDS + K_STATE, KP_VALID)
  Atomics.store(v.peerI32, 0 * P_FIELDS + P_CUR_KP, kp)
  v.peerF64[0 * PF_FIELDS + PF_ENDPOINT] = packEndpoint(0xc6120002, 51820)
  const ring = createRing(256)
  const conntrack = createConntrack()
  const pipe = new Pipeline({
    id: 0,
    layout,
    ring,
    conntrack,
    mtu: 1420,
    batch,
    epochMs: Date.now(),
    tables: tables(selfVa, peerVa, provides),
    post,
  })
  return { pipe, ring: new RingConsumer(ring), v, kp, layout, conntrack }
}

export function ipv4udp(buf: Uint8Array, off: number, size: number, src: number, dst: number, sport: number): void {
  buf.fill(0, off, off + size)
  buf[off] = 0x45
  buf[off + 2] = size >> 8
  buf[off + 3] = size & 255
  buf[off + 8] = 64
  buf[off + 9] = 17
  for (let i = 0; i < 4; i++) {
    buf[off + 12 + i] = (src >>> (24 - 8 * i)) & 255
    buf[off + 16 + i] = (dst >>> (24 - 8 * i)) & 255
  }
  buf[off + 20] = sport >> 8
  buf[off + 21] = sport & 255
  buf[off + 22] = 0x1f
  buf[off + 23] = 0x90
  for (let i = 28; i < size; i++) buf[off + i] = i & 255
}

/**
 * A client and an exit node sharing one session: client.outbound -> exit.inbound. `c` and `e` give
 * each side's shared memory (as control sees it), ring consumer and keypair slot, for tests.
 */
export function sessionPair(batch: number, post: (msg: unknown) => void = () => undefined) {
  const k1 = Buffer.alloc(32)
  const k2 = Buffer.alloc(32)
  sodium.randombytes_buf(k1)
  sodium.randombytes_buf(k2)
  const client = side(A_VA, B_VA, false, k1, k2, (1 << 12) | 7, (2 << 12) | 9, batch, post)
  const exit = side(B_VA, A_VA, true, k2, k1, (2 << 12) | 9, (1 << 12) | 7, batch, post)
  return { client: client.pipe, exit: exit.pipe, c: client, e: exit }
}

const deliverViews = new WeakMap<Pipeline, Uint8Array>()

/** Moves the client's encrypted datagrams into the exit node's receive slab, as the network would. */
export function deliver(c: Pipeline, e: Pipeline, n: number): void {
  let src = deliverViews.get(c)
  if (src === undefined || src.length !== c.slot * n) {
    src = c.oSlab.subarray(0, c.slot * n)
    deliverViews.set(c, src)
  }
  e.iSlab.set(src)
  for (let i = 0; i < n; i++) {
    e.iLens[i] = c.sLens[i]
    e.iAddrs[2 * i] = 0xc6120001
    e.iAddrs[2 * i + 1] = 51820
  }
}

export { HEADROOM }
