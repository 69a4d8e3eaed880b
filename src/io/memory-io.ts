/**
 * The data plane over memory instead of a TUN device and a UDP socket, for whole agents in one process
 * (tests, benches): every queue is a single-producer / single-consumer ring of packets in shared memory.
 *
 *   per worker:  tunIn  (the "OS" sends a packet into the TUN: the worker reads it)
 *                tunOut (the worker writes a packet to the TUN: the "OS" receives it)
 *                udpIn  (a datagram arrives at the agent's port: the worker receives it, with its source)
 *                udpOut (the worker sends a datagram, with its destination)
 *   per agent:   ctrlOut (control's own sends: handshakes, keepalives, staged packets)
 *
 * A worker sleeps on its `bell` (Atomics.wait) and whoever fills one of its input rings rings it. Whatever
 * an agent puts into an output ring rings the `wire` bell, which the owner of the rings (src/io/memory-net.ts)
 * waits on without blocking its thread (Atomics.waitAsync). Nothing here allocates per packet.
 */
import type { MemoryQueue, PacketIo, PacketRingBuffers } from './packet-io.js'

export type { MemoryQueue, PacketRingBuffers }

const H_HEAD = 0
const H_TAIL = 1
const META = 4 // len, ip, port, -

export function createPacketRing(capacity: number, slotBytes: number): PacketRingBuffers {
  if ((capacity & (capacity - 1)) !== 0) throw new Error('ring capacity must be a power of two')
  return {
    header: new SharedArrayBuffer(16),
    meta: new SharedArrayBuffer(capacity * META * 4),
    data: new SharedArrayBuffer(capacity * slotBytes),
    capacity,
    slotBytes,
  }
}

/**
 * One SPSC ring of packets. The producer copies a packet into the next slot and publishes it with
 * Atomics.store of the tail; the consumer copies it out and releases the slot with Atomics.store of the
 * head. The counters wrap at 2^31: sizes are differences modulo 2^32.
 */
export class PacketRing {
  private readonly h: Int32Array
  private readonly meta: Int32Array
  private readonly data: Uint8Array
  private readonly mask: number
  readonly slotBytes: number
  /** Source (pop) of the last packet popped. */
  ip = 0
  port = 0

  constructor(b: PacketRingBuffers) {
    this.h = new Int32Array(b.header)
    this.meta = new Int32Array(b.meta)
    this.data = new Uint8Array(b.data)
    this.mask = b.capacity - 1
    this.slotBytes = b.slotBytes
  }

  size(): number {
    return (Atomics.load(this.h, H_TAIL) - Atomics.load(this.h, H_HEAD)) | 0
  }

  /** Copies src[off, off+len) into the ring; false when the ring is full or the packet too long (a drop). */
  push(src: Uint8Array, off: number, len: number, ip: number, port: number): boolean {
    const tail = Atomics.load(this.h, H_TAIL)
    if (((tail - Atomics.load(this.h, H_HEAD)) | 0) > this.mask || len > this.slotBytes || len < 0) return false
    const s = tail & this.mask
    this.data.set(src.subarray(off, off + len), s * this.slotBytes)
    const m = s * META
    this.meta[m] = len
    this.meta[m + 1] = ip | 0
    this.meta[m + 2] = port
    Atomics.store(this.h, H_TAIL, (tail + 1) | 0)
    return true
  }

  /**
   * Copies the oldest packet to dst[off..] (at most max bytes); its whole length (more than max when it
   * did not fit: the caller drops it), or -1 when empty.
   */
  pop(dst: Uint8Array, off: number, max: number): number {
    const head = Atomics.load(this.h, H_HEAD)
    if (head === Atomics.load(this.h, H_TAIL)) return -1
    const s = head & this.mask
    const m = s * META
    const whole = this.meta[m]
    const len = Math.min(whole, max)
    this.ip = this.meta[m + 1] >>> 0
    this.port = this.meta[m + 2]
    const from = s * this.slotBytes
    dst.set(this.data.subarray(from, from + len), off)
    Atomics.store(this.h, H_HEAD, (head + 1) | 0)
    return whole
  }
}

/** Ring slots big enough for a packet of `mtu` bytes as a datagram (header, padding, tag) and then some. */
export function memorySlotBytes(mtu: number): number {
  return Math.ceil((mtu + 128) / 64) * 64
}

export function createMemoryQueue(wire: SharedArrayBuffer, mtu: number, capacity = 512): MemoryQueue {
  const slot = memorySlotBytes(mtu)
  return {
    bell: new SharedArrayBuffer(4),
    wire,
    tunIn: createPacketRing(capacity, slot),
    tunOut: createPacketRing(capacity, slot),
    udpIn: createPacketRing(capacity, slot),
    udpOut: createPacketRing(capacity, slot),
  }
}

export function ring(bell: Int32Array): void {
  Atomics.add(bell, 0, 1)
  Atomics.notify(bell, 0)
}

const EOPNOTSUPP = 95

/** The worker's side of its MemoryQueue, with the addon's signatures (file descriptors are ignored). */
export class MemoryPacketIo implements PacketIo {
  readonly MAX_BATCH = 256
  private readonly bell: Int32Array
  private readonly wire: Int32Array
  private readonly tunIn: PacketRing
  private readonly tunOut: PacketRing
  private readonly udpIn: PacketRing
  private readonly udpOut: PacketRing

  constructor(q: MemoryQueue) {
    this.bell = new Int32Array(q.bell)
    this.wire = new Int32Array(q.wire)
    this.tunIn = new PacketRing(q.tunIn)
    this.tunOut = new PacketRing(q.tunOut)
    this.udpIn = new PacketRing(q.udpIn)
    this.udpOut = new PacketRing(q.udpOut)
  }

  private ready(): number {
    return (this.udpIn.size() > 0 ? 1 : 0) | (this.tunIn.size() > 0 ? 2 : 0)
  }

  poll2(_udpFd: number, _tunFd: number, timeoutMs: number): number {
    const seen = Atomics.load(this.bell, 0)
    const r = this.ready()
    if (r !== 0 || timeoutMs === 0) return r
    Atomics.wait(this.bell, 0, seen, timeoutMs)
    return this.ready()
  }

  recvBatch(_fd: number, slab: Uint8Array, slotSize: number, lens: Int32Array, addrs: Uint32Array, max: number): number {
    let n = 0
    while (n < max) {
      const len = this.udpIn.pop(slab, n * slotSize, slotSize)
      if (len < 0) break
      lens[n] = len > slotSize ? -1 : len // as the addon: longer than any valid message
      addrs[2 * n] = this.udpIn.ip
      addrs[2 * n + 1] = this.udpIn.port
      n++
    }
    return n
  }

  sendBatch(_fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, addrs: Uint32Array, count: number): number {
    let sent = 0
    for (let i = 0; i < count; i++) {
      if (lens[i] <= 0) continue
      // A full ring is a full socket buffer: the datagram is not taken (the caller counts it).
      if (this.udpOut.push(slab, i * slotSize + offset, lens[i], addrs[2 * i], addrs[2 * i + 1])) sent++
    }
    if (sent > 0) ring(this.wire)
    return sent
  }

  readBatch(_fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, max: number): number {
    let n = 0
    while (n < max) {
      const len = this.tunIn.pop(slab, n * slotSize + offset, slotSize - offset)
      if (len < 0) break
      if (len > slotSize - offset) continue // longer than the MTU: the kernel would not have let it through
      lens[n++] = len
    }
    return n
  }

  writeBatch(_fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, count: number): number {
    let written = 0
    for (let i = 0; i < count; i++) {
      if (lens[i] <= 0) continue
      if (this.tunOut.push(slab, i * slotSize + offset, lens[i], 0, 0)) written++
    }
    if (written > 0) ring(this.wire)
    return written
  }

  // Memory queues carry no virtio header: offload is never on, so the arena calls are never made.
  readArena(): number {
    return -EOPNOTSUPP
  }

  writeArena(): number {
    return -EOPNOTSUPP
  }

  strerror(errno: number): string {
    return errno === EOPNOTSUPP ? 'operation not supported on memory queues' : `errno ${errno}`
  }
}
