/**
 * A client/exit-node pair of Pipelines with one session installed in shared memory the way control
 * does after a handshake, and synthetic IPv4 packets (UDP, ICMP echo, TCP). The data-plane workers run
 * their warm-up through it (src/dataplane/warmup.ts); the benchmark, the allocation probe and the
 * Pipeline unit tests use it as a fixture (bench/testbed.ts).
 * Its pipelines own their shared memory, keys and conntrack: nothing here touches an agent's state.
 */
import sodium from 'sodium-native'
import { KeypairSlots } from '../agent/peers/keypairs.js'
import { PeerMemory } from '../agent/peers/peer-memory.js'
import type { Cidr } from '../common/ipv4.js'
import { compilePolicies, policyTablesFor } from '../compile/policy.js'
import { type RoutePeer, compileTables } from '../compile/routes.js'
import { KP_RECV_ONLY, KP_VALID, createLayout, views, writeHandshakeKeys } from '../ipc/layout.js'
import type { DataplaneTables } from '../ipc/messages.js'
import { RingConsumer, createRing } from '../ipc/ring.js'
import { localStatic } from '../protocol/noise.js'
import { generateKeyPair } from '../protocol/primitives.js'
import { createConntrack } from '../dataplane/conntrack.js'
import { HEADROOM, Pipeline } from '../dataplane/pipeline.js'

export const A_VA = 0x64400001
export const B_VA = 0x64400002
export const LAN = 0xac1a0000 // 172.26.0.0/20 behind B
/** A second peer of the exit node (slot 1), with no session: for checks that involve another peer. */
export const C_VA = 0x64400003

const LAN_CIDR: Cidr = { addr: LAN, len: 20, text: '172.26.0.0/20' }

/** The tables control compiles: the client routes LAN through the exit node (slot 0); the exit node provides it. */
export function pairTables(selfVa: number, peerVa: number, provides: boolean): DataplaneTables {
  const peer = (slot: number, va: number, routes: Cidr[]): RoutePeer => ({
    slot,
    identity: `peer${slot}`,
    virtualAddress: va,
    availableRoutes: routes,
    unresponsive: false,
  })
  const peers = provides ? [peer(0, peerVa, []), peer(1, C_VA, [])] : [peer(0, peerVa, [LAN_CIDR])]
  const active = new Map(provides ? [] : [[LAN_CIDR.text, 0]])
  const routes = compileTables({ virtualAddress: selfVa, providesRoutes: provides ? [LAN_CIDR] : [] }, peers, active, 1)
  const policy = compilePolicies({
    selfTags: [],
    selfAddress: selfVa,
    providesRoutes: provides ? [LAN_CIDR] : [],
    peers: peers.map((p) => ({ slot: p.slot, tags: [] })),
    policies: undefined,
  })
  return { ...routes, ...policyTablesFor(policy, 1, 1) }
}

/** One side: its shared memory with the session installed as control installs it after a handshake. */
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
  underLoadPerS?: number,
  offload = false,
) {
  const layout = createLayout(64, 1)
  const v = views(layout)
  // The side's own key pair: its workers check mac1 of handshake messages against it.
  const me = generateKeyPair()
  const local = localStatic(me.privateKey, me.publicKey)
  writeHandshakeKeys(layout, local.mac1Key, local.cookieKey)
  const kp = localIndex & 4095
  const keys = { sendKey, recvKey, localIndex, remoteIndex, isInitiator: !provides }
  new KeypairSlots(v).install(kp, localIndex, 0, keys, KP_VALID, Date.now())
  const memory = new PeerMemory(v, layout.maxPeers, 1)
  memory.reset(0)
  memory.setSendKeypair(0, kp)
  memory.setEndpoint(0, { ip: 0xc6120002, port: 51820 })
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
    tables: pairTables(selfVa, peerVa, provides),
    post,
    underLoadPerS,
    offload,
  })
  return { pipe, ring: new RingConsumer(ring), v, kp, layout, conntrack, local }
}

/**
 * A new session between the pair, installed as control installs one after a handshake: the
 * initiator (client) sends with it at once; the responder (exit) holds it receive-only until the
 * initiator's first packet on it confirms it (the worker's promotion). `n` (0-31) picks fresh slots
 * and indexes; the old session stays installed, as the previous keypair does.
 */
export function rekeyPair(pair: ReturnType<typeof sessionPair>, n: number): void {
  const k1 = Buffer.alloc(32)
  const k2 = Buffer.alloc(32)
  sodium.randombytes_buf(k1)
  sodium.randombytes_buf(k2)
  const cIndex = ((n + 3) << 12) | (32 + n)
  const eIndex = ((n + 3) << 12) | (64 + n)
  const now = Date.now()
  const install = (
    v: typeof pair.c.v,
    index: number,
    keys: { sendKey: Uint8Array; recvKey: Uint8Array; remote: number; initiator: boolean },
  ) =>
    new KeypairSlots(v).install(
      index & 4095,
      index,
      0,
      { sendKey: keys.sendKey, recvKey: keys.recvKey, localIndex: index, remoteIndex: keys.remote, isInitiator: keys.initiator },
      keys.initiator ? KP_VALID : KP_RECV_ONLY,
      now,
    )
  install(pair.c.v, cIndex, { sendKey: k1, recvKey: k2, remote: eIndex, initiator: true })
  new PeerMemory(pair.c.v, pair.c.layout.maxPeers, 1).setSendKeypair(0, cIndex & 4095)
  install(pair.e.v, eIndex, { sendKey: k2, recvKey: k1, remote: cIndex, initiator: false })
}

/** An IPv4 header of `size` bytes in all, zeroed payload (no checksum: nothing on the path checks it). */
function ipv4(buf: Uint8Array, off: number, size: number, proto: number, src: number, dst: number): void {
  buf.fill(0, off, off + size)
  buf[off] = 0x45
  buf[off + 2] = size >> 8
  buf[off + 3] = size & 255
  buf[off + 8] = 64
  buf[off + 9] = proto
  for (let i = 0; i < 4; i++) {
    buf[off + 12 + i] = (src >>> (24 - 8 * i)) & 255
    buf[off + 16 + i] = (dst >>> (24 - 8 * i)) & 255
  }
}

/** ICMP echo: `type` 8 (request) or 0 (reply), with the identifier and sequence number. */
export function ipv4icmp(
  buf: Uint8Array,
  off: number,
  size: number,
  src: number,
  dst: number,
  type: number,
  id: number,
  seq: number,
): void {
  ipv4(buf, off, size, 1, src, dst)
  buf[off + 20] = type
  buf[off + 24] = id >> 8
  buf[off + 25] = id & 255
  buf[off + 26] = seq >> 8
  buf[off + 27] = seq & 255
  for (let i = 28; i < size; i++) buf[off + i] = i & 255
}

/** TCP with a 20-byte header: ports, sequence number and flags (0x02 SYN, 0x12 SYN+ACK, 0x10 ACK). */
export function ipv4tcp(
  buf: Uint8Array,
  off: number,
  size: number,
  src: number,
  dst: number,
  sport: number,
  dport: number,
  seq: number,
  flags: number,
): void {
  ipv4(buf, off, size, 6, src, dst)
  buf[off + 20] = sport >> 8
  buf[off + 21] = sport & 255
  buf[off + 22] = dport >> 8
  buf[off + 23] = dport & 255
  buf[off + 24] = (seq >>> 24) & 255
  buf[off + 25] = (seq >>> 16) & 255
  buf[off + 26] = (seq >>> 8) & 255
  buf[off + 27] = seq & 255
  buf[off + 32] = 0x50
  buf[off + 33] = flags
  buf[off + 34] = 0xff
  buf[off + 35] = 0xff
  for (let i = 40; i < size; i++) buf[off + i] = i & 255
}

export function ipv4udp(buf: Uint8Array, off: number, size: number, src: number, dst: number, sport: number): void {
  ipv4(buf, off, size, 17, src, dst)
  buf[off + 20] = sport >> 8
  buf[off + 21] = sport & 255
  buf[off + 22] = 0x1f
  buf[off + 23] = 0x90
  for (let i = 28; i < size; i++) buf[off + i] = i & 255
}

/**
 * A client and an exit node sharing one session: client.outbound -> exit.inbound. `c` and `e` give
 * each side's shared memory (as control sees it), ring consumer, keypair slot and static keys, for tests.
 * underLoadPerS: see PipelineOptions (Infinity: the workers are never under load).
 */
export function sessionPair(batch: number, post: (msg: unknown) => void = () => undefined, underLoadPerS?: number, offload = false) {
  const k1 = Buffer.alloc(32)
  const k2 = Buffer.alloc(32)
  sodium.randombytes_buf(k1)
  sodium.randombytes_buf(k2)
  const client = side(A_VA, B_VA, false, k1, k2, (1 << 12) | 7, (2 << 12) | 9, batch, post, underLoadPerS, offload)
  const exit = side(B_VA, A_VA, true, k2, k1, (2 << 12) | 9, (1 << 12) | 7, batch, post, underLoadPerS, offload)
  return { client: client.pipe, exit: exit.pipe, c: client, e: exit }
}

const deliverViews = new WeakMap<Pipeline, Uint8Array>()

/** Moves the client's encrypted datagrams into the exit node's receive slab, as the network would. */
export function deliver(c: Pipeline, e: Pipeline, n: number, fromIp = 0xc6120001): void {
  let src = deliverViews.get(c)
  if (src === undefined || src.length !== c.slot * n) {
    src = c.oSlab.subarray(0, c.slot * n)
    deliverViews.set(c, src)
  }
  e.iSlab.set(src)
  for (let i = 0; i < n; i++) {
    e.iLens[i] = c.sLens[i]
    e.iAddrs[2 * i] = fromIp
    e.iAddrs[2 * i + 1] = 51820
  }
}

export { HEADROOM }
