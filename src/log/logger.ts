/**
 * Logging through pino with the original product's six verbosity levels:
 *   -v 0 minimal, 1 informational (default), 2 network events, 3 protocol events, 4 debug, 5 frame data.
 * Lines go to stdout (journald picks them up) as key=value, or JSON with --log-format json.
 *
 * Three guards keep logging from becoming a load of its own when something triggers a line per packet:
 * - Each line is formatted once: key=value lines are written straight from the call's arguments in
 *   pino's logMethod hook (no JSON in between); JSON lines are pino's own.
 * - Lines are rate-limited per key (level, message and its `reason` or `verdict`): at most
 *   RATE_BUDGET lines per key per RATE_WINDOW_MS (TRACE_BUDGET for frame data); when the window
 *   ends, one line says how many similar lines were suppressed.
 * - With ENCLAVE_LOG_FILE (set by `enclave start` for its daemon, whose stdout and stderr are that
 *   file), the file is rotated at ENCLAVE_LOG_MAX_BYTES (default 10 MiB): enclave.log becomes
 *   enclave.log.1, .1 becomes .2, and the agent reopens a fresh enclave.log. At most three files.
 * Control also bounds the queue of worker log messages (WorkerLogQueue): beyond its bound they are
 * dropped and counted.
 */
import { LEVEL_FOR_VERBOSITY, LOG_LEVELS_TEXT, VERBOSITY_NAMES, parseLogLevel } from '../common/log-levels.js'

export { LOG_LEVELS_TEXT, VERBOSITY_NAMES, parseLogLevel }
import fs from 'node:fs'
import { format } from 'node:util'
import pino, { type Logger } from 'pino'
import { openLogNoFollow } from '../platform/linux/files.js'

const TRACE = 10

export const RATE_WINDOW_MS = 5000
export const RATE_BUDGET = 100
export const TRACE_BUDGET = 1000
/** Keys remembered at once; beyond this, keys with nothing suppressed are forgotten. */
const MAX_KEYS = 4096

export type AgentLogger = Logger<'network' | 'protocol'>

export interface LineSink {
  write(line: string): unknown
}

export interface LoggerOptions {
  /** Where lines go (default stdout). */
  out?: LineSink
  /** Rate limiting per key (default on). */
  rateLimit?: boolean
  /** Injected clock for tests. */
  now?: () => number
  /**
   * Start each line with its syslog priority (`<4>` for a warning): journald reads it, so that
   * `journalctl -p warning` works. Default: when stdout is the journal (systemd sets JOURNAL_STREAM).
   */
  priorityPrefix?: boolean
}

/** sd-daemon(3) priorities for our levels: error 3, warn 4, network events 5 (notice), info 6, the rest 7. */
export const SYSLOG_PRIORITY: Record<string, number> = { fatal: 2, error: 3, warn: 4, network: 5, info: 6, protocol: 7, debug: 7, trace: 7 }

/** `<N>` + line, N from the line's level (logfmt `level=warn` or JSON `"level":"warn"`). */
export function withPriority(line: string): string {
  const m = /\blevel(?:=|":")(\w+)/.exec(line)
  return `<${SYSLOG_PRIORITY[m?.[1] ?? 'info'] ?? 6}>${line}`
}

function logfmtValue(v: unknown): string {
  const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v)
  return /[\s="]/.test(s) || s === '' ? JSON.stringify(s) : s
}

/** `time=… level=… msg="…" key=value`, from the log call's object and message. */
export function logfmtLine(timeMs: number, level: string, msg: string, obj: Record<string, unknown> | undefined): string {
  let s = `time=${new Date(timeMs).toISOString()} level=${level} msg=${logfmtValue(msg)}`
  if (obj)
    for (const k in obj) {
      const v = obj[k]
      if (v !== undefined && typeof v !== 'function' && k !== 'msg' && k !== 'time' && k !== 'level') s += ` ${k}=${logfmtValue(v)}`
    }
  return `${s}\n`
}

interface KeyState {
  start: number
  count: number
  suppressed: number
  level: number
  msg: string
  detail?: string
}

/**
 * Per-key line budget over fixed windows. allow() says whether a line may be written; when a window
 * with suppressed lines ends (seen at the next line of that key, or by the timer), `report` is called
 * once with the number suppressed.
 */
export class LineLimiter {
  private keys = new Map<string, KeyState>()
  private timer?: NodeJS.Timeout
  constructor(
    private report: (level: number, msg: string, detail: string | undefined, suppressed: number) => void,
    private now: () => number = Date.now,
    private windowMs = RATE_WINDOW_MS,
  ) {}

  allow(level: number, msg: string, detail: string | undefined): boolean {
    const key = `${level}\u0000${msg}\u0000${detail ?? ''}`
    const t = this.now()
    let st = this.keys.get(key)
    if (st && t - st.start >= this.windowMs) {
      if (st.suppressed > 0) this.report(st.level, st.msg, st.detail, st.suppressed)
      st.start = t
      st.count = 0
      st.suppressed = 0
    }
    if (!st) {
      if (this.keys.size >= MAX_KEYS) for (const [k, s] of this.keys) if (s.suppressed === 0) this.keys.delete(k)
      st = { start: t, count: 0, suppressed: 0, level, msg, detail }
      this.keys.set(key, st)
    }
    if (st.count < (level <= TRACE ? TRACE_BUDGET : RATE_BUDGET)) {
      st.count++
      return true
    }
    st.suppressed++
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.windowMs)
      this.timer.unref()
    }
    return false
  }

  /** Reports every ended window with suppressed lines and forgets ended windows. */
  flush(): void {
    this.timer = undefined
    const t = this.now()
    let pending = false
    for (const [k, st] of this.keys) {
      if (t - st.start < this.windowMs) {
        pending ||= st.suppressed > 0
        continue
      }
      if (st.suppressed > 0) this.report(st.level, st.msg, st.detail, st.suppressed)
      this.keys.delete(k)
    }
    if (pending) {
      this.timer = setTimeout(() => this.flush(), this.windowMs)
      this.timer.unref()
    }
  }
}

/**
 * Rotates the daemon's log file (ENCLAVE_LOG_FILE) once it reaches `maxBytes`: renames it to .1
 * (and .1 to .2), opens a fresh file without following links, and points stdout and stderr at it.
 */
export class LogFileRotator {
  private written = 0
  private dup2?: (a: number, b: number) => number
  constructor(
    readonly file: string,
    readonly maxBytes: number,
  ) {
    void import('../native/io.js').then((m) => (this.dup2 = m.native.dup2)).catch(() => undefined)
  }

  /** stdout is `file` (the same inode): only then does the agent own its rotation. */
  static forStdout(env = process.env): LogFileRotator | undefined {
    const file = env.ENCLAVE_LOG_FILE
    if (!file) return undefined
    try {
      const a = fs.fstatSync(1)
      const b = fs.lstatSync(file)
      if (!a.isFile() || a.ino !== b.ino || a.dev !== b.dev) return undefined
    } catch {
      return undefined
    }
    const max = Number(env.ENCLAVE_LOG_MAX_BYTES) || 10 * 1024 * 1024
    return new LogFileRotator(file, Math.max(4096, max))
  }

  /** Counts bytes written; every 1/16 of the limit, checks the real size (stderr writes too). */
  wrote(bytes: number): void {
    this.written += bytes
    if (this.written < this.maxBytes / 16) return
    this.written = 0
    if (fs.fstatSync(1).size >= this.maxBytes) this.rotate()
  }

  rotate(): boolean {
    if (!this.dup2) return false
    let fd: number
    try {
      fs.renameSync(`${this.file}.1`, `${this.file}.2`)
    } catch {
      // no .1 yet
    }
    try {
      fs.renameSync(this.file, `${this.file}.1`)
      fd = openLogNoFollow(this.file)
    } catch (e) {
      process.stderr.write(`cannot rotate ${this.file}: ${(e as Error).message}\n`)
      return false
    }
    this.dup2(fd, 1)
    this.dup2(fd, 2)
    fs.closeSync(fd)
    return true
  }
}

export function createLogger(verbosity: number, fmt: 'logfmt' | 'json' = 'logfmt', o: LoggerOptions = {}): AgentLogger {
  const stdout: LineSink = o.out ?? process.stdout
  const prefix = o.priorityPrefix ?? (!o.out && !!process.env.JOURNAL_STREAM)
  const out: LineSink = prefix ? { write: (line: string) => stdout.write(withPriority(line)) } : stdout
  const rotator = o.out ? undefined : LogFileRotator.forStdout()
  const sink: LineSink = rotator
    ? {
        write(line: string) {
          out.write(line)
          rotator.wrote(line.length)
        },
      }
    : out
  const now = o.now ?? Date.now
  let log: AgentLogger
  const limiter =
    o.rateLimit === false
      ? undefined
      : new LineLimiter((level, msg, detail, n) => {
          const label = log.levels.labels[level] ?? 'info'
          const extra: Record<string, unknown> = { like: msg }
          if (detail) extra.reason = detail
          if (fmt === 'logfmt') sink.write(logfmtLine(now(), label, `${n} similar lines suppressed`, extra))
          else sink.write(`${JSON.stringify({ level: label, time: now(), ...extra, msg: `${n} similar lines suppressed` })}\n`)
        }, now)
  const opts: pino.LoggerOptions<'network' | 'protocol'> = {
    customLevels: { network: 27, protocol: 24 },
    level: LEVEL_FOR_VERBOSITY[Math.max(0, Math.min(5, verbosity))],
    base: undefined,
    formatters: { level: (label: string) => ({ level: label }) },
    hooks: {
      logMethod(args, method, level) {
        const first = args[0] as unknown
        const obj = typeof first === 'object' && first !== null ? (first as Record<string, unknown>) : undefined
        const rest = obj ? args.slice(1) : args
        const msg = rest.length === 0 || rest[0] === undefined ? '' : rest.length === 1 ? String(rest[0]) : format(...rest)
        if (limiter) {
          const detail = obj?.reason ?? obj?.verdict
          if (!limiter.allow(level, msg, detail === undefined ? undefined : String(detail))) return
        }
        if (fmt === 'logfmt') sink.write(logfmtLine(now(), this.levels.labels[level], msg, obj))
        else method.apply(this, args as Parameters<typeof method>)
      },
    },
  }
  const dest = fmt === 'json' ? (o.out || rotator || prefix ? sink : pino.destination({ fd: 1, sync: true })) : sink
  log = pino(opts, dest as pino.DestinationStream) as AgentLogger
  return log
}

export function setVerbosity(log: AgentLogger, verbosity: number): void {
  log.level = LEVEL_FOR_VERBOSITY[Math.max(0, Math.min(5, verbosity))]
}

export interface WorkerLogMessage {
  worker: number
  msg: { t: string } & Record<string, unknown>
}

/**
 * The worker -> control log path, bounded: messages are queued (at most `cap`) and handled in a later
 * turn of the event loop, beyond the bound they are dropped and counted, and one line reports the
 * drops after each drain. Wire it as `w.on('message', m => m.t === 'flow' || m.t === 'log' ?
 * queue.push({ worker: i, msg: m }) : …)`.
 */
export class WorkerLogQueue {
  private q: WorkerLogMessage[] = []
  private head = 0
  private scheduled = false
  dropped = 0
  droppedTotal = 0
  constructor(
    private handle: (m: WorkerLogMessage) => void,
    private onDropped: (n: number) => void,
    readonly cap = 1024,
  ) {}

  get length(): number {
    return this.q.length - this.head
  }

  push(m: WorkerLogMessage): boolean {
    if (this.length >= this.cap) {
      this.dropped++
      this.droppedTotal++
      return false
    }
    this.q.push(m)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.drain())
    }
    return true
  }

  drain(): void {
    this.scheduled = false
    const q = this.q
    const end = q.length
    for (; this.head < end; this.head++) this.handle(q[this.head])
    this.q = q.slice(this.head)
    this.head = 0
    if (this.dropped > 0) {
      this.onDropped(this.dropped)
      this.dropped = 0
    }
    if (this.q.length > 0 && !this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.drain())
    }
  }
}
