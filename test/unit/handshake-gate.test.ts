/**
 * Handshake datagrams a worker passes to the control thread (src/dataplane/handshake-gate.ts), through
 * the real Pipeline: junk at a modest rate changes nothing; a flood reaches control only at a bounded
 * rate, shared out per source address; the answer to an initiation of ours gets through; a clock that
 * steps back does not shut the gate. The messages carry a valid mac1 (junk without one never gets this far:
 * handshake-macs.test.ts), and the workers' under-load rule is off here (Infinity), so that the gate alone decides.
 */
import t from 'tap'
import { sessionPair } from '../../bench/testbed.js'
import { HS_BYPASS_BURST, HS_SOURCE_BURST, HS_WORKER_BURST } from '../../src/dataplane/handshake-gate.js'
import { K_FIELDS, K_INDEX, K_STATE, REASONS, type LayoutViews } from '../../src/ipc/layout.js'
import { MAC } from '../../src/protocol/primitives.js'
import { MSG_HANDSHAKE, RING_HEAD, RING_TAIL, RingConsumer, RingProducer, createRing } from '../../src/ipc/ring.js'

type Pair = ReturnType<typeof sessionPair>

const limited = (v: LayoutViews) => v.reasons[REASONS.indexOf('handshake_limited')]

let serial = 0

/** Hands `n` handshake datagrams of `type` to the client's inbound path, the i-th from src(i); returns how many reached control. */
function receive(p: Pair, type: 1 | 2 | 3, n: number, src: (i: number) => number, receiverIndex = 0x12345): number {
  const size = type === 1 ? 148 : type === 2 ? 92 : 64
  const pipe = p.client
  let handed = 0
  for (let done = 0; done < n; ) {
    const k = Math.min(pipe.batch, n - done)
    for (let i = 0; i < k; i++) {
      const o = i * pipe.slot
      pipe.iSlab.fill(0, o, o + size)
      pipe.iSlab[o] = type
      new DataView(pipe.iSlab.buffer, pipe.iSlab.byteOffset + o).setUint32(type === 2 ? 8 : 4, receiverIndex >>> 0, true)
      // Junk, each message distinct (a verbatim repeat is dropped before the gate: handshake-repeat.test.ts),
      // with a valid mac1 (it takes only our public key).
      new DataView(pipe.iSlab.buffer, pipe.iSlab.byteOffset + o).setUint32(40, serial++, true)
      if (type !== 3) pipe.iSlab.set(MAC(p.c.local.mac1Key, pipe.iSlab.subarray(o, o + size - 32)), o + size - 32)
      pipe.iLens[i] = size
      pipe.iAddrs[2 * i] = src(done + i)
      pipe.iAddrs[2 * i + 1] = 51820
    }
    pipe.inbound(k)
    handed += p.c.ring.drain().filter((m) => m.kind === MSG_HANDSHAKE).length
    done += k
  }
  return handed
}

t.test('junk at a modest rate, even from a spoofed victim address, is all passed on', async (t) => {
  const p = sessionPair(1, undefined, Infinity)
  let passed = 0
  for (let i = 0; i < 200; i++) {
    p.client.setClock(1_000_000 + i * 5) // 200 a second from one address: over its flood-time share
    passed += receive(p, 1, 1, () => 0x0a000001)
  }
  t.equal(passed, 200, 'all 200 reach control: no per-address limit outside a flood')
  t.equal(limited(p.c.v), 0)
})

t.test('a flood from one address: the worker passes half its burst, then that address only its share', async (t) => {
  const p = sessionPair(64, undefined, Infinity)
  p.client.setClock(1_000_000)
  const want = HS_WORKER_BURST / 2 + 1 + HS_SOURCE_BURST
  t.equal(
    receive(p, 1, 500, () => 0x0a000001),
    want,
    `${want} of 500 reach control`,
  )
  t.equal(limited(p.c.v), 500 - want, 'the rest are counted as handshake_limited')
  t.equal(
    receive(p, 1, 1, () => 0x0a000002),
    1,
    'another address still gets through',
  )
})

t.test('a flood from many addresses: the worker-wide burst, then its rate', async (t) => {
  const p = sessionPair(64, undefined, Infinity)
  p.client.setClock(2_000_000)
  t.equal(
    receive(p, 1, 5000, (i) => 0x0b000000 + i),
    HS_WORKER_BURST,
    `${HS_WORKER_BURST} of 5,000 from 5,000 addresses`,
  )
  p.client.setClock(2_000_010)
  t.equal(
    receive(p, 1, 5000, (i) => 0x0c000000 + i),
    40,
    '10 ms later: 10 ms worth (4,000/s)',
  )
})

t.test('the answer to our initiation passes a flood, within its own budget', async (t) => {
  const p = sessionPair(64, undefined, Infinity)
  p.client.setClock(3_000_000)
  const src = () => 0x0a000009
  receive(p, 1, 5000, (i) => 0x0b000000 + i) // the worker's allowance is gone
  // Control reserved slot 77 for an initiation (state 0, receiver index set), as Keypairs.alloc does.
  const pending = ((0x5a5a5 << 12) | 77) >>> 0
  Atomics.store(p.c.v.kpI32, 77 * K_FIELDS + K_STATE, 0)
  Atomics.store(p.c.v.kpI32, 77 * K_FIELDS + K_INDEX, pending | 0)
  t.equal(receive(p, 2, 1, src, pending), 1, 'a response to the pending index reaches control')
  t.equal(receive(p, 3, 1, src, pending), 1, 'and so does a cookie reply to it')
  const live = Atomics.load(p.c.v.kpI32, p.c.kp * K_FIELDS + K_INDEX) >>> 0
  t.not(Atomics.load(p.c.v.kpI32, p.c.kp * K_FIELDS + K_STATE), 0, 'the session keypair is live')
  t.equal(receive(p, 2, 1, src, live), 0, 'a response to a live index (seen in clear on the wire) is limited')
  t.equal(receive(p, 2, 1, src, pending ^ 0x1000), 0, 'a response to a wrong index is limited')
  t.equal(receive(p, 2, 50, src, pending), HS_BYPASS_BURST - 2, 'someone replaying the pending index gets only the rest of its budget')
})

t.test('a clock that steps back an hour does not shut the gate', async (t) => {
  const p = sessionPair(64, undefined, Infinity)
  p.client.setClock(10_000_000)
  receive(p, 1, 5000, (i) => 0x0b000000 + i)
  p.client.setClock(10_000_000 - 3_600_000)
  t.equal(
    receive(p, 1, 1, () => 0x0a000003),
    0,
    'at the step: no time has passed',
  )
  p.client.setClock(10_000_000 - 3_600_000 + 100)
  t.equal(
    receive(p, 1, 1, () => 0x0a000003),
    1,
    '100 ms later the gate refills as usual',
  )
})

t.test('the ring stays exact across its 32-bit counters wrapping', async (t) => {
  const r = createRing(8)
  const h = new Int32Array(r.header)
  h[RING_HEAD] = 0x7ffffffd
  h[RING_TAIL] = 0x7ffffffd
  const prod = new RingProducer(r)
  const cons = new RingConsumer(r)
  const one = new Uint8Array([1])
  let pushed = 0
  for (let i = 0; i < 20; i++) if (prod.push(7, one, 0, 1, 0, 0, i, 0)) pushed++
  t.equal(pushed, 8, 'full at its capacity (8), across the wrap')
  t.same(
    cons.drain().map((m) => m.peer),
    [0, 1, 2, 3, 4, 5, 6, 7],
    'drained in order, and the drain ends',
  )
  t.equal(prod.push(7, one, 0, 1, 0, 0, 99, 0), true, 'room again after the drain')
  t.equal(h[RING_TAIL] - h[RING_HEAD], 1, 'one message pending')
})
