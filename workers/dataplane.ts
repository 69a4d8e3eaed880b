/**
 * Data-plane worker: one per core, each owning one TUN queue and one UDP socket (SO_REUSEPORT).
 * Run to completion, batch by batch (src/dataplane/pipeline.ts does the per-packet work):
 *
 *   poll(UDP, TUN) -> recvBatch (UDP GRO split)           -> pipeline.inbound  -> writeBatch (TUN)
 *                  -> readBatch, or with TUN offload:
 *                     readArena -> segmentPacket (TSO split) -> pipeline.outbound -> sendBatch (UDP GSO)
 *
 * Handshake messages (their mac1 checked, and under load their mac2, else a cookie reply is sent from here)
 * and packets without a session go to control through the SPSC ring.
 * Routing tables arrive as whole snapshots (postMessage, pulled synchronously when G_CONFIG_GEN
 * moves), so a worker never sees a half-built table. The loop checks G_STOP at least every 200 ms.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads'
import { type PacketIo, checkBatchBuffers } from '../src/io/packet-io.js'
import { MemoryPacketIo } from '../src/io/memory-io.js'
import { workerClock } from '../src/ipc/shared-clock.js'
import { G_CONFIG_GEN, G_LOG_LEVEL, G_STOP, R, REASONS } from '../src/ipc/layout.js'
import type { DataplaneTables, WorkerInit } from '../src/ipc/messages.js'
import { HEADROOM, Pipeline } from '../src/dataplane/pipeline.js'
import { coalesceForTun, segmentPacket } from '../src/dataplane/offload.js'
import { COOKIE_REPLY_SIZE } from '../src/protocol/constants.js'
import type { DataPathWarmup } from '../src/warmup/warmup.js'

const init = workerData as WorkerInit
const port = parentPort!
// The I/O and the clock are chosen once, here: the loop below calls one implementation of each.
const nativeIo = init.io.kind === 'native' ? (await import('../src/native/io.js')).native : undefined
const io: PacketIo = nativeIo ?? new MemoryPacketIo(init.io as Extract<typeof init.io, { kind: 'memory' }>)
// Named for top -H, ps -L and perf (the kernel keeps 15 bytes).
nativeIo?.setThreadName(`enclave-dp${init.id}`)
const clock = workerClock(init.clock)
const g = new Int32Array(init.layout.global)
// With TSO one read can become ~48 segments: the outbound batch must hold a whole one.
const pipe = new Pipeline({ ...init, batch: init.offload ? 128 : init.batch, post: (m) => port.postMessage(m) })
const reasons = new Float64Array(init.layout.reasons)
// Lengths are checked once here, before the loop crosses into native code batch after batch.
checkBatchBuffers(pipe.oSlab, pipe.slot, pipe.oLens, pipe.batch, io.MAX_BATCH, pipe.oAddrs)
checkBatchBuffers(pipe.iSlab, pipe.slot, pipe.iLens, pipe.batch, io.MAX_BATCH, pipe.iAddrs)
checkBatchBuffers(pipe.cSlab, COOKIE_REPLY_SIZE, pipe.cLens, pipe.batch, io.MAX_BATCH, pipe.cAddrs)
const oU32 = new Uint32Array(pipe.oSlab.buffer, pipe.oSlab.byteOffset, pipe.oSlab.byteLength >> 2)
const groOffs = new Int32Array(256)
const groLens = new Int32Array(256)
const groSegs = new Int32Array(256) // packets of the batch inside each TUN write
const groCursor = new Int32Array(1)
// With USO the TUN also takes merged UDP datagrams; the merge sums payloads through this view.
const udpGro = init.uso ? new Uint32Array(pipe.iSlab.buffer, pipe.iSlab.byteOffset, pipe.iSlab.byteLength >> 2) : null
// Up to 64 reads per call: 64 small packets, or as many 64 KB TSO packets as the arena holds (4).
const ARENA_READS = 64
const arenaOffs = new Int32Array(ARENA_READS)
const arenaLens = new Int32Array(ARENA_READS)
let tablesGen = init.tables.gen
// Control waits for every worker to run with new tables before it says a change is applied.
const acks = new Int32Array(init.layout.tableAcks)
Atomics.store(acks, init.id, pipe.tables.gen)
/** How long an idle worker sleeps in poll before it checks G_STOP and table updates again. */
const IDLE_POLL_MS = 200
/**
 * The JIT warm-up (src/warmup/warmup.ts) runs in slices while the poll finds nothing to do: at most
 * this many rounds, and no more once WARMUP_SLICE_MS has passed (a first, unoptimised round can take
 * longer on its own).
 */
const WARMUP_SLICE = 64
const WARMUP_SLICE_MS = 0.5
/**
 * Between slices the poll waits this long: the warm-up takes at most about a third of a core, and the
 * agent's own start (handshakes, the hub, routes) and its neighbours keep the rest.
 */
const WARMUP_PAUSE_MS = 1
/** Dropped once done (its synthetic pair holds a connection table and slabs: several MB). */
let warmup: DataPathWarmup | undefined
if (init.warmup > 0)
  try {
    // Loaded only when used: it brings the synthetic session pair (keys, tables, conntrack) with it.
    const { DataPathWarmup } = await import('../src/warmup/warmup.js')
    warmup = new DataPathWarmup({ mtu: init.mtu, offload: init.offload, uso: init.uso, rounds: init.warmup })
  } catch (e) {
    port.postMessage({ t: 'log', level: 'warn', msg: `data path warm-up not started: ${(e as Error).message}` })
  }

/** One slice of the warm-up; false when it is over (done, or failed: that costs speed, never packets). */
function warmSlice(): boolean {
  try {
    if (warmup!.step(WARMUP_SLICE, WARMUP_SLICE_MS)) return true
    const w = warmup!.result
    port.postMessage({
      t: 'log',
      level: 'debug',
      msg: `data path warmed up: ${w.rounds} rounds, ${w.accepted} of ${w.packets} synthetic packets through, in ${w.ms} ms`,
    })
  } catch (e) {
    port.postMessage({ t: 'log', level: 'warn', msg: `data path warm-up stopped: ${(e as Error).message}` })
  }
  warmup = undefined
  return false
}

function pullTables(): void {
  // The generation first: control posts a table before it stores its generation, so every generation read
  // here has its message waiting. Read after the messages, a table posted in between would be marked as
  // taken while the worker kept the one before it.
  tablesGen = Atomics.load(g, G_CONFIG_GEN)
  for (;;) {
    const m = receiveMessageOnPort(port)
    if (!m) break
    const msg = m.message as { t: string; tables?: DataplaneTables }
    if (msg.t === 'tables' && msg.tables) pipe.tables = msg.tables
  }
  Atomics.store(acks, init.id, pipe.tables.gen)
}

/** Counts the packets inside the merged writes that writeArena marked as refused (length -1). */
function countFailedGroWrites(k: number): void {
  let lost = 0
  for (let i = 0; i < k; i++) if (groLens[i] < 0) lost += groSegs[i]
  if (lost > 0) pipe.countTunWriteErrors(lost)
}

/** Encrypts k packets from oSlab and sends them; what the socket does not take is counted. */
function flushOutbound(udpFd: number, SLOT: number, k: number): void {
  const sends = pipe.outbound(k)
  if (sends === 0) return
  const sent = io.sendBatch(udpFd, pipe.oSlab, SLOT, 0, pipe.sLens, pipe.oAddrs, k)
  if (sent < sends) pipe.countSendErrors(sent < 0 ? sends : sends - sent)
}

/**
 * Offload TUN: read up to 64 (possibly 64 KB TSO) packets, segment them into slots, send in batches.
 * Returns the read's result: a count, or -errno.
 */
function runOffloadOutbound(tunFd: number, udpFd: number, SLOT: number, B: number): number {
  const n = io.readArena(tunFd, pipe.arena!, arenaOffs, arenaLens, ARENA_READS, 0)
  let filled = 0
  for (let a = 0; a < n; a++) {
    const off = pipe.arenaBase + arenaOffs[a]
    let r = segmentPacket(pipe.oSlab, oU32, off, arenaLens[a], 0, SLOT, HEADROOM, filled, B - filled, pipe.oLens)
    if (r === 0 && filled > 0) {
      flushOutbound(udpFd, SLOT, filled)
      filled = 0
      r = segmentPacket(pipe.oSlab, oU32, off, arenaLens[a], 0, SLOT, HEADROOM, 0, B, pipe.oLens)
    }
    if (r <= 0) {
      // -1: a kind we do not carry (IPv6 super-packets); 0: malformed.
      reasons[init.id * REASONS.length + (r < 0 ? R.not_ipv4 : R.malformed)]++
      continue
    }
    filled += r
  }
  if (filled > 0) flushOutbound(udpFd, SLOT, filled)
  return n
}

function runDataplaneLoop(): void {
  const { tunFd, udpFd } = init.io.kind === 'native' ? init.io : { tunFd: -1, udpFd: -1 }
  const SLOT = pipe.slot
  const B = pipe.batch
  let warming = warmup !== undefined
  while (Atomics.load(g, G_STOP) === 0) {
    if (Atomics.load(g, G_CONFIG_GEN) !== tablesGen) pullTables()
    const ev = io.poll2(udpFd, tunFd, warming ? WARMUP_PAUSE_MS : IDLE_POLL_MS)
    if (ev < 0) {
      port.postMessage({ t: 'log', level: 'error', msg: `poll failed: ${io.strerror(-ev)}` })
      break
    }
    if (ev === 0) {
      if (warming) warming = warmSlice()
      continue
    }
    pipe.setClock(clock())
    pipe.logLevel = g[G_LOG_LEVEL]
    if (ev & 1) {
      const n = io.recvBatch(udpFd, pipe.iSlab, SLOT, pipe.iLens, pipe.iAddrs, B, 0)
      if (n > 0) {
        const writes = pipe.inbound(n)
        if (pipe.cCount > 0) {
          // Cookie replies made under load (handshake messages without a valid mac2).
          const sent = io.sendBatch(udpFd, pipe.cSlab, COOKIE_REPLY_SIZE, 0, pipe.cLens, pipe.cAddrs, pipe.cCount)
          if (sent < pipe.cCount) pipe.countSendErrors(sent < 0 ? pipe.cCount : pipe.cCount - sent)
        }
        if (writes > 0 && init.offload) {
          groCursor[0] = 0
          while (groCursor[0] < n) {
            const k = coalesceForTun(
              pipe.iSlab,
              SLOT,
              HEADROOM,
              pipe.wLens,
              n,
              pipe.iArenaBase,
              pipe.iSlab.length,
              groOffs,
              groLens,
              groCursor,
              udpGro,
              groSegs,
            )
            if (k <= 0) break
            if (io.writeArena(tunFd, pipe.iSlab, pipe.iArenaBase, groOffs, groLens, k) < k) countFailedGroWrites(k)
          }
        } else if (writes > 0) {
          const w = io.writeBatch(tunFd, pipe.iSlab, SLOT, HEADROOM, pipe.wLens, n)
          if (w < writes) pipe.countTunWriteErrors(w < 0 ? writes : writes - w)
        }
      }
    }
    if (ev & 2) {
      let n: number
      if (init.offload) n = runOffloadOutbound(tunFd, udpFd, SLOT, B)
      else {
        n = io.readBatch(tunFd, pipe.oSlab, SLOT, HEADROOM, pipe.oLens, B, 0)
        if (n > 0) flushOutbound(udpFd, SLOT, n)
      }
      // The addon returns EAGAIN and EINTR as 0: any error here is the device's. Deleted underneath us
      // (`ip link del`), a TUN queue reads EBADFD and polls readable for ever: the worker would spin.
      if (n < 0) {
        port.postMessage({ t: 'device-lost', errno: -n, err: io.strerror(-n) })
        break
      }
    }
  }
}

port.postMessage({ t: 'ready', id: init.id })
runDataplaneLoop()
