/**
 * Data-plane worker: one per core, each owning one TUN queue and one UDP socket (SO_REUSEPORT).
 * Run to completion, batch by batch (src/dataplane/pipeline.ts does the per-packet work):
 *
 *   poll(UDP, TUN) -> recvBatch  -> pipeline.inbound  -> writeBatch (TUN)
 *                  -> readBatch  -> pipeline.outbound -> sendBatch  (UDP)
 *
 * Handshake messages and packets without a session go to control through the SPSC ring.
 * Routing tables arrive as whole snapshots (postMessage, pulled synchronously when G_CONFIG_GEN
 * moves), so a worker never sees a half-built table. The loop checks G_STOP at least every 50 ms.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads'
import { native } from '../src/native/io.js'
import { G_CONFIG_GEN, G_LOG_LEVEL, G_STOP } from '../src/ipc/layout.js'
import type { DataplaneTables, WorkerInit } from '../src/ipc/messages.js'
import { HEADROOM, Pipeline } from '../src/dataplane/pipeline.js'

const init = workerData as WorkerInit
const port = parentPort!
const g = new Int32Array(init.layout.global)
const pipe = new Pipeline({ ...init, post: (m) => port.postMessage(m) })
let tablesGen = init.tables.gen

function pullTables(): void {
  for (;;) {
    const m = receiveMessageOnPort(port)
    if (!m) break
    const msg = m.message as { t: string; tables?: DataplaneTables }
    if (msg.t === 'tables' && msg.tables) pipe.tables = msg.tables
  }
  tablesGen = Atomics.load(g, G_CONFIG_GEN)
}

function runDataplaneLoop(): void {
  const { tunFd, udpFd } = init
  const SLOT = pipe.slot
  const B = pipe.batch
  while (Atomics.load(g, G_STOP) === 0) {
    if (Atomics.load(g, G_CONFIG_GEN) !== tablesGen) pullTables()
    const ev = native.poll2(udpFd, tunFd, 50)
    if (ev < 0) {
      port.postMessage({ t: 'log', level: 'error', msg: `poll failed: ${native.strerror(-ev)}` })
      break
    }
    if (ev === 0) continue
    pipe.setClock(Date.now())
    pipe.logLevel = g[G_LOG_LEVEL]
    if (ev & 1) {
      const n = native.recvBatch(udpFd, pipe.iSlab, SLOT, pipe.iLens, pipe.iAddrs, B, 0)
      if (n > 0) {
        const writes = pipe.inbound(n)
        if (writes > 0) {
          const w = native.writeBatch(tunFd, pipe.iSlab, SLOT, HEADROOM, pipe.wLens, n)
          if (w < writes) pipe.countTunWriteErrors(w < 0 ? writes : writes - w)
        }
      }
    }
    if (ev & 2) {
      const n = native.readBatch(tunFd, pipe.oSlab, SLOT, HEADROOM, pipe.oLens, B, 0)
      if (n > 0 && pipe.outbound(n) > 0) native.sendBatch(udpFd, pipe.oSlab, SLOT, 0, pipe.sLens, pipe.oAddrs, n)
    }
  }
}

runDataplaneLoop()
port.postMessage({ t: 'stopped', id: init.id })
