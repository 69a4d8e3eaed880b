#!/usr/bin/env node
// Runs the suite in its four parts and ends with the failing tests' "not ok" lines, if any, and one
// plain summary line that any CI reads: "tests: N passed, N failed, N skipped". Parts: `unit` (no root;
// three files at a time), `cli` (the real bin/run.js), `browser` (the hub's portal in Debian's chromium
// through playwright-core; the whole suite runs it beside cli, two files at a time) and `netns` (root: real TUN, namespaces, iptables, wireguard-go; two
// files at a time, then one at a time the files whose time bounds want the machine to themselves, and the fuzzers).
// `node scripts/test.mjs unit cli+browser` runs some; extra tap arguments follow `--`.
// With ENCLAVE_REQUIRE_ALL=1 (CI: root, every tool installed) a skipped test fails the run.
import { spawn } from 'node:child_process'
import fs from 'node:fs'

const PARTS = {
  unit: { dir: 'test/unit', jobs: 3 },
  cli: { dir: 'test/cli', jobs: 2 },
  browser: { dir: 'test/browser', jobs: 1 },
  // Every netns file makes its own namespaces (named with its pid), wireguard-go devices and ports inside
  // them, so two can run at once. These run after, alone: some assert time bounds that another file's
  // agents starting on the same two cores would eat into (relay within 1 s, recovery within 2 s, a policy
  // change seen within 0.5 s); the two fuzzers load both cores and count answered pings meanwhile.
  netns: {
    dir: 'test/netns',
    jobs: 2,
    alone: ['hub-paths', 'restart', 'hub-replica-relay', 'portal-e2e', 'policy', 'lan-fuzz', 'overlay'].map(
      (f) => `test/netns/${f}.test.ts`,
    ),
  },
}
const argv = process.argv.slice(2)
const dash = argv.indexOf('--')
// A part's name, or several joined by '+' (run as one part: their files together).
const isPart = (a) => a.split('+').every((p) => p in PARTS)
const names = (dash < 0 ? argv : argv.slice(0, dash)).filter(isPart)
const extra = dash < 0 ? argv.filter((a) => !isPart(a)) : argv.slice(dash + 1)
// The whole suite runs cli and browser as one part: their files together, two at a time.
const chosen = (names.length ? names : ['unit', 'cli+browser', 'netns']).map((n) => n.split('+'))

/** A part's tap runs: its files at its jobs, then (netns) the files that run alone, one at a time. */
function lanes(group) {
  const alone = group.flatMap((g) => PARTS[g].alone ?? [])
  const jobs = Math.max(...group.map((g) => PARTS[g].jobs))
  if (alone.length === 0) return [{ files: group.map((g) => `${PARTS[g].dir}/*.test.ts`), jobs }]
  for (const f of alone) if (!fs.existsSync(f)) throw new Error(`scripts/test.mjs: ${f} is named to run alone but does not exist`)
  const files = (dir) =>
    fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.test.ts'))
      .sort()
      .map((f) => `${dir}/${f}`)
  const all = group.flatMap((g) => files(PARTS[g].dir))
  return [
    { files: all.filter((f) => !alone.includes(f)), jobs },
    { files: alone, jobs: 1 },
  ]
}

async function runPart(group) {
  const name = group.join('+')
  const started = Date.now()
  const n = {}
  const failures = []
  let code = 0
  for (const lane of lanes(group)) {
    const r = await runTap(lane.files, lane.jobs)
    failures.push(...r.failures)
    if (!r.n) return { name, code: r.code || 1, n: undefined, failures, seconds: (Date.now() - started) / 1000 }
    for (const [k, v] of Object.entries(r.n)) n[k] = (n[k] ?? 0) + v
    code ||= r.code
  }
  return { name, code, n, failures, seconds: (Date.now() - started) / 1000 }
}

function runTap(files, jobs) {
  return new Promise((resolve) => {
    const tap = spawn(process.execPath, ['node_modules/tap/dist/esm/run.mjs', `--jobs=${jobs}`, ...files, ...extra], {
      stdio: ['inherit', 'pipe', 'inherit'],
    })
    let tail = ''
    let partial = ''
    const failures = []
    let left = 0
    // Every "not ok" line, kept with its indentation (its depth in the file's subtests), for the summary.
    // Past 60, only the files' own lines (depth 0) are kept: they name what failed.
    const collect = (l) => {
      if (!/^\s*not ok \d+/.test(l) || /# TODO/.test(l)) return
      if (failures.length < 60 || !/^\s/.test(l)) failures.push(l.replace(/ # time=.*$/, ''))
      else left++
    }
    tap.stdout.setEncoding('utf8') // a character split between two chunks stays whole
    tap.stdout.on('data', (d) => {
      process.stdout.write(d)
      tail = (tail + d).slice(-4000)
      const lines = (partial + d).split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) collect(l)
    })
    // 'close', not 'exit': by then stdout is read to its end.
    tap.on('close', (code, signal) => {
      collect(partial)
      if (left) failures.push(`(${left} more "not ok" lines inside these files: see above)`)
      // tap's last line is like "# { total: 15, pass: 12, fail: 1, todo: 2, skip: 1 }" (keys only when non-zero).
      const m = /# \{ (total: \d+[^}]*) \}/.exec(tail)
      const n = m ? Object.fromEntries(m[1].split(', ').map((kv) => kv.split(': ').map((x, i) => (i ? Number(x) : x)))) : undefined
      resolve({ code: code ?? (signal ? 1 : 0), n, failures })
    })
  })
}

const results = []
for (const group of chosen) results.push(await runPart(group))
const sum = { pass: 0, fail: 0, skip: 0, todo: 0, total: 0 }
let failed = false
console.log('')
for (const r of results) {
  if (!r.n) {
    console.log(`${r.name}: tap printed no summary (exit ${r.code})`)
    failed = true
    sum.fail++
    continue
  }
  for (const k of Object.keys(sum)) sum[k] += r.n[k] ?? 0
  if (r.code !== 0) failed = true
  console.log(`${r.name}: ${r.n.pass ?? 0} passed, ${r.n.fail ?? 0} failed, ${r.n.skip ?? 0} skipped in ${r.seconds.toFixed(0)} s`)
}
if (process.env.ENCLAVE_REQUIRE_ALL === '1' && sum.skip > 0) {
  console.log(`ENCLAVE_REQUIRE_ALL=1: ${sum.skip} test(s) skipped, and here every test must run (see "# SKIP" above)`)
  failed = true
}
// The failures again at the end, where a CI log's tail shows them (tap prints them amid thousands of lines).
const failures = results.flatMap((r) => r.failures.map((l) => `  ${r.name}: ${l}`))
if (failures.length)
  console.log(`\nfailed (indented by depth: the failed assertions, then their subtest, then the file):\n${failures.join('\n')}`)
const todo = sum.todo ? `, ${sum.todo} todo` : ''
console.log(`\ntests: ${sum.pass} passed, ${sum.fail} failed, ${sum.skip} skipped${todo} (${sum.total} assertions)`)
process.exit(failed ? 1 : 0)
