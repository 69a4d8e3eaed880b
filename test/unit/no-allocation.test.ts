/**
 * The hot-loop contract: the real (compiled) Pipeline allocates nothing per packet. 400k packets
 * through encrypt -> decrypt + checks, in a clean `node --expose-gc` process (no test-runner hooks),
 * must not trigger a garbage collection or grow the heap; nor may a handshake flood (mac1 checks, cookie replies).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
const probe = path.join(ROOT, 'test/helpers/alloc-probe.mjs')

t.test(
  'steady-state packets allocate nothing',
  { skip: fs.existsSync(path.join(ROOT, 'lib/bench/testbed.js')) ? false : 'run `npm run build` first (npm test does)' },
  async (t) => {
    const out = await new Promise<string>((resolve, reject) => {
      // env -i: a clean environment, so no loader or coverage hook of the test runner is injected.
      execFile(
        'env',
        ['-i', `PATH=${process.env.PATH}`, process.execPath, '--expose-gc', probe],
        { cwd: ROOT, timeout: 60000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      )
    })
    const r = JSON.parse(out) as { gcs: number; kinds: number[]; heapGrowth: number; packets: number }
    t.equal(r.gcs, 0, `garbage collections during ${r.packets} packets: ${r.gcs} (kinds ${r.kinds.join(',')})`)
    // The smallest per-packet allocation (a boxed number) is 16 bytes: 6.4 MB for 400k packets.
    const perPacket = r.heapGrowth / r.packets
    t.ok(perPacket < 0.25, `heap growth ${(r.heapGrowth / 1024).toFixed(0)} KiB = ${perPacket.toFixed(3)} bytes per packet`)
  },
)

t.test(
  'a handshake flood allocates nothing: bad mac1 dropped, cookie replies under load',
  { skip: fs.existsSync(path.join(ROOT, 'lib/bench/testbed.js')) ? false : 'run `npm run build` first (npm test does)' },
  async (t) => {
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        'env',
        ['-i', `PATH=${process.env.PATH}`, process.execPath, '--expose-gc', path.join(ROOT, 'test/helpers/handshake-alloc-probe.mjs')],
        { cwd: ROOT, timeout: 60000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      )
    })
    const r = JSON.parse(out) as { gcs: number; kinds: number[]; heapGrowth: number; messages: number; cookies: number; badMac1: number }
    t.ok(r.cookies > 0 && r.badMac1 > 0, `the worker answered ${r.cookies} with cookie replies and dropped ${r.badMac1} for their mac1`)
    t.equal(r.gcs, 0, `garbage collections during ${r.messages} handshake messages: ${r.gcs} (kinds ${r.kinds.join(',')})`)
    const perMessage = r.heapGrowth / r.messages
    t.ok(perMessage < 0.25, `heap growth ${(r.heapGrowth / 1024).toFixed(0)} KiB = ${perMessage.toFixed(3)} bytes per message`)
  },
)
