/**
 * The control logger: key=value lines formatted once (and identical to what parsing pino's JSON gave),
 * per-key rate limiting with a "suppressed" line, the bounded worker log queue, and rotation of the
 * daemon's log file.
 */
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { LineLimiter, RATE_BUDGET, RATE_WINDOW_MS, TRACE_BUDGET, WorkerLogQueue, createLogger } from '../../src/log/logger.js'

function collector() {
  const lines: string[] = []
  return { lines, out: { write: (s: string) => lines.push(...s.split('\n').filter((l) => l !== '')) } }
}

/** The previous logfmt path: parse pino's JSON line and serialise it again. The reference output. */
function fromJson(line: string): string {
  const v = (x: unknown) => {
    const s = typeof x === 'string' ? x : JSON.stringify(x)
    return /[\s="]/.test(s) || s === '' ? JSON.stringify(s) : s
  }
  const { time, level, msg, ...rest } = JSON.parse(line) as Record<string, unknown>
  let s = `time=${new Date(Number(time)).toISOString()} level=${level} msg=${v(msg ?? '')}`
  for (const [k, x] of Object.entries(rest)) if (x !== undefined) s += ` ${k}=${v(x)}`
  return s
}

t.test('key=value lines are exactly what the JSON round trip produced', async (t) => {
  const clock = () => 1_700_000_000_123
  const a = collector()
  const b = collector()
  const lf = createLogger(5, 'logfmt', { out: a.out, now: clock })
  const js = createLogger(5, 'json', { out: b.out, now: clock })
  const calls: Array<[string, unknown[]]> = [
    ['info', [{ peer: 'G982V', endpoint: '203.0.113.7:51820' }, 'handshake complete; session up']],
    ['warn', ['plain message with = and "quotes"']],
    [
      'network',
      [{ route: '10.0.0.0/8', empty: '', n: 42, ok: true, list: ['a', 'b c'], nested: { x: 1, y: undefined }, gone: undefined }, 'x'],
    ],
    ['protocol', [{ from: '1.2.3.4:5' }]],
    ['trace', [{ dir: 'outbound', size: 1400, verdict: 'forwarded' }, 'flow']],
    ['debug', [{ err: 'EPERM: not permitted' }, 'failed %s', 'twice']],
    ['error', [{ worker: 0, code: null }, 'data-plane worker exited unexpectedly; restarting it']],
  ]
  for (const [level, args] of calls) {
    ;(lf as unknown as Record<string, (...x: unknown[]) => void>)[level](...args)
    ;(js as unknown as Record<string, (...x: unknown[]) => void>)[level](...args)
  }
  t.equal(a.lines.length, calls.length)
  t.equal(b.lines.length, calls.length)
  const strip = (l: string) => l.replace(/^time=\S+ /, '')
  for (let i = 0; i < calls.length; i++) t.equal(strip(a.lines[i]), strip(fromJson(b.lines[i])), a.lines[i])
  t.match(
    a.lines[0],
    /^time=2023-11-14T22:13:20\.123Z level=info msg="handshake complete; session up" peer=G982V endpoint=203\.0\.113\.7:51820$/,
  )
})

t.test('10,000 identical warn lines: a bounded number, then one suppression line', async (t) => {
  let now = 1000
  const c = collector()
  const log = createLogger(1, 'logfmt', { out: c.out, now: () => now })
  for (let i = 0; i < 10_000; i++) log.warn({ from: '192.0.2.1:9', reason: 'bad_mac1' }, 'dropped handshake message')
  t.equal(c.lines.length, RATE_BUDGET, `${RATE_BUDGET} lines in the first window`)
  log.warn({ reason: 'other' }, 'dropped handshake message')
  t.equal(c.lines.length, RATE_BUDGET + 1, 'another reason has its own budget')
  now += RATE_WINDOW_MS
  log.warn({ from: '192.0.2.1:9', reason: 'bad_mac1' }, 'dropped handshake message')
  t.equal(c.lines.length, RATE_BUDGET + 3, 'window ended: the suppression line, then the new line')
  t.match(c.lines[RATE_BUDGET + 1], /level=warn msg="9900 similar lines suppressed" like="dropped handshake message" reason=bad_mac1$/)
  t.match(c.lines[RATE_BUDGET + 2], /msg="dropped handshake message" from=192\.0\.2\.1:9 reason=bad_mac1$/)
})

t.test('frame data has a larger budget; JSON output is limited too', async (t) => {
  const c = collector()
  const log = createLogger(5, 'json', { out: c.out, now: () => 0 })
  for (let i = 0; i < 5000; i++) log.trace({ verdict: 'forwarded', size: i }, 'flow')
  t.equal(c.lines.length, TRACE_BUDGET)
  t.equal(JSON.parse(c.lines[0]).msg, 'flow')
})

t.test('the limiter reports ended windows by itself (timer path)', async (t) => {
  let now = 0
  const reports: string[] = []
  const l = new LineLimiter(
    (level, msg, detail, n) => reports.push(`${level} ${msg} ${detail} ${n}`),
    () => now,
    1000,
  )
  for (let i = 0; i < 150; i++) l.allow(40, 'unsolicited', 'lan')
  l.flush()
  t.same(reports, [], 'nothing before the window ends')
  now = 1000
  l.flush()
  t.same(reports, ['40 unsolicited lan 50'])
  l.flush()
  t.same(reports, ['40 unsolicited lan 50'], 'reported once')
})

t.test('the worker log queue is bounded: drops beyond it are counted and reported', async (t) => {
  const handled: number[] = []
  const drops: number[] = []
  const q = new WorkerLogQueue(
    (m) => handled.push(Number(m.msg.n)),
    (n) => drops.push(n),
    100,
  )
  for (let n = 0; n < 10_000; n++) q.push({ worker: 0, msg: { t: 'flow', n } })
  t.equal(q.length, 100, 'never more than the bound queued')
  await new Promise((r) => setImmediate(r))
  t.equal(handled.length, 100)
  t.same(handled.slice(0, 3), [0, 1, 2], 'the oldest are kept, in order')
  t.same(drops, [9900])
  t.equal(q.droppedTotal, 9900)
  q.push({ worker: 1, msg: { t: 'log', n: 7 } })
  await new Promise((r) => setImmediate(r))
  t.equal(handled.at(-1), 7, 'works again after a drain')
})

t.test('the daemon log file rotates at its size limit, keeping two old files', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-log-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'enclave.log')
  const fd = fs.openSync(file, 'a', 0o640)
  const logger = new URL('../../src/log/logger.ts', import.meta.url).pathname
  const script = `
    const { createLogger } = await import(${JSON.stringify(logger)})
    const log = createLogger(1, 'logfmt', { rateLimit: false })
    for (let i = 0; i < 4000; i++) {
      log.info({ i, pad: 'x'.repeat(60) }, 'line')
      if (i % 50 === 0) await new Promise((r) => setImmediate(r))
    }
    log.info('last line')`
  const r = spawnSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ENCLAVE_LOG_FILE: file, ENCLAVE_LOG_MAX_BYTES: '65536' },
    timeout: 60_000,
  })
  fs.closeSync(fd)
  if (r.status !== 0) t.comment(fs.readFileSync(file, 'utf8').slice(-500))
  t.equal(r.status, 0, 'the logging process exits 0')
  const names = fs.readdirSync(dir).sort()
  t.same(names, ['enclave.log', 'enclave.log.1', 'enclave.log.2'], 'at most three files')
  for (const n of names)
    t.ok(fs.statSync(path.join(dir, n)).size <= 65536 + 4096 + 200, `${n} is capped (${fs.statSync(path.join(dir, n)).size} B)`)
  t.match(fs.readFileSync(file, 'utf8'), /msg="last line"\n$/, 'the newest lines are in enclave.log')
  const total = names.reduce((s, n) => s + fs.statSync(path.join(dir, n)).size, 0)
  t.ok(total < 4000 * 120, 'older lines were rotated away')
})

t.test('journald priorities: each line starts with its syslog priority when asked', async (t) => {
  const { createLogger, withPriority } = await import('../../src/log/logger.js')
  const lines: string[] = []
  const log = createLogger(4, 'logfmt', { out: { write: (l: string) => lines.push(l) }, priorityPrefix: true, rateLimit: false })
  log.warn('careful')
  log.error('broken')
  log.info('fine')
  log.debug('detail')
  t.same(
    lines.map((l) => l.slice(0, 3)),
    ['<4>', '<3>', '<6>', '<7>'],
    'warning 4, error 3, info 6, debug 7 (journalctl -p warning shows the first two)',
  )
  t.equal(withPriority('{"level":"warn","msg":"x"}\n').slice(0, 3), '<4>', 'JSON lines too')
  const plain: string[] = []
  createLogger(1, 'logfmt', { out: { write: (l: string) => plain.push(l) } }).warn('x')
  t.match(plain[0], /^time=/, 'no prefix unless asked (or stdout is the journal)')
})
