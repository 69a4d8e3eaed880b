/**
 * The agent's time (src/common/agent-time.ts) follows the monotonic clock: a step of the wall clock (NTP,
 * a VM resumed, `date -s`) moves none of its timers. The step is made here by replacing Date.now in this
 * thread; before, the agent's clock was Date.now and jumped with it, by the hour.
 */
import t from 'tap'
import { Worker } from 'node:worker_threads'
import { systemClock, OffsetClock } from '../../src/platform/clock.js'
import { workerClock } from '../../src/ipc/shared-clock.js'
import { sourceExecArgv } from '../../src/common/worker-file.js'

const HOUR = 3_600_000

/** Runs fn with this thread's wall clock stepped by `stepMs`. */
async function withWallStep<T>(stepMs: number, fn: () => Promise<T> | T): Promise<T> {
  const real = Date.now
  Date.now = () => real() + stepMs
  try {
    return await fn()
  } finally {
    Date.now = real
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('a step of the wall clock, back or forward, does not move the agent clock', async (t) => {
  for (const step of [-HOUR, HOUR]) {
    const before = systemClock.now()
    const [during, wall] = await withWallStep(step, async () => {
      await sleep(20)
      return [systemClock.now(), Date.now()]
    })
    t.ok(Math.abs(wall - before - step) < 1000, `the wall clock did step by ${step / HOUR} h`)
    t.ok(during - before >= 15 && during - before < 1000, `the agent clock moved by the ${during - before} ms that passed`)
  }
  const a = systemClock.now()
  await sleep(10)
  t.ok(systemClock.now() > a, 'and keeps moving forward')
})

t.test("the test clock's offset rides on the same time", async (t) => {
  const c = new OffsetClock()
  const before = c.now()
  const during = await withWallStep(-HOUR, async () => {
    await c.advance(5000, 5000)
    return c.now()
  })
  t.ok(during - before >= 5000 && during - before < 6000, `moved by the 5 s advanced, not the hour (${during - before} ms)`)
})

t.test('a worker reads the same time as control from its anchor, whatever the wall clock did', async (t) => {
  // Stepped in this thread only: a worker that read its own wall clock would be an hour off.
  const [main, worker] = await withWallStep(-HOUR, async () => {
    // The real module in a real worker thread (tsx registered there, as src/common/worker-file.ts does).
    const mod = new URL('../../src/ipc/shared-clock.ts', import.meta.url).href
    const w = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads')
       import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(mod)}) })
         .then(({ workerClock }) => parentPort.postMessage(workerClock(workerData.anchor, undefined)()))`,
      { eval: true, workerData: { anchor: systemClock.anchor }, execArgv: sourceExecArgv() },
    )
    const m = systemClock.now()
    const got: number = await new Promise((res, rej) => {
      w.once('message', res)
      w.once('error', rej)
    })
    await w.terminate()
    return [m, got]
  })
  t.ok(
    worker - main >= 0 && worker - main < 10_000,
    `the worker's time is the control's, read moments later (+${(worker - main).toFixed(1)} ms)`,
  )
  // The module the data-plane worker uses, here in this thread, from the same anchor.
  const read = workerClock(systemClock.anchor, undefined)
  t.ok(Math.abs(read() - systemClock.now()) < 5, 'workerClock reads the control clock from its anchor')
  const c = new OffsetClock()
  await c.advance(7000, 7000)
  const offRead = workerClock(c.anchor, c.shared)
  t.ok(Math.abs(offRead() - c.now()) < 5, "and with the test clock's shared offset")
})
