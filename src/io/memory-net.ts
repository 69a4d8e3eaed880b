/**
 * A network in memory for whole agents in one process: each agent's UDP port is an address on a
 * shared wire, and each agent's TUN device is a pair of queues that the test reads and writes as the
 * agent's operating system would. The wire moves datagrams from the agents' output rings to the
 * destination's input rings on the thread that owns it (never blocking it: Atomics.waitAsync), and can
 * drop, count or rewrite them (loss, partitions, NAT) through `filter`.
 */
import { intToIp } from '../common/ipv4.js'
import {
  type MemoryQueue,
  PacketRing,
  type PacketRingBuffers,
  createMemoryQueue,
  createPacketRing,
  memorySlotBytes,
  ring,
} from './memory-io.js'

export interface Datagram {
  srcIp: number
  srcPort: number
  dstIp: number
  dstPort: number
  data: Uint8Array
}

/** What the wire does with a datagram: deliver it (possibly rewritten), or drop it. */
export type WireFilter = (d: Datagram) => Datagram | null

const key = (ip: number, port: number) => `${ip >>> 0}:${port}`

/** One agent's attachment: its UDP address, its workers' queues and its TUN as seen from the OS side. */
export class MemoryPort {
  readonly queues: MemoryQueue[] = []
  readonly ctrlOut: PacketRingBuffers
  private readonly ctrl: PacketRing
  private readonly outs: PacketRing[] = []
  private readonly tunOuts: PacketRing[] = []
  private readonly ins: PacketRing[] = []
  private readonly tunIns: PacketRing[] = []
  private readonly bells: Int32Array[] = []
  /** Packets the agent wrote to its TUN, oldest first, until taken. */
  readonly fromTun: Uint8Array[] = []
  private waiters: Array<() => void> = []
  detached = false
  private readonly wireBell: Int32Array

  constructor(
    readonly ip: number,
    readonly port: number,
    wire: SharedArrayBuffer,
    mtu: number,
    workers: number,
  ) {
    for (let i = 0; i < workers; i++) {
      const q = createMemoryQueue(wire, mtu)
      this.queues.push(q)
      this.outs.push(new PacketRing(q.udpOut))
      this.tunOuts.push(new PacketRing(q.tunOut))
      this.ins.push(new PacketRing(q.udpIn))
      this.tunIns.push(new PacketRing(q.tunIn))
      this.bells.push(new Int32Array(q.bell))
    }
    this.wireBell = new Int32Array(wire)
    this.ctrlOut = createPacketRing(256, memorySlotBytes(mtu))
    this.ctrl = new PacketRing(this.ctrlOut)
  }

  get address(): string {
    return `${intToIp(this.ip)}:${this.port}`
  }

  /** The OS sends `pkt` (an IPv4 packet) into the agent's TUN. False when the queue is full. */
  sendToTun(pkt: Uint8Array): boolean {
    // The kernel spreads flows over a multi-queue TUN; here flows go by their addresses' hash.
    const q = pkt.length >= 20 ? ((pkt[15] ^ pkt[19] ^ pkt[14] ^ pkt[18]) >>> 0) % this.tunIns.length : 0
    const ok = this.tunIns[q].push(pkt, 0, pkt.length, 0, 0)
    if (ok) ring(this.bells[q])
    return ok
  }

  /** Resolves with the next packet the agent writes to its TUN that `match` accepts (undefined on timeout). */
  async nextFromTun(match: (p: Uint8Array) => boolean = () => true, timeoutMs = 5000): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const i = this.fromTun.findIndex(match)
      if (i >= 0) return this.fromTun.splice(i, 1)[0]
      const left = deadline - Date.now()
      if (left <= 0) return undefined
      await new Promise<void>((r) => {
        const t = setTimeout(r, left)
        this.waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
  }

  /** Nothing is waiting in any of this port's rings, in either direction. */
  idle(): boolean {
    if (this.ctrl.size() > 0) return false
    for (const rs of [this.outs, this.tunOuts, this.ins, this.tunIns]) for (const r of rs) if (r.size() > 0) return false
    return true
  }

  /** Control's sender: one datagram into the ctrl ring (dropped when full, as a full socket would). */
  readonly send = (buf: Uint8Array, ip: number, port: number): void => {
    if (this.ctrl.push(buf, 0, buf.length, ip, port)) ring(this.wireBell)
  }

  /** Moves what the agent produced; returns the datagrams it sent. */
  collect(scratch: Uint8Array): Datagram[] {
    const out: Datagram[] = []
    const take = (r: PacketRing) => {
      for (;;) {
        const len = r.pop(scratch, 0, scratch.length)
        if (len < 0) break
        if (len > scratch.length) continue
        out.push({ srcIp: this.ip, srcPort: this.port, dstIp: r.ip, dstPort: r.port, data: scratch.slice(0, len) })
      }
    }
    take(this.ctrl)
    for (const r of this.outs) take(r)
    let tun = 0
    for (const r of this.tunOuts) {
      for (;;) {
        const len = r.pop(scratch, 0, scratch.length)
        if (len < 0) break
        if (len > scratch.length) continue
        this.fromTun.push(scratch.slice(0, len))
        tun++
      }
    }
    if (this.fromTun.length > 10_000) this.fromTun.splice(0, this.fromTun.length - 10_000)
    if (tun > 0) {
      const w = this.waiters
      this.waiters = []
      for (const f of w) f()
    }
    return out
  }

  /** Delivers a datagram to one worker (by the source's hash, as SO_REUSEPORT does). */
  deliver(d: Datagram): boolean {
    const q = ((d.srcIp ^ d.srcPort) >>> 0) % this.ins.length
    const ok = this.ins[q].push(d.data, 0, d.data.length, d.srcIp, d.srcPort)
    if (ok) ring(this.bells[q])
    return ok
  }
}

export class MemoryNet {
  readonly wire = new SharedArrayBuffer(4)
  private readonly bell = new Int32Array(this.wire)
  private readonly ports = new Map<string, MemoryPort>()
  private readonly scratch = new Uint8Array(65536)
  private running = true
  private readonly loop: Promise<void>
  /** Rewrites or drops datagrams in flight (null = drop). */
  filter: WireFilter | undefined
  /** Datagrams delivered, dropped by the filter, and sent to an address nobody has. */
  readonly counts = { delivered: 0, filtered: 0, unreachable: 0, full: 0 }

  constructor() {
    this.loop = this.run()
  }

  /** An agent's port at ip:port with `workers` queues. */
  attach(ip: number, port: number, mtu: number, workers: number): MemoryPort {
    const k = key(ip, port)
    if (this.ports.has(k)) throw new Error(`address ${intToIp(ip)}:${port} is already in use on the memory network`)
    const p = new MemoryPort(ip, port, this.wire, mtu, workers)
    this.ports.set(k, p)
    return p
  }

  detach(p: MemoryPort): void {
    p.detached = true
    if (this.ports.get(key(p.ip, p.port)) === p) this.ports.delete(key(p.ip, p.port))
  }

  /** Sends a datagram from any address (an attacker, a stock peer simulated by the test). */
  inject(d: Datagram): boolean {
    return this.route(d)
  }

  /** Moves everything waiting now (the loop does this by itself; tests may call it to settle). */
  pump(): number {
    let moved = 0
    for (const p of [...this.ports.values()]) {
      for (const d of p.collect(this.scratch)) {
        this.route(d)
        moved++
      }
    }
    return moved
  }

  /** Every attached port is idle (its workers have taken everything they were sent). */
  idle(): boolean {
    for (const p of this.ports.values()) if (!p.idle()) return false
    return true
  }

  private route(d0: Datagram): boolean {
    const d = this.filter ? this.filter(d0) : d0
    if (!d) {
      this.counts.filtered++
      return false
    }
    const to = this.ports.get(key(d.dstIp, d.dstPort))
    if (!to) {
      this.counts.unreachable++
      return false
    }
    if (!to.deliver(d)) {
      this.counts.full++
      return false
    }
    this.counts.delivered++
    return true
  }

  private async run(): Promise<void> {
    while (this.running) {
      const seen = Atomics.load(this.bell, 0)
      if (this.pump() === 0) {
        const r = Atomics.waitAsync(this.bell, 0, seen, 50)
        if (r.async) await r.value
      }
      // The agents' control threads share this thread: let them run between rounds.
      await new Promise<void>((res) => setImmediate(res))
    }
  }

  async close(): Promise<void> {
    this.running = false
    ring(this.bell) // a pending waitAsync does not keep the process alive: wake it now
    await this.loop
  }
}
