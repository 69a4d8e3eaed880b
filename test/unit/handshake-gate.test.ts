/**
 * Handshake datagrams a worker passes to the control thread (src/dataplane/handshake-gate.ts), through
 * the real Pipeline: a flood of right-sized junk from one address, or from many, reaches control only
 * at a bounded rate, while the answer to an initiation of ours always gets through.
 */
import t from 'tap'
import { sessionPair } from '../../bench/testbed.js'
import { HS_SOURCE_BURST, HS_SOURCE_PER_S, HS_WORKER_BURST } from '../../src/dataplane/handshake-gate.js'
import { K_FIELDS, K_INDEX, K_STATE, REASONS, type LayoutViews } from '../../src/ipc/layout.js'
import { MSG_HANDSHAKE } from '../../src/ipc/ring.js'

type Pair = ReturnType<typeof sessionPair>

const limited = (v: LayoutViews) => v.reasons[REASONS.indexOf('handshake_limited')]

/** Hands `n` handshake datagrams of `type` to the client's inbound path, the i-th from src(i). */
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
      pipe.iSlab[o + 40] = done + i // junk
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

t.test('junk initiations from one address: a burst, then its rate; other addresses are not affected', async (t) => {
  const p = sessionPair(64)
  let now = 1_000_000
  p.client.setClock(now)
  t.equal(
    receive(p, 1, 500, () => 0x0a000001),
    HS_SOURCE_BURST,
    `${HS_SOURCE_BURST} of 500 reach control`,
  )
  t.equal(limited(p.c.v), 500 - HS_SOURCE_BURST, 'the rest are counted as handshake_limited')
  t.equal(
    receive(p, 1, 1, () => 0x0a000002),
    1,
    'another address still gets through',
  )
  now += 200
  p.client.setClock(now)
  t.equal(
    receive(p, 1, 500, () => 0x0a000001),
    (HS_SOURCE_PER_S * 200) / 1000,
    '200 ms later: its rate (50/s) worth',
  )
})

t.test('junk from many addresses: at most the worker-wide burst reaches control at once', async (t) => {
  const p = sessionPair(64)
  p.client.setClock(2_000_000)
  t.equal(
    receive(p, 1, 5000, (i) => 0x0b000000 + i),
    HS_WORKER_BURST,
    `${HS_WORKER_BURST} of 5,000 from 5,000 addresses`,
  )
})

t.test('the answer to our initiation always passes; answers to live or unknown indexes do not', async (t) => {
  const p = sessionPair(64)
  p.client.setClock(3_000_000)
  const src = () => 0x0a000009
  receive(p, 1, 500, src) // the address's (and much of the worker's) allowance is gone
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
})
