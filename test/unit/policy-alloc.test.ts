/**
 * The evaluator's contract: a new-flow decision allocates nothing. 2M decisions with 100 policies and
 * 1,000 peers, in a clean `node --expose-gc` process, must not trigger a garbage collection.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
const probe = path.join(ROOT, 'test/helpers/policy-alloc-probe.mjs')

t.test(
  'new-flow policy decisions allocate nothing',
  { skip: fs.existsSync(path.join(ROOT, 'lib/bench/policy.js')) ? false : 'run `npm run build` first (npm test does)' },
  async (t) => {
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        'env',
        ['-i', `PATH=${process.env.PATH}`, process.execPath, '--expose-gc', probe],
        { cwd: ROOT, timeout: 60000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      )
    })
    const r = JSON.parse(out) as { gcs: number; heapGrowth: number; decisions: number; allowed: number }
    t.ok(r.allowed > 0 && r.allowed < r.decisions, `a mix of verdicts: ${r.allowed} of ${r.decisions} allowed`)
    t.equal(r.gcs, 0, `garbage collections during ${r.decisions} decisions: ${r.gcs}`)
    const perDecision = r.heapGrowth / r.decisions
    t.ok(perDecision < 0.05, `heap growth ${(r.heapGrowth / 1024).toFixed(0)} KiB = ${perDecision.toFixed(4)} bytes per decision`)
  },
)
