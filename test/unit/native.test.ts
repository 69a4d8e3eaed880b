/**
 * The addon checks every size JavaScript passes, once per batch, and throws a RangeError instead of
 * reading or writing outside the caller's buffers. No root needed: writes go to /dev/null, reads and
 * datagrams to UDP sockets on 127.0.0.1 that this test opens (no TUN).
 */
import t from 'tap'
import fs from 'node:fs'
import { native } from '../../src/native/io.js'

const LOOPBACK = 0x7f000001
const SLOT = 2048
const devNull = fs.openSync('/dev/null', 'w')
const rx = native.udpOpen(LOOPBACK, 0, false, 0, 0, 0)
const tx = native.udpOpen(LOOPBACK, 0, false, 0, 0, 0)
t.ok(rx >= 0 && tx >= 0, 'two UDP sockets on 127.0.0.1')
const rxPort = native.udpLocalPort(rx)
t.teardown(() => {
  fs.closeSync(devNull)
  native.close(rx)
  native.close(tx)
})

const slab = () => new Uint8Array(2 * SLOT)
const lensOf = (...l: number[]) => Int32Array.from(l)
const addrsFor = (n: number) => Uint32Array.from({ length: 2 * n }, (_, i) => (i % 2 ? rxPort : LOOPBACK))

t.test('valid batches still work: two datagrams over loopback', async (t) => {
  const s = slab()
  s.fill(7, 0, 100)
  s.fill(9, SLOT, SLOT + 200)
  t.equal(native.sendBatch(tx, s, SLOT, 0, lensOf(100, 200), addrsFor(2), 2), 2)
  // recvBatch keeps reading while a whole GRO read (64 datagrams) still fits: give it 128 slots.
  const r = new Uint8Array(128 * SLOT)
  const lens = new Int32Array(128)
  const addrs = new Uint32Array(256)
  t.equal(native.recvBatch(rx, r, SLOT, lens, addrs, 128, 1000), 2)
  t.same([...lens.subarray(0, 2)], [100, 200])
  t.same([...addrs.subarray(0, 2)], [LOOPBACK, native.udpLocalPort(tx)])
  t.equal(r[99], 7)
  t.equal(r[SLOT + 199], 9)
  t.equal(native.writeBatch(devNull, s, SLOT, 16, lensOf(SLOT - 16, 1), 2), 2, 'a slot filled exactly to its end is accepted')
  t.equal(native.writeArena(devNull, s, 100, lensOf(0, 50), lensOf(10, 2 * SLOT - 150), 2), 2)
})

t.test('writeArena marks the packets the kernel refused', async (t) => {
  const ro = fs.openSync('/dev/null', 'r')
  t.teardown(() => fs.closeSync(ro))
  const lens = lensOf(10, 0, 20)
  t.equal(native.writeArena(ro, slab(), 0, lensOf(0, 64, 128), lens, 3), -9, 'a descriptor not open for writing: -EBADF')
  t.same([...lens], [-1, 0, -1], 'both packets marked -1; the skipped one stays 0')
  const ok = lensOf(10, 20)
  t.equal(native.writeArena(devNull, slab(), 0, lensOf(0, 64), ok, 2), 2)
  t.same([...ok], [10, 20], 'written packets keep their lengths')
})

t.test('readBatch', async (t) => {
  const call = (slot: number, off: number, lens: Int32Array, max: number) => () => native.readBatch(rx, slab(), slot, off, lens, max, 0)
  t.throws(call(SLOT, 0, new Int32Array(100_000), 100_000), RangeError, 'count above MAX_BATCH')
  t.throws(call(SLOT, 0, new Int32Array(4), 4), RangeError, 'four slots in a slab of two')
  t.throws(call(2 ** 32 + 16, 0, new Int32Array(1), 1), RangeError, 'a slot size that wraps to 16 in 32 bits')
  t.throws(call(SLOT, -16, new Int32Array(2), 2), RangeError, 'negative offset')
  t.throws(call(SLOT, SLOT, new Int32Array(2), 2), RangeError, 'offset at the end of the slot')
  t.throws(call(SLOT, 0, new Int32Array(1), 2), RangeError, 'lens shorter than the batch')
  t.throws(call(-SLOT, 0, new Int32Array(2), 2), RangeError, 'negative slot size')
  t.throws(call(SLOT, 0, new Int32Array(2), -1), RangeError, 'negative count')
})

t.test('writeBatch', async (t) => {
  const call = (slot: number, off: number, lens: Int32Array, count: number) => () =>
    native.writeBatch(devNull, slab(), slot, off, lens, count)
  t.throws(call(SLOT, 0, new Int32Array(300), 300), RangeError, 'count above MAX_BATCH')
  t.throws(call(SLOT, 0, lensOf(10, 10, 10), 3), RangeError, 'third slot past the slab')
  t.throws(call(SLOT, 0, lensOf(10, SLOT + 1), 2), RangeError, 'a length past its slot')
  t.throws(call(SLOT, 16, lensOf(10, SLOT - 15), 2), RangeError, 'offset + length past its slot')
  t.throws(call(SLOT, -4096, lensOf(10, 10), 2), RangeError, 'negative offset')
  t.throws(call(2 ** 32 + 1024, 0, lensOf(10, 10), 2), RangeError, 'huge slot size')
})

t.test('writeArena', async (t) => {
  const call = (base: number, offs: Int32Array, lens: Int32Array, count: number) => () =>
    native.writeArena(devNull, slab(), base, offs, lens, count)
  t.throws(call(0, lensOf(-100), lensOf(150), 1), RangeError, 'negative offset (would read 100 B before the buffer)')
  t.throws(call(2 ** 32, lensOf(0), lensOf(10), 1), RangeError, 'base 2^32 (wraps to 0 in 32 bits)')
  t.throws(call(-100, lensOf(200), lensOf(10), 1), RangeError, 'negative base')
  t.throws(call(0, lensOf(0), lensOf(-5), 1), RangeError, 'negative length')
  t.throws(call(0, lensOf(2 * SLOT - 10), lensOf(11), 1), RangeError, 'offset + length one past the end')
  t.throws(call(0, lensOf(0), lensOf(10), 2), RangeError, 'offs and lens shorter than count')
  t.throws(call(0, new Int32Array(300), new Int32Array(300), 300), RangeError, 'count above MAX_BATCH')
})

t.test('readArena', async (t) => {
  const arena = new Uint8Array(4 * 65_664)
  t.throws(() => native.readArena(rx, arena, new Int32Array(2), new Int32Array(8), 8, 0), RangeError, 'offs shorter than count')
  t.throws(() => native.readArena(rx, arena, new Int32Array(8), new Int32Array(2), 8, 0), RangeError, 'lens shorter than count')
  t.throws(() => native.readArena(rx, arena, new Int32Array(8), new Int32Array(8), -1, 0), RangeError, 'negative count')
})

t.test('recvBatch', async (t) => {
  t.throws(() => native.recvBatch(rx, slab(), SLOT, new Int32Array(4), new Uint32Array(8), 4, 0), RangeError, 'slots past the slab')
  t.throws(() => native.recvBatch(rx, slab(), SLOT, new Int32Array(2), new Uint32Array(2), 2, 0), RangeError, 'addrs too short')
  t.throws(() => native.recvBatch(rx, slab(), 2 ** 32 + 8, new Int32Array(2), new Uint32Array(4), 2, 0), RangeError, 'huge slot')
  t.throws(
    () => native.recvBatch(rx, slab(), SLOT, new Int32Array(1000), new Uint32Array(2000), 1000, 0),
    RangeError,
    'count above MAX_BATCH',
  )
})

t.test('sendBatch', async (t) => {
  const call = (slot: number, off: number, lens: Int32Array, count: number) => () =>
    native.sendBatch(tx, slab(), slot, off, lens, addrsFor(lens.length), count)
  t.throws(call(SLOT, 0, new Int32Array(1000), 1000), RangeError, 'count above MAX_BATCH')
  t.throws(call(SLOT, 0, lensOf(10, 10, 10), 3), RangeError, 'third slot past the slab')
  t.throws(call(SLOT, 0, lensOf(10, SLOT + 100), 2), RangeError, 'a length past its slot')
  t.throws(call(SLOT, -8, lensOf(10, 10), 2), RangeError, 'negative offset')
  t.throws(() => native.sendBatch(tx, slab(), SLOT, 0, lensOf(10, 10), new Uint32Array(2), 2), RangeError, 'addrs too short')
})
