/**
 * Logging through pino with the original product's six verbosity levels:
 *   -v 0 minimal, 1 informational (default), 2 network events, 3 protocol events, 4 debug, 5 frame data.
 * Lines go to stdout (journald picks them up) as key=value, or JSON with --log-format json.
 */
import pino, { type Logger } from 'pino'

export const VERBOSITY_NAMES = ['minimal', 'informational', 'networkevents', 'protocolevents', 'debug', 'framedata']
const LEVEL_FOR_VERBOSITY = ['warn', 'info', 'network', 'protocol', 'debug', 'trace']

export type AgentLogger = Logger<'network' | 'protocol'>

function logfmtValue(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v)
  return /[\s="]/.test(s) || s === '' ? JSON.stringify(s) : s
}

/** A sync stream that turns pino's JSON lines into `time=… level=… msg="…" key=value` lines. */
function logfmtStream(out: NodeJS.WritableStream) {
  return {
    write(line: string) {
      const o = JSON.parse(line) as Record<string, unknown>
      const { time, level, msg, ...rest } = o
      let s = `time=${new Date(Number(time)).toISOString()} level=${level} msg=${logfmtValue(msg ?? '')}`
      for (const [k, v] of Object.entries(rest)) if (v !== undefined) s += ` ${k}=${logfmtValue(v)}`
      out.write(s + '\n')
    },
  }
}

export function createLogger(verbosity: number, format: 'logfmt' | 'json' = 'logfmt'): AgentLogger {
  const opts = {
    customLevels: { network: 27, protocol: 24 },
    level: LEVEL_FOR_VERBOSITY[Math.max(0, Math.min(5, verbosity))],
    base: undefined,
    formatters: { level: (label: string) => ({ level: label }) },
  }
  const dest = format === 'json' ? pino.destination({ fd: 1, sync: true }) : logfmtStream(process.stdout)
  return pino(opts, dest) as AgentLogger
}

export function setVerbosity(log: AgentLogger, verbosity: number): void {
  log.level = LEVEL_FOR_VERBOSITY[Math.max(0, Math.min(5, verbosity))]
}
