/**
 * The data-plane workers' JIT warm-up (src/dataplane/warmup.ts, issue 23): synthetic traffic through
 * the real Pipeline code, on a session pair of its own, before real packets make the functions hot.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { DataPathWarmup, WARMUP_ROUNDS, warmUp } from '../../src/warmup/warmup.js'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
const probe = path.join(ROOT, 'test/helpers/warmup-jit-probe.mjs')

// Rounds of 1 packet each way, every eighth of 4: the packets sent through outbound() in all.
const expectedPackets = (rounds: number) => 2 * (rounds + 3 * Math.floor((rounds + 1) / 8))

t.test('every synthetic packet goes all the way through, with and without the offload paths', async (t) => {
  for (const offload of [false, true]) {
    const r = warmUp({ mtu: 1420, offload, uso: offload, rounds: 800 })
    t.equal(r.rounds, 800, `offload ${offload}: rounds`)
    t.equal(r.packets, expectedPackets(800), `offload ${offload}: packets sent`)
    // A packet the firewall, the replay window, the routes or the offload split refused would show here:
    // the warm-up would then train the drop paths instead of the path real packets take.
    t.equal(r.accepted, r.packets, `offload ${offload}: ${r.accepted} of ${r.packets} accepted by the other side for its TUN`)
  }
  // An MTU below the largest synthetic size: packets shrink to fit, none refused.
  const small = warmUp({ mtu: 1280, offload: false, uso: false, rounds: 200 })
  t.equal(small.accepted, small.packets, 'MTU 1280: all accepted')
})

t.test('the worker runs it in slices between polls', async (t) => {
  const w = new DataPathWarmup({ mtu: 1420, offload: true, uso: true, rounds: 40 })
  t.equal(w.step(16), true, 'more remain after the first slice')
  t.equal(w.result.rounds, 16)
  t.equal(w.step(16), true)
  t.equal(w.step(16), false, 'the third slice finishes it')
  t.equal(w.result.rounds, 40, 'never more than asked')
  t.equal(w.done, true)
  t.equal(w.step(16), false, 'a finished warm-up does nothing more')
  t.equal(w.result.rounds, 40)
  t.equal(w.result.accepted, w.result.packets)
  // A slice also ends when its time is up: with a budget of 0 ms, one round each.
  const timed = new DataPathWarmup({ mtu: 1420, offload: false, uso: false, rounds: 10 })
  t.equal(timed.step(64, 0), true)
  t.equal(timed.result.rounds, 1, 'a 0 ms budget: one round, then back to the poll')
  t.ok(WARMUP_ROUNDS >= 2500, `the default (${WARMUP_ROUNDS} rounds) covers what --trace-opt showed V8 needs (~2,500)`)
})

t.test(
  "afterwards the per-packet functions run TurboFan code, and a new session's first packets keep it; without it they do not",
  { skip: fs.existsSync(path.join(ROOT, 'lib/src/warmup/warmup.js')) ? false : 'run `npm run build` first (npm test does)' },
  async (t) => {
    type Probe = { before: Record<string, number>; after: Record<string, number>; fresh: Record<string, number> }
    const run = (mode: string) =>
      new Promise<Probe>((resolve, reject) =>
        // env -i: no loader or coverage hook of the test runner in the probe's process.
        execFile(
          'env',
          ['-i', `PATH=${process.env.PATH}`, process.execPath, '--allow-natives-syntax', '--no-concurrent-recompilation', probe, mode],
          { cwd: ROOT, timeout: 60000 },
          (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout))),
        ),
      )
    // %GetOptimizationStatus bits (V8 11, Node 20): 16 optimised, 64 TurboFan. A deoptimised function
    // loses them until it is hot again, which the probe's 40 fresh rounds are too few for.
    const turbofan = (s: number) => (s & 16) !== 0 && (s & 64) !== 0
    const none = await run('none')
    for (const [fn, s] of Object.entries(none.after)) t.notOk(turbofan(s), `no warm-up: ${fn} is not optimised (status ${s})`)
    for (const mode of ['plain', 'offload']) {
      const r = await run(mode)
      for (const [fn, s] of Object.entries(r.after))
        t.ok(turbofan(s), `${mode} TUN: after the warm-up ${fn} runs TurboFan code (status ${s})`)
      for (const [fn, s] of Object.entries(r.fresh))
        t.ok(turbofan(s), `${mode} TUN: a new session's first packets did not deoptimise ${fn} (status ${s})`)
    }
  },
)
