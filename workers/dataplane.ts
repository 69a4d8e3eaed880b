/**
 * Data-plane worker: one per core, each owning one TUN queue and one UDP socket (SO_REUSEPORT).
 * Run to completion, batch by batch:
 *
 *   outbound  TUN --readBatch--> parse IPv4 --route lookup--> [exit node: reply-only check]
 *             --> counter (Atomics.add) --> pad + encrypt in place --sendBatch--> UDP
 *   inbound   UDP --recvBatch--> index -> keypair --> decrypt in place --> replay window
 *             --> cryptokey check (source allowed for that peer) --> destination check
 *             --> [exit node: track flow] --writeBatch--> TUN
 *
 * Handshake messages and packets without a session go to control through the SPSC ring.
 * Routing tables arrive as whole snapshots (postMessage, pulled synchronously when G_CONFIG_GEN
 * moves). Keys, peers and counters live in shared memory (src/ipc/layout.ts).
 *
 * No-allocation contract for the loops below: no closures, promises, strings, Buffer.from or
 * subarray per packet. Slot views for crypto are created once per (slot, padded length) and reused.
 * Strings are built only when the log level is 5 (frame data).
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads'
import sodium from 'sodium-native'
import { native } from '../src/native/io.js'
import {
  C_FROM_LAN_BYTES, C_PEER_FIELDS, C_RX_BYTES, C_RX_PKTS, C_TO_LAN_BYTES, C_TX_BYTES, C_TX_PKTS, G_CONFIG_GEN,
  G_LOG_LEVEL, G_STOP, KEY_BYTES_PER_SLOT, KF_CREATED_MS, KF_FIELDS, KF_REPLAY_LAST, KP_MASK, KP_RECV_ONLY, KP_SLOTS,
  KP_VALID, K_FIELDS, K_INDEX, K_INITIATOR, K_LOCK, K_PEER, K_REMOTE, K_SEND_CTR, K_STATE, PF_ENDPOINT, PF_FIELDS,
  PF_LAST_RX_ANY, PF_LAST_RX_DATA, PF_LAST_TX_ANY, PF_LAST_TX_DATA, P_CUR_KP, P_FIELDS, R, REASONS, REPLAY_WORDS, views,
} from '../src/ipc/layout.js'
import { MSG_CONFIRMED, MSG_HANDSHAKE, MSG_REKEY, MSG_STAGED, RingProducer } from '../src/ipc/ring.js'
import { LOCAL_PROVIDED, type DataplaneTables, type WorkerInit } from '../src/ipc/messages.js'
import { lookupRoute } from '../src/dataplane/route-table.js'
import { replayCheckAndSet, replayMaybeFresh } from '../src/dataplane/replay.js'
import { PROTO_ICMP, PROTO_TCP, PROTO_UDP, ctReply, ctTrack, ttlFor } from '../src/dataplane/conntrack.js'
import {
  MSG_TRANSPORT, REJECT_AFTER_TIME_MS, REKEY_AFTER_TIME_MS, RECV_COUNTER_LIMIT, SEND_COUNTER_LIMIT, SEND_COUNTER_REKEY,
} from '../src/protocol/constants.js'

const init = workerData as WorkerInit
const port = parentPort!
const v = views(init.layout)
const { global: g, kpI32, kpF64, kpReplay, peerI32, peerF64, counters, reasons } = v
const ring = new RingProducer(init.ring)
const ct = new Int32Array(init.conntrack)
const maxPeers = init.layout.maxPeers
const HEAD = 16 // transport header: room to encrypt in place
const SLOT = (HEAD + init.mtu + 16 + 16 + 63) & ~63
const BATCH = init.batch
const MTU = init.mtu
const cBase = init.id * maxPeers * C_PEER_FIELDS
const rBase = init.id * REASONS.length

// Per-key views, made once: sodium-native takes typed arrays.
const sendKeys: Uint8Array[] = new Array(KP_SLOTS)
const recvKeys: Uint8Array[] = new Array(KP_SLOTS)
for (let k = 0; k < KP_SLOTS; k++) {
  sendKeys[k] = v.kpKeys.subarray(k * KEY_BYTES_PER_SLOT, k * KEY_BYTES_PER_SLOT + 32)
  recvKeys[k] = v.kpKeys.subarray(k * KEY_BYTES_PER_SLOT + 32, k * KEY_BYTES_PER_SLOT + 64)
}

// Outbound (TUN -> UDP) and inbound (UDP -> TUN) slabs, owned by this worker only.
const oSlab = new Uint8Array(new SharedArrayBuffer(SLOT * BATCH))
const iSlab = new Uint8Array(new SharedArrayBuffer(SLOT * BATCH))
const oLens = new Int32Array(BATCH)
const sLens = new Int32Array(BATCH)
const oAddrs = new Uint32Array(2 * BATCH)
const iLens = new Int32Array(BATCH)
const wLens = new Int32Array(BATCH)
const iAddrs = new Uint32Array(2 * BATCH)
const oNonce = new Uint8Array(12)
const iNonce = new Uint8Array(12)
const rekeySignalled = new Float64Array(maxPeers)

// Views over slot regions by padded length (multiples of 16): [msg, tag], built lazily, then reused.
const oViews: Array<Array<[Uint8Array, Uint8Array] | undefined>> = []
const iViews: Array<Array<[Uint8Array, Uint8Array] | undefined>> = []
for (let i = 0; i < BATCH; i++) {
  oViews.push(new Array((MTU >> 4) + 2))
  iViews.push(new Array((SLOT >> 4) + 2))
}
function slotViews(cache: Array<Array<[Uint8Array, Uint8Array] | undefined>>, slab: Uint8Array, i: number, len: number): [Uint8Array, Uint8Array] {
  const row = cache[i]
  const k = len >> 4
  let e = row[k]
  if (e === undefined) {
    const p = i * SLOT + HEAD
    e = [slab.subarray(p, p + len), slab.subarray(p + len, p + len + 16)]
    row[k] = e
  }
  return e
}

let t: DataplaneTables = init.tables
let tablesGen = t.gen
let logLevel = 0
let now = Date.now()
let nowS = 0

function pullTables(): void {
  for (;;) {
    const m = receiveMessageOnPort(port)
    if (!m) break
    const msg = m.message as { t: string; tables?: DataplaneTables }
    if (msg.t === 'tables' && msg.tables) t = msg.tables
  }
  tablesGen = Atomics.load(g, G_CONFIG_GEN)
}

function rd32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0
}
function rd32le(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0
}
function wr32le(b: Uint8Array, o: number, x: number): void {
  b[o] = x & 255
  b[o + 1] = (x >>> 8) & 255
  b[o + 2] = (x >>> 16) & 255
  b[o + 3] = (x >>> 24) & 255
}

function drop(reason: number): void {
  reasons[rBase + reason]++
}

/** -v 5: one line per packet decision. Only here do we build objects per packet. */
function flowLog(dir: 'in' | 'out', peer: number, b: Uint8Array, p: number, len: number, verdict: string): void {
  const proto = b[p + 9]
  const ihl = (b[p] & 15) * 4
  const hasPorts = proto === PROTO_TCP || proto === PROTO_UDP
  port.postMessage({
    t: 'flow', dir, peer, proto, src: rd32(b, p + 12), dst: rd32(b, p + 16),
    sport: hasPorts ? (b[p + ihl] << 8) | b[p + ihl + 1] : proto === PROTO_ICMP ? b[p + ihl] : 0,
    dport: hasPorts ? (b[p + ihl + 2] << 8) | b[p + ihl + 3] : proto === PROTO_ICMP ? (b[p + ihl + 4] << 8) | b[p + ihl + 5] : 0,
    len, verdict,
  })
}

/** Ports word for conntrack, from the peer's side: peerPort<<16 | lanPort (ICMP echo: id<<16). */
function portsWord(b: Uint8Array, p: number, proto: number, peerIsSource: boolean): number {
  const l4 = p + (b[p] & 15) * 4
  if (proto === PROTO_TCP || proto === PROTO_UDP) {
    const sp = (b[l4] << 8) | b[l4 + 1]
    const dp = (b[l4 + 2] << 8) | b[l4 + 3]
    return peerIsSource ? ((sp << 16) | dp) >>> 0 : ((dp << 16) | sp) >>> 0
  }
  if (proto === PROTO_ICMP) {
    const type = b[l4]
    if (type === 8 || type === 0) return (((b[l4 + 4] << 8) | b[l4 + 5]) << 16) >>> 0
  }
  return 0
}

/** Exit node: may this packet from the LAN (src in ProvidesRoutes) go to `dst`, a peer? */
function replyAllowed(b: Uint8Array, p: number, len: number, src: number, dst: number): boolean {
  const proto = b[p + 9]
  const l4 = p + (b[p] & 15) * 4
  if (proto === PROTO_ICMP && len >= l4 - p + 8 + 20) {
    const type = b[l4]
    if (type === 3 || type === 11 || type === 12) {
      // An ICMP error quoting a packet the peer sent: check the quoted flow.
      const q = l4 + 8
      const qproto = b[q + 9]
      if (len < q - p + (b[q] & 15) * 4 + 8) return false
      return ctReply(ct, qproto, rd32(b, q + 12), rd32(b, q + 16), portsWord(b, q, qproto, true), nowS, 0) >= 0
    }
  }
  const flags = proto === PROTO_TCP ? b[l4 + 13] : 0
  return ctReply(ct, proto, dst, src, portsWord(b, p, proto, false), nowS, ttlFor(proto, flags)) >= 0
}

function runOutbound(): void {
  const n = native.readBatch(init.tunFd, oSlab, SLOT, HEAD, oLens, BATCH, 0)
  if (n <= 0) return
  let sends = 0
  for (let i = 0; i < n; i++) {
    sLens[i] = 0
    const len = oLens[i]
    const p = i * SLOT + HEAD
    if (len < 20 || (oSlab[p] >> 4) !== 4) { drop(R.not_ipv4); continue }
    const src = rd32(oSlab, p + 12)
    const dst = rd32(oSlab, p + 16)
    const peer = lookupRoute(t.routeChild, t.routeVal, dst)
    if (peer < 0) {
      drop(R.no_route)
      if (logLevel >= 5) flowLog('out', -1, oSlab, p, len, 'drop no_route')
      continue
    }
    const cb = cBase + peer * C_PEER_FIELDS
    if (t.exitNode && lookupRoute(t.providedChild, t.providedVal, src) >= 0) {
      if (!replyAllowed(oSlab, p, len, src, dst)) {
        drop(R.unsolicited)
        if (logLevel >= 5) flowLog('out', peer, oSlab, p, len, 'drop unsolicited (LAN hosts may only reply)')
        continue
      }
      counters[cb + C_FROM_LAN_BYTES] += len
    }
    const pb = peer * P_FIELDS
    const kp = Atomics.load(peerI32, pb + P_CUR_KP)
    const endpoint = peerF64[peer * PF_FIELDS + PF_ENDPOINT]
    const kb = kp * K_FIELDS
    if (kp < 0 || endpoint === 0 || Atomics.load(kpI32, kb + K_STATE) !== KP_VALID || now - kpF64[kp * KF_FIELDS + KF_CREATED_MS] >= REJECT_AFTER_TIME_MS) {
      if (!ring.push(MSG_STAGED, oSlab, p, len, 0, 0, peer, 0)) drop(R.ring_full)
      else drop(R.staged)
      if (logLevel >= 5) flowLog('out', peer, oSlab, p, len, 'queued: waiting for handshake')
      continue
    }
    const index = kpI32[kb + K_INDEX]
    const ctr = Atomics.add(kpI32, kb + K_SEND_CTR, 1) >>> 0
    if (ctr >= SEND_COUNTER_LIMIT) { drop(R.counter_exhausted); continue }
    if ((ctr >= SEND_COUNTER_REKEY || (kpI32[kb + K_INITIATOR] === 1 && now - kpF64[kp * KF_FIELDS + KF_CREATED_MS] >= REKEY_AFTER_TIME_MS)) && now - rekeySignalled[peer] > 1000) {
      rekeySignalled[peer] = now
      ring.push(MSG_REKEY, oSlab, 0, 0, 0, 0, peer, kp)
    }
    let padded = (len + 15) & ~15
    if (padded > MTU) padded = len > MTU ? len : MTU
    for (let j = len; j < padded; j++) oSlab[p + j] = 0
    const h = i * SLOT
    oSlab[h] = MSG_TRANSPORT
    oSlab[h + 1] = 0
    oSlab[h + 2] = 0
    oSlab[h + 3] = 0
    wr32le(oSlab, h + 4, kpI32[kb + K_REMOTE])
    wr32le(oSlab, h + 8, ctr)
    wr32le(oSlab, h + 12, 0)
    wr32le(oNonce, 4, ctr)
    const sv = (padded & 15) === 0 ? slotViews(oViews, oSlab, i, padded) : [oSlab.subarray(p, p + padded), oSlab.subarray(p + padded, p + padded + 16)]
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(sv[0], sv[1], sv[0], null, null, oNonce, sendKeys[kp])
    // The keypair may have been retired while we encrypted; never send under a recycled slot.
    if (Atomics.load(kpI32, kb + K_INDEX) !== index) { drop(R.expired); continue }
    if (logLevel >= 5) flowLog('out', peer, oSlab, p, len, 'routed')
    sLens[i] = HEAD + padded + 16
    oAddrs[2 * i] = Math.floor(endpoint / 65536) >>> 0
    oAddrs[2 * i + 1] = endpoint % 65536
    counters[cb + C_TX_BYTES] += len
    counters[cb + C_TX_PKTS]++
    const pf = peer * PF_FIELDS
    peerF64[pf + PF_LAST_TX_DATA] = now
    peerF64[pf + PF_LAST_TX_ANY] = now
    sends++
  }
  if (sends > 0) native.sendBatch(init.udpFd, oSlab, SLOT, 0, sLens, oAddrs, n)
}

function runInbound(): void {
  const n = native.recvBatch(init.udpFd, iSlab, SLOT, iLens, iAddrs, BATCH, 0)
  if (n <= 0) return
  let writes = 0
  for (let i = 0; i < n; i++) {
    wLens[i] = 0
    const len = iLens[i]
    const b = i * SLOT
    if (len < 4 || iSlab[b + 1] !== 0 || iSlab[b + 2] !== 0 || iSlab[b + 3] !== 0) { drop(R.malformed); continue }
    const type = iSlab[b]
    if (type !== MSG_TRANSPORT) {
      if (type >= 1 && type <= 3) {
        drop(R.handshake_msgs)
        if (!ring.push(MSG_HANDSHAKE, iSlab, b, len, iAddrs[2 * i], iAddrs[2 * i + 1], -1, 0)) drop(R.ring_full)
      } else drop(R.malformed)
      continue
    }
    if (len < 32) { drop(R.malformed); continue }
    const idx = rd32le(iSlab, b + 4)
    const kp = idx & KP_MASK
    const kb = kp * K_FIELDS
    const state = Atomics.load(kpI32, kb + K_STATE)
    if (state === 0 || (kpI32[kb + K_INDEX] >>> 0) !== idx) { drop(R.bad_index); continue }
    const kf = kp * KF_FIELDS
    if (now - kpF64[kf + KF_CREATED_MS] >= REJECT_AFTER_TIME_MS) { drop(R.expired); continue }
    const counter = rd32le(iSlab, b + 12) * 4294967296 + rd32le(iSlab, b + 8)
    const rb = kp * REPLAY_WORDS
    if (counter >= RECV_COUNTER_LIMIT || !replayMaybeFresh(kpReplay, rb, kpF64[kf + KF_REPLAY_LAST], counter)) { drop(R.replay); continue }
    const clen = len - 32
    iNonce[4] = iSlab[b + 8]; iNonce[5] = iSlab[b + 9]; iNonce[6] = iSlab[b + 10]; iNonce[7] = iSlab[b + 11]
    iNonce[8] = iSlab[b + 12]; iNonce[9] = iSlab[b + 13]; iNonce[10] = iSlab[b + 14]; iNonce[11] = iSlab[b + 15]
    const p = b + HEAD
    const sv = (clen & 15) === 0 ? slotViews(iViews, iSlab, i, clen) : [iSlab.subarray(p, p + clen), iSlab.subarray(p + clen, p + clen + 16)]
    try {
      sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached(sv[0], null, sv[0], sv[1], null, iNonce, recvKeys[kp])
    } catch {
      drop(R.bad_mac)
      if (logLevel >= 5) port.postMessage({ t: 'log', level: 'info', msg: `in: bad MAC from ${iAddrs[2 * i] >>> 24}.${(iAddrs[2 * i] >>> 16) & 255}.${(iAddrs[2 * i] >>> 8) & 255}.${iAddrs[2 * i] & 255}:${iAddrs[2 * i + 1]}` })
      continue
    }
    while (Atomics.compareExchange(kpI32, kb + K_LOCK, 0, 1) !== 0) { /* uncontended in practice: one worker per flow */ }
    const fresh = replayCheckAndSet(kpReplay, rb, kpF64, kf + KF_REPLAY_LAST, counter)
    Atomics.store(kpI32, kb + K_LOCK, 0)
    if (!fresh) { drop(R.replay); continue }
    const peer = kpI32[kb + K_PEER]
    if (state === KP_RECV_ONLY && Atomics.compareExchange(kpI32, kb + K_STATE, KP_RECV_ONLY, KP_VALID) === KP_RECV_ONLY) {
      // The initiator used the new session: it becomes ours for sending too.
      Atomics.store(peerI32, peer * P_FIELDS + P_CUR_KP, kp)
      ring.push(MSG_CONFIRMED, iSlab, 0, 0, 0, 0, peer, kp)
    }
    const pf = peer * PF_FIELDS
    const ep = iAddrs[2 * i] * 65536 + iAddrs[2 * i + 1]
    if (peerF64[pf + PF_ENDPOINT] !== ep) peerF64[pf + PF_ENDPOINT] = ep // roaming: authenticated packets only
    peerF64[pf + PF_LAST_RX_ANY] = now
    const cb = cBase + peer * C_PEER_FIELDS
    counters[cb + C_RX_PKTS]++
    if (clen === 0) { drop(R.keepalive); continue }
    if (clen < 20 || (iSlab[p] >> 4) !== 4) { drop(R.not_ipv4); continue }
    const tot = (iSlab[p + 2] << 8) | iSlab[p + 3]
    if (tot < 20 || tot > clen) { drop(R.malformed); continue }
    const src = rd32(iSlab, p + 12)
    const dst = rd32(iSlab, p + 16)
    const grp = lookupRoute(t.allowChild, t.allowVal, src)
    let allowed = false
    if (grp >= 0) for (let j = t.groupStart[grp]; j < t.groupStart[grp + 1]; j++) if (t.groupPeers[j] === peer) allowed = true
    if (!allowed) {
      drop(R.not_allowed)
      if (logLevel >= 5) flowLog('in', peer, iSlab, p, tot, 'drop not_allowed (source not allowed for this peer)')
      continue
    }
    const where = lookupRoute(t.localChild, t.localVal, dst)
    if (where < 0) {
      drop(R.not_for_us)
      if (logLevel >= 5) flowLog('in', peer, iSlab, p, tot, 'drop not_for_us')
      continue
    }
    if (where === LOCAL_PROVIDED) {
      const proto = iSlab[p + 9]
      const flags = proto === PROTO_TCP ? iSlab[p + (iSlab[p] & 15) * 4 + 13] : 0
      if (ctTrack(ct, proto, src, dst, portsWord(iSlab, p, proto, true), peer, nowS, ttlFor(proto, flags)) === 2) drop(R.conntrack_full)
      counters[cb + C_TO_LAN_BYTES] += tot
    }
    if (logLevel >= 5) flowLog('in', peer, iSlab, p, tot, where === LOCAL_PROVIDED ? 'routed to LAN' : 'delivered')
    counters[cb + C_RX_BYTES] += tot
    peerF64[pf + PF_LAST_RX_DATA] = now
    wLens[i] = tot
    writes++
  }
  if (writes > 0) {
    const w = native.writeBatch(init.tunFd, iSlab, SLOT, HEAD, wLens, n)
    if (w < writes) reasons[rBase + R.tun_write_error] += w < 0 ? writes : writes - w
  }
}

function runDataplaneLoop(): void {
  while (Atomics.load(g, G_STOP) === 0) {
    if (Atomics.load(g, G_CONFIG_GEN) !== tablesGen) pullTables()
    const ev = native.poll2(init.udpFd, init.tunFd, 50)
    if (ev < 0) {
      port.postMessage({ t: 'log', level: 'error', msg: `poll failed: ${native.strerror(-ev)}` })
      break
    }
    if (ev === 0) continue
    now = Date.now()
    nowS = Math.floor((now - init.epochMs) / 1000)
    logLevel = g[G_LOG_LEVEL]
    if (ev & 1) runInbound()
    if (ev & 2) runOutbound()
  }
}

runDataplaneLoop()
port.postMessage({ t: 'stopped', id: init.id })
