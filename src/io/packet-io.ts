/**
 * The data plane's I/O seam. A worker reads and writes packets through one PacketIo, chosen once when
 * it starts (so its loop calls one implementation only):
 *  - `native`: the N-API addon (native/enclave_io.cc) over a TUN queue and a UDP socket;
 *  - `memory`: SPSC rings in shared memory (src/io/memory-io.ts), for whole agents in one process.
 * The signatures are the addon's: -errno for system errors, counts otherwise.
 */

export interface PacketIo {
  readArena(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, maxPkts: number, timeoutMs: number): number
  writeArena(fd: number, buf: Uint8Array, base: number, offs: Int32Array, lens: Int32Array, count: number): number
  readBatch(fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, max: number, timeoutMs: number): number
  writeBatch(fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, count: number): number
  recvBatch(fd: number, slab: Uint8Array, slotSize: number, lens: Int32Array, addrs: Uint32Array, max: number, timeoutMs: number): number
  sendBatch(fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, addrs: Uint32Array, count: number): number
  /** Bit 1: the UDP side is readable; bit 2: the TUN side. 0 on timeout, -errno on error. */
  poll2(udpFd: number, tunFd: number, timeoutMs: number): number
  strerror(errno: number): string
  readonly MAX_BATCH: number
}

/** One SPSC ring of packets in shared memory (src/io/memory-io.ts PacketRing). */
export interface PacketRingBuffers {
  header: SharedArrayBuffer
  meta: SharedArrayBuffer
  data: SharedArrayBuffer
  capacity: number
  slotBytes: number
}

/** A worker's four memory queues and the two bells (see src/io/memory-io.ts). */
export interface MemoryQueue {
  bell: SharedArrayBuffer
  wire: SharedArrayBuffer
  tunIn: PacketRingBuffers
  tunOut: PacketRingBuffers
  udpIn: PacketRingBuffers
  udpOut: PacketRingBuffers
}

/** What a worker is given to open its PacketIo: a TUN queue and UDP socket, or memory queues. */
export type WorkerIo = { kind: 'native'; tunFd: number; udpFd: number } | ({ kind: 'memory' } & MemoryQueue)

/** Checks a slab/lens pair against a batch before it is used in a loop (a clear message at worker start). */
export function checkBatchBuffers(
  slab: Uint8Array,
  slotSize: number,
  lens: Int32Array,
  batch: number,
  maxBatch: number,
  addrs?: Uint32Array,
): void {
  if (batch < 1 || batch > maxBatch) throw new RangeError(`batch ${batch} outside 1..${maxBatch}`)
  if (slab.byteLength < slotSize * batch)
    throw new RangeError(`slab of ${slab.byteLength} B is smaller than ${batch} slots of ${slotSize} B`)
  if (lens.length < batch) throw new RangeError(`lens has ${lens.length} entries, batch needs ${batch}`)
  if (addrs && addrs.length < 2 * batch) throw new RangeError(`addrs has ${addrs.length} entries, batch needs ${2 * batch}`)
}
