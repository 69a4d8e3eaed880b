#!/usr/bin/env node
// Runs the tap suite, streams its output, and ends with one plain summary line that any CI reads:
// "N passed, N failed, N skipped". The exit code is tap's.
import { spawn } from 'node:child_process'

const tap = spawn(process.execPath, ['node_modules/tap/dist/esm/run.mjs', ...process.argv.slice(2)], {
  stdio: ['inherit', 'pipe', 'inherit'],
})
let tail = ''
tap.stdout.on('data', (d) => {
  process.stdout.write(d)
  tail = (tail + d.toString()).slice(-4000)
})
tap.on('exit', (code, signal) => {
  // tap's last line is like "# { total: 15, pass: 12, fail: 1, todo: 2, skip: 1 }" (keys present only when non-zero).
  const m = /# \{ (total: \d+[^}]*) \}/.exec(tail)
  if (m) {
    const n = Object.fromEntries(m[1].split(', ').map((kv) => kv.split(': ')))
    const todo = n.todo ? `, ${n.todo} todo` : ''
    console.log(`\ntests: ${n.pass ?? 0} passed, ${n.fail ?? 0} failed, ${n.skip ?? 0} skipped${todo} (${n.total} assertions)`)
  } else {
    console.log('\ntests: 0 passed, 1 failed (tap printed no summary)')
  }
  process.exit(code ?? (signal ? 1 : 0))
})
