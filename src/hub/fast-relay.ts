/**
 * The hub's UDP relay on the addon's batched sockets (issue 20's throughput target): the same protocol,
 * binding, return routability, shape check and limits as src/hub/relay.ts (see its doc comment), with the
 * data path in a worker thread (workers/relay-pump.ts) that reads each port in batches (GRO) and sends in
 * batches (GSO). This side allocates the ports and tokens, tracks pairs and idleness, and reports.
 * Used by `hub serve` when the addon loads; src/hub/relay.ts (dgram sockets) otherwise.
 */
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Worker } from 'node:worker_threads'
import { parseIpv4 } from '../common/ipv4.js'
import { startWorker } from '../common/worker-file.js'
import type { AgentLogger as Logger } from '../log/logger.js'
import { native } from '../native/io.js'
import type { RelayAllocation } from './relay.js'

export interface FastRelayOptions {
  log: Logger
  host?: string
  ports?: { first: number; last: number } | 0
  pairBytesPerSec?: number
  hubBytesPerSec?: number
  /** Packets a second per pair (default 200,000) and for the relay (default 800,000), as relay.ts. */
  pairPacketsPerSec?: number
  hubPacketsPerSec?: number
  idleMs?: number
  maxPairs?: number
  maxPerSystem?: number
}

interface PairInfo {
  key: string
  a: string
  b: string
  grant: RelayAllocation
  lastActiveAgoMs: number
  packets: [number, number]
  bytes: [number, number]
  dropped: number
}

export class FastRelay extends EventEmitter {
  private readonly worker: Worker
  private readonly pairs = new Map<string, PairInfo>()
  private readonly perSystem = new Map<string, number>()
  private readonly ip: number
  private nextPort = 0
  private readonly sweeper: NodeJS.Timeout
  totals = { packets: 0, bytes: 0, binds: 0, dropped: 0 }

  constructor(private readonly opts: FastRelayOptions) {
    super()
    const host = opts.host === 'localhost' || !opts.host ? '0.0.0.0' : opts.host
    const ip = parseIpv4(host === '0.0.0.0' ? '0.0.0.0' : host)
    if (typeof ip !== 'number') throw new Error(`relay: ${host} is not an IPv4 address`)
    this.ip = opts.host === 'localhost' ? 0x7f000001 : ip
    this.worker = startWorker('relay-pump', {
      workerData: {
        pairBytesPerSec: opts.pairBytesPerSec ?? 125_000_000,
        hubBytesPerSec: opts.hubBytesPerSec ?? 500_000_000,
        pairPacketsPerSec: opts.pairPacketsPerSec ?? 200_000,
        hubPacketsPerSec: opts.hubPacketsPerSec ?? 800_000,
        burstSeconds: 0.25,
      },
    })
    this.worker.on('message', (m: { t: string; [k: string]: unknown }) => {
      if (m.t === 'stats') {
        this.totals = m.totals as FastRelay['totals']
        for (const p of m.pairs as Array<{
          key: string
          lastActiveAgoMs: number
          packets: [number, number]
          bytes: [number, number]
          dropped: number
        }>) {
          const info = this.pairs.get(p.key)
          if (info) Object.assign(info, { lastActiveAgoMs: p.lastActiveAgoMs, packets: p.packets, bytes: p.bytes, dropped: p.dropped })
        }
      } else if (m.t === 'bound') this.emit('bound', m.key, m.identity, m.addr, m.rebind)
    })
    this.worker.on('error', (e) => opts.log.error({ err: e.message }, 'relay worker failed'))
    this.sweeper = setInterval(() => this.sweep(), 10_000)
    this.sweeper.unref()
  }

  private openPort(): { fd: number; port: number } {
    const range = this.opts.ports
    const tries = range ? range.last - range.first + 1 : 1
    for (let i = 0; i < tries; i++) {
      const want = range ? range.first + ((this.nextPort++ % tries) >>> 0) : 0
      const fd = native.udpOpen(this.ip >>> 0, want, false, 4 << 20, 4 << 20, 0, true)
      if (fd < 0) continue
      return { fd, port: native.udpLocalPort(fd) }
    }
    throw new Error('relay: no free port')
  }

  async allocate(key: string, a: string, b: string): Promise<RelayAllocation> {
    const have = this.pairs.get(key)
    if (have) {
      if (!(have.a === a && have.b === b) && !(have.a === b && have.b === a)) throw new Error('relay: pair key in use')
      return have.grant
    }
    if (this.pairs.size >= (this.opts.maxPairs ?? 4096)) throw new Error('relay: too many pairs')
    for (const s of [a, b])
      if ((this.perSystem.get(s) ?? 0) >= (this.opts.maxPerSystem ?? 64)) throw new Error(`relay: ${s} has too many pairs`)
    const pa = this.openPort()
    let pb: { fd: number; port: number }
    try {
      pb = this.openPort()
    } catch (e) {
      native.close(pa.fd)
      throw e
    }
    const ta = crypto.randomBytes(16).toString('hex')
    const tb = crypto.randomBytes(16).toString('hex')
    const grant: RelayAllocation = { [a]: { port: pa.port, token: ta }, [b]: { port: pb.port, token: tb } }
    this.pairs.set(key, { key, a, b, grant, lastActiveAgoMs: 0, packets: [0, 0], bytes: [0, 0], dropped: 0 })
    for (const s of [a, b]) this.perSystem.set(s, (this.perSystem.get(s) ?? 0) + 1)
    this.worker.postMessage({
      t: 'add',
      key,
      sides: [
        { fd: pa.fd, token: ta, identity: a },
        { fd: pb.fd, token: tb, identity: b },
      ],
    })
    return grant
  }

  release(key: string, reason = 'released'): boolean {
    const p = this.pairs.get(key)
    if (!p) return false
    this.pairs.delete(key)
    for (const s of [p.a, p.b]) this.perSystem.set(s, (this.perSystem.get(s) ?? 1) - 1)
    this.worker.postMessage({ t: 'del', key })
    this.emit('released', { pairKey: key, packets: p.packets, bytes: p.bytes }, reason)
    return true
  }

  /** Releases pairs idle for idleMs (default 120 s), as last reported by the worker. */
  sweep(): number {
    let n = 0
    for (const p of [...this.pairs.values()]) if (p.lastActiveAgoMs > (this.opts.idleMs ?? 120_000) && this.release(p.key, 'idle')) n++
    return n
  }

  stats(): { pairs: number; packets: number; bytes: number; binds: number; dropped: number } {
    return { pairs: this.pairs.size, ...this.totals }
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper)
    const stopped = new Promise<void>((r) => {
      this.worker.on('message', (m: { t: string }) => m.t === 'stopped' && r())
      this.worker.once('exit', () => r())
    })
    this.worker.postMessage({ t: 'stop' })
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 1000))])
    await this.worker.terminate()
  }
}
