/**
 * Single-producer / single-consumer ring of messages in shared memory (roles never change).
 * Each entry is a fixed slot: metadata in Int32 fields plus up to RING_SLOT_BYTES of payload.
 * The producer writes the slot, then publishes by Atomics.store(TAIL) and notifies; the consumer
 * reads, then releases by Atomics.store(HEAD). Capacity is a power of two; indices grow freely
 * and are masked.
 *
 * Used for the rare worker -> control traffic: handshake messages, packets waiting for a session,
 * and events. The producer never blocks: a full ring drops and the caller counts it.
 */
export const RING_HEAD = 0
export const RING_TAIL = 1
export const RING_HEADER = 4
export const RING_META = 8 // kind, len, ip, port, peer, aux, -, -
export const RING_SLOT_BYTES = 2048

export const MSG_HANDSHAKE = 1 // a handshake/cookie datagram from ip:port
export const MSG_STAGED = 2 // an outbound packet for `peer` that has no usable session
export const MSG_CONFIRMED = 3 // the responder's next keypair `aux` received data from `peer`
export const MSG_REKEY = 4 // the send path saw the current keypair needs rekeying (peer)

export interface RingBuffers {
  header: SharedArrayBuffer
  meta: SharedArrayBuffer
  data: SharedArrayBuffer
  capacity: number
}

export function createRing(capacity: number): RingBuffers {
  if ((capacity & (capacity - 1)) !== 0) throw new Error('ring capacity must be a power of two')
  return {
    header: new SharedArrayBuffer(RING_HEADER * 4),
    meta: new SharedArrayBuffer(capacity * RING_META * 4),
    data: new SharedArrayBuffer(capacity * RING_SLOT_BYTES),
    capacity,
  }
}

/** Views over one ring's shared memory; the producer and consumer each make their own. */
class RingView {
  readonly h: Int32Array
  readonly meta: Int32Array
  readonly data: Uint8Array
  protected readonly mask: number
  readonly capacity: number
  constructor(r: RingBuffers) {
    this.h = new Int32Array(r.header)
    this.meta = new Int32Array(r.meta)
    this.data = new Uint8Array(r.data)
    this.capacity = r.capacity
    this.mask = r.capacity - 1
  }
}

export class RingProducer extends RingView {
  /**
   * Copies src[off, off+len) into the ring. Returns false when full (the caller counts a drop), or when
   * fewer than `reserve` slots would stay free: bulk messages leave that room to the others.
   */
  push(kind: number, src: Uint8Array, off: number, len: number, ip: number, port: number, peer: number, aux: number, reserve = 0): boolean {
    const tail = Atomics.load(this.h, RING_TAIL)
    const head = Atomics.load(this.h, RING_HEAD)
    if (((tail - head) | 0) > this.mask - reserve) return false // the counters wrap at 2^31: differences mod 2^32
    const s = tail & this.mask
    if (len > RING_SLOT_BYTES) len = RING_SLOT_BYTES
    if (len > 0) this.data.set(src.subarray(off, off + len), s * RING_SLOT_BYTES) // rare path: a view per message is fine
    const m = s * RING_META
    this.meta[m] = kind
    this.meta[m + 1] = len
    this.meta[m + 2] = ip | 0
    this.meta[m + 3] = port
    this.meta[m + 4] = peer
    this.meta[m + 5] = aux
    Atomics.store(this.h, RING_TAIL, (tail + 1) | 0)
    Atomics.notify(this.h, RING_TAIL)
    return true
  }
}

export interface RingMessage {
  kind: number
  payload: Buffer
  ip: number
  port: number
  peer: number
  aux: number
}

export class RingConsumer extends RingView {
  /** Takes every pending message (copies payloads out, then releases the slots). */
  drain(): RingMessage[] {
    const out: RingMessage[] = []
    let head = Atomics.load(this.h, RING_HEAD)
    const tail = Atomics.load(this.h, RING_TAIL)
    while (head !== tail) {
      const s = head & this.mask
      const m = s * RING_META
      const len = this.meta[m + 1]
      out.push({
        kind: this.meta[m],
        payload: Buffer.from(this.data.slice(s * RING_SLOT_BYTES, s * RING_SLOT_BYTES + len)),
        ip: this.meta[m + 2] >>> 0,
        port: this.meta[m + 3],
        peer: this.meta[m + 4],
        aux: this.meta[m + 5],
      })
      head = (head + 1) | 0
    }
    Atomics.store(this.h, RING_HEAD, head)
    return out
  }

  /** Resolves when the ring holds a message (at once if it already does) or after timeoutMs. Never blocks the thread. */
  async waitForData(timeoutMs: number): Promise<void> {
    const tail = Atomics.load(this.h, RING_TAIL)
    if (tail !== Atomics.load(this.h, RING_HEAD)) return
    const r = Atomics.waitAsync(this.h, RING_TAIL, tail, timeoutMs)
    if (r.async) await r.value
  }
}
