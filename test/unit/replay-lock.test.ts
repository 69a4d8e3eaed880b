/**
 * The replay-window lock (K_LOCK): it names its holder (worker id + 1), a worker waits for it a
 * bounded number of attempts and then drops the packet (replay_lock_busy) instead of hanging, and
 * the supervisor frees the locks of a worker that died holding them.
 */
import t from 'tap'
import { Worker } from 'node:worker_threads'
import { HEADROOM, LAN, A_VA, deliver, sessionPair } from '../../bench/testbed.js'
import { releaseReplayLocks } from '../../src/agent/supervisor.js'
import { KP_SLOTS, K_FIELDS, K_LOCK, R } from '../../src/ipc/layout.js'

type Pair = ReturnType<typeof sessionPair>

/** An IPv4/UDP packet from the client to a LAN host behind the exit node. */
function udp(): Uint8Array {
  const b = new Uint8Array(60)
  b[0] = 0x45
  b[3] = 60
  b[8] = 64
  b[9] = 17
  new DataView(b.buffer).setUint32(12, A_VA)
  new DataView(b.buffer).setUint32(16, LAN + 250)
  b[21] = 7
  b[23] = 9
  return b
}

/** The client seals one packet and the exit node receives it; returns how many packets it delivered. */
function sendOne(p: Pair): number {
  const now = Date.now()
  p.client.setClock(now)
  p.exit.setClock(now)
  p.client.oSlab.set(udp(), HEADROOM)
  p.client.oLens[0] = 60
  if (p.client.outbound(1) !== 1) throw new Error('the client did not seal it')
  deliver(p.client, p.exit, 1)
  return p.exit.inbound(1)
}

/**
 * Runs `f` with a watchdog thread that frees the lock word after 20 s if `f` has not returned by
 * then: without a bound on the wait, `f` would spin forever and the test would hang instead of failing.
 */
async function guarded(kpI32: Int32Array, word: number, f: () => number): Promise<{ result: number; watchdogFired: boolean }> {
  const ctl = new Int32Array(new SharedArrayBuffer(8))
  const w = new Worker(
    `const { workerData: d } = require('node:worker_threads')
     const ctl = new Int32Array(d.ctl), kp = new Int32Array(d.kp)
     if (Atomics.wait(ctl, 0, 0, 20000) === 'timed-out') { Atomics.store(ctl, 1, 1); Atomics.store(kp, d.word, 0) }`,
    { eval: true, workerData: { ctl: ctl.buffer, kp: kpI32.buffer, word } },
  )
  await new Promise((r) => w.once('online', r))
  const result = f()
  Atomics.store(ctl, 0, 1)
  Atomics.notify(ctl, 0)
  await new Promise((r) => w.once('exit', r))
  return { result, watchdogFired: Atomics.load(ctl, 1) === 1 }
}

t.test('a packet on a keypair whose lock another worker holds is dropped and counted, not waited on forever', async (t) => {
  const p = sessionPair(4)
  const kpI32 = p.e.v.kpI32
  const word = p.e.kp * K_FIELDS + K_LOCK
  t.equal(sendOne(p), 1, 'with the lock free the packet is delivered')
  t.equal(Atomics.load(kpI32, word), 0, 'and the lock is free again afterwards')
  Atomics.store(kpI32, word, 3) // held by worker 2, which stopped inside it
  const { result, watchdogFired } = await guarded(kpI32, word, () => sendOne(p))
  t.notOk(watchdogFired, 'the receiving worker gave up by itself (the watchdog did not have to free the lock)')
  t.equal(result, 0, 'the packet is not delivered')
  t.equal(p.e.v.reasons[R.replay_lock_busy], 1, 'counted as replay_lock_busy')
  t.equal(Atomics.load(kpI32, word), 3, "the other worker's lock is left as it was")
  t.equal(releaseReplayLocks(kpI32, 2), 1, "the supervisor's release frees it")
  t.equal(sendOne(p), 1, 'the next packet is delivered')
  t.equal(p.e.v.reasons[R.replay_lock_busy], 1, 'nothing more dropped')
})

t.test("the supervisor's release frees exactly the dead worker's locks", async (t) => {
  const kpI32 = new Int32Array(new SharedArrayBuffer(KP_SLOTS * K_FIELDS * 4))
  const held: Array<[slot: number, holder: number]> = [
    [1, 3],
    [77, 3],
    [KP_SLOTS - 1, 3],
    [5, 1],
    [6, 4],
  ]
  for (const [slot, holder] of held) kpI32[slot * K_FIELDS + K_LOCK] = holder
  kpI32[9 * K_FIELDS + K_LOCK - 1] = 3 // the word before K_LOCK (another field) is not a lock
  t.equal(releaseReplayLocks(kpI32, 2), 3, "worker 2's three locks are freed")
  t.same(
    held.map(([slot]) => kpI32[slot * K_FIELDS + K_LOCK]),
    [0, 0, 0, 1, 4],
    "worker 0's and worker 3's locks stay held",
  )
  t.equal(kpI32[9 * K_FIELDS + K_LOCK - 1], 3, 'other fields are untouched')
  t.equal(releaseReplayLocks(kpI32, 2), 0, 'nothing left to free')
})

t.test('a holder that is not running for a few milliseconds (preempted) does not cost the packet', async (t) => {
  const { takeReplayLock } = await import('../../src/dataplane/pipeline.js')
  const { K_FIELDS, K_LOCK } = await import('../../src/ipc/layout.js')
  const { Worker } = await import('node:worker_threads')
  const sab = new SharedArrayBuffer(K_FIELDS * 4 * 4)
  const kpI32 = new Int32Array(sab)
  const kb = 2 * K_FIELDS
  // Another thread takes the lock and holds it for 5 ms, as a worker descheduled inside it would.
  const holder = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads')
     const a = new Int32Array(workerData.sab)
     Atomics.store(a, workerData.at, 3)
     parentPort.postMessage('held')
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5)
     Atomics.store(a, workerData.at, 0)`,
    { eval: true, workerData: { sab, at: kb + K_LOCK } },
  )
  await new Promise((r) => holder.once('message', r))
  t.ok(takeReplayLock(kpI32, kb, 1), 'the lock is taken once the holder lets go (a 0.3 ms spin alone gave up)')
  t.equal(Atomics.load(kpI32, kb + K_LOCK), 1, 'by us')
  await new Promise((r) => holder.once('exit', r))
})
