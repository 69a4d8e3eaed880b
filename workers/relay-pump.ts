/**
 * The hub's UDP relay data path (src/hub/fast-relay.ts), in a worker thread of its own: every relay port
 * is an addon socket (native/enclave_io.cc) watched with epoll; a readable port is read in one batch (GRO
 * hands over up to 64 datagrams of a flow per read) and what is forwarded goes out of the other side's
 * port in one batch (GSO sends runs to one destination in one system call). Binding, the return-
 * routability challenge, the WireGuard-shape check and the per-pair and relay-wide rate limits are those
 * of src/hub/relay.ts (its doc comment), which stays the reference and the fallback.
 *
 * Messages from the hub: {t:'add', key, sides:[{fd, token, identity},{…}]}, {t:'del', key}, {t:'stop'}.
 * To the hub: {t:'bound', key, identity, addr, rebind}, {t:'stats', pairs:[…], totals}, {t:'stopped'}.
 */
import crypto from 'node:crypto'
import { parentPort, workerData } from 'node:worker_threads'
import { native } from '../src/native/io.js'
import {
  RELAY_BIND_MAGIC,
  RELAY_BIND_SIZE,
  RELAY_CONFIRM_MAGIC,
  RELAY_CONFIRM_SIZE,
  looksLikeWireGuard,
  relayBoundDatagram,
  relayChallengeDatagram,
  relayCookie,
} from '../src/protocol/relay-msg.js'

interface Side {
  fd: number
  token: Buffer
  /** The `bound` answer, built once. */
  ack: Buffer
  identity: string
  ip: number // bound source (host order), 0 = none
  port: number
  packets: number
  bytes: number
  peer: Side
  pair: Pair
}

interface Pair {
  key: string
  a: Side
  b: Side
  bytesLevel: number
  pktsLevel: number
  refilled: number
  lastActive: number
  dropped: number
}

const opts = workerData as {
  pairBytesPerSec: number
  hubBytesPerSec: number
  pairPacketsPerSec: number
  hubPacketsPerSec: number
  burstSeconds: number
}
const SLOT = 2048
const MAX = 128
const slab = new Uint8Array(SLOT * MAX)
const lens = new Int32Array(MAX)
const addrs = new Uint32Array(2 * MAX)
const one = new Uint8Array(SLOT)
const oneLen = new Int32Array(1)
const oneAddr = new Uint32Array(2)
const ready = new Int32Array(256)
const secret = crypto.randomBytes(32)
const bySock = new Map<number, Side>()
const pairs = new Map<string, Pair>()
const ep = native.epollCreate()
let hubLevel = opts.hubBytesPerSec * opts.burstSeconds
let hubPkts = opts.hubPacketsPerSec * opts.burstSeconds
let hubRefilled = performance.now()
let totals = { packets: 0, bytes: 0, binds: 0, dropped: 0 }
let running = true

const ipText = (ip: number) => `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`

function cookie(side: Side, ip: number, port: number): Buffer {
  return relayCookie(secret, side.token, ipText(ip), port)
}

function sendOne(fd: number, b: Uint8Array, ip: number, port: number): void {
  one.set(b)
  oneLen[0] = b.length
  oneAddr[0] = ip
  oneAddr[1] = port
  native.sendBatch(fd, one, SLOT, 0, oneLen, oneAddr, 1)
}

function magicIs(o: number, magic: Uint8Array): boolean {
  return slab[o] === magic[0] && slab[o + 1] === magic[1] && slab[o + 2] === magic[2] && slab[o + 3] === magic[3]
}

function tokenIs(o: number, side: Side): boolean {
  return crypto.timingSafeEqual(slab.subarray(o + 4, o + RELAY_BIND_SIZE), side.token)
}

/** A bind (20 bytes) or confirm (36 bytes) at slab[o]; from (ip, port). */
function control(side: Side, o: number, len: number, ip: number, port: number): void {
  const bound = side.ip === ip && side.port === port
  if (len === RELAY_BIND_SIZE && magicIs(o, RELAY_BIND_MAGIC) && tokenIs(o, side)) {
    if (!bound) {
      // A new source proves it receives there first (return routability).
      sendOne(side.fd, relayChallengeDatagram(side.token, cookie(side, ip, port)), ip, port)
      side.pair.lastActive = performance.now()
      return
    }
    bindTo(side, ip, port)
    return
  }
  if (
    len === RELAY_CONFIRM_SIZE &&
    magicIs(o, RELAY_CONFIRM_MAGIC) &&
    tokenIs(o, side) &&
    crypto.timingSafeEqual(slab.subarray(o + RELAY_BIND_SIZE, o + RELAY_CONFIRM_SIZE), cookie(side, ip, port))
  ) {
    bindTo(side, ip, port)
    return
  }
  side.pair.dropped++
  totals.dropped++
}

function bindTo(side: Side, ip: number, port: number): void {
  const moved = side.ip !== ip || side.port !== port
  const rebind = moved && side.ip !== 0
  side.ip = ip
  side.port = port
  totals.binds++
  side.pair.lastActive = performance.now()
  sendOne(side.fd, side.ack, ip, port)
  if (moved) parentPort?.postMessage({ t: 'bound', key: side.pair.key, identity: side.identity, addr: `${ipText(ip)}:${port}`, rebind })
}

function pump(side: Side): void {
  const k = native.recvBatch(side.fd, slab, SLOT, lens, addrs, MAX, 0)
  if (k <= 0) return
  const peer = side.peer
  const pair = side.pair
  const now = performance.now()
  const dt = (now - pair.refilled) / 1000
  pair.bytesLevel = Math.min(Math.max(65536, opts.pairBytesPerSec * opts.burstSeconds), pair.bytesLevel + dt * opts.pairBytesPerSec)
  pair.pktsLevel = Math.min(Math.max(1, opts.pairPacketsPerSec * opts.burstSeconds), pair.pktsLevel + dt * opts.pairPacketsPerSec)
  pair.refilled = now
  const hdt = (now - hubRefilled) / 1000
  hubLevel = Math.min(Math.max(65536, opts.hubBytesPerSec * opts.burstSeconds), hubLevel + hdt * opts.hubBytesPerSec)
  hubPkts = Math.min(Math.max(1, opts.hubPacketsPerSec * opts.burstSeconds), hubPkts + hdt * opts.hubPacketsPerSec)
  hubRefilled = now
  let out = 0
  for (let i = 0; i < k; i++) {
    const n = lens[i]
    const o = i * SLOT
    const ip = addrs[2 * i]
    const port = addrs[2 * i + 1]
    lens[i] = 0
    if (n <= 0) continue
    if (slab[o] === RELAY_BIND_MAGIC[0]) {
      control(side, o, n, ip, port)
      continue
    }
    if (ip !== side.ip || port !== side.port || side.ip === 0 || peer.ip === 0 || !looksLikeWireGuard(slab, o, n)) {
      pair.dropped++
      totals.dropped++
      continue
    }
    if (pair.bytesLevel < n || hubLevel < n || pair.pktsLevel < 1 || hubPkts < 1) {
      pair.dropped++
      totals.dropped++
      continue
    }
    pair.bytesLevel -= n
    pair.pktsLevel -= 1
    hubLevel -= n
    hubPkts -= 1
    lens[i] = n
    addrs[2 * i] = peer.ip
    addrs[2 * i + 1] = peer.port
    side.packets++
    side.bytes += n
    totals.packets++
    totals.bytes += n
    out++
  }
  if (out > 0) {
    pair.lastActive = now
    native.sendBatch(peer.fd, slab, SLOT, 0, lens, addrs, k)
  }
}

parentPort?.on('message', (m: { t: string; key?: string; sides?: Array<{ fd: number; token: string; identity: string }> }) => {
  if (m.t === 'add' && m.key && m.sides) {
    const now = performance.now()
    const pair = {
      key: m.key,
      bytesLevel: Math.max(65536, opts.pairBytesPerSec * opts.burstSeconds),
      pktsLevel: Math.max(1, opts.pairPacketsPerSec * opts.burstSeconds),
      refilled: now,
      lastActive: now,
      dropped: 0,
    } as Pair
    const mk = (s: { fd: number; token: string; identity: string }): Side =>
      ({
        fd: s.fd,
        token: Buffer.from(s.token, 'hex'),
        ack: relayBoundDatagram(s.token),
        identity: s.identity,
        ip: 0,
        port: 0,
        packets: 0,
        bytes: 0,
        pair,
      }) as Side
    pair.a = mk(m.sides[0])
    pair.b = mk(m.sides[1])
    pair.a.peer = pair.b
    pair.b.peer = pair.a
    pairs.set(m.key, pair)
    for (const s of [pair.a, pair.b]) {
      bySock.set(s.fd, s)
      native.epollCtl(ep, true, s.fd)
    }
  } else if (m.t === 'del' && m.key) {
    const p = pairs.get(m.key)
    if (!p) return
    pairs.delete(m.key)
    for (const s of [p.a, p.b]) {
      native.epollCtl(ep, false, s.fd)
      bySock.delete(s.fd)
      native.close(s.fd)
    }
  } else if (m.t === 'stop') running = false
})

function stats(): void {
  parentPort?.postMessage({
    t: 'stats',
    totals,
    pairs: [...pairs.values()].map((p) => ({
      key: p.key,
      lastActiveAgoMs: performance.now() - p.lastActive,
      packets: [p.a.packets, p.b.packets],
      bytes: [p.a.bytes, p.b.bytes],
      dropped: p.dropped,
    })),
  })
}

async function loop(): Promise<void> {
  let lastStats = performance.now()
  while (running) {
    const n = native.epollWait(ep, ready, ready.length, 20)
    for (let i = 0; i < n; i++) {
      const side = bySock.get(ready[i])
      if (side) pump(side)
    }
    if (performance.now() - lastStats > 1000) {
      lastStats = performance.now()
      stats()
    }
    // Let the hub's messages (pairs added, removed) in.
    await new Promise((r) => setImmediate(r))
  }
  for (const p of pairs.values()) for (const s of [p.a, p.b]) native.close(s.fd)
  native.close(ep)
  totals = { packets: 0, bytes: 0, binds: 0, dropped: 0 }
  parentPort?.postMessage({ t: 'stopped' })
}

void loop()
