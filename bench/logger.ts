/**
 * Log lines per second through the control logger at -v 5 (frame data, one `flow` line per packet),
 * key=value format, stdout sent to /dev/null, rate limiting off so every line is formatted and written.
 *   node --import=tsx bench/logger.ts [module]   (module: a logger to compare, default src/log/logger.ts)
 * Prints one JSON line on stderr: {"case":"logger","lines":N,"seconds":S,"linesPerSecond":R}.
 */
import fs from 'node:fs'

const mod = process.argv[2] ?? new URL('../src/log/logger.ts', import.meta.url).pathname
const { createLogger } = (await import(mod)) as {
  createLogger: (v: number, f: 'logfmt', o?: object) => { trace: (o: object, m: string) => void }
}
const devNull = fs.openSync('/dev/null', 'w')
fs.closeSync(1)
fs.openSync('/dev/null', 'w') // becomes fd 1
fs.closeSync(devNull)
const log = createLogger(5, 'logfmt', { rateLimit: false })
const N = Number(process.env.BENCH_LINES) || 200_000
const flow = (i: number) => ({
  dir: 'inbound',
  peer: 'G982V',
  proto: 'udp',
  src: `172.26.0.250:${1024 + (i & 1023)}`,
  dst: '100.64.69.156:53',
  size: 64 + (i & 511),
  verdict: 'forwarded',
})
for (let i = 0; i < 10_000; i++) log.trace(flow(i), 'flow')
const t0 = process.hrtime.bigint()
for (let i = 0; i < N; i++) log.trace(flow(i), 'flow')
const s = Number(process.hrtime.bigint() - t0) / 1e9
process.stderr.write(
  `${JSON.stringify({ case: 'logger', module: mod, lines: N, seconds: +s.toFixed(3), linesPerSecond: Math.round(N / s) })}\n`,
)
