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
  const m = /# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, skip: (\d+))?(?:, todo: (\d+))?/.exec(tail)
  if (m) {
    const [, total, pass = '0', fail = '0', skip = '0'] = m
    console.log(`\ntests: ${pass} passed, ${fail} failed, ${skip} skipped (${total} assertions)`)
  } else {
    console.log('\ntests: 0 passed, 1 failed (tap printed no summary)')
  }
  process.exit(code ?? (signal ? 1 : 0))
})
