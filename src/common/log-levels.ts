/** Log levels: the original product's verbosity 0-5, its names, and the level names log lines carry. */
export const VERBOSITY_NAMES = ['minimal', 'informational', 'networkevents', 'protocolevents', 'debug', 'framedata']

/** The level log lines show for each verbosity. */
export const LEVEL_FOR_VERBOSITY = ['warn', 'info', 'network', 'protocol', 'debug', 'trace']

/**
 * A log level as people write it: 0-5, the original product's names (minimal … framedata), or the level
 * names log lines carry (warn, info, network, protocol, debug, trace). Undefined when it is none of them.
 */
export function parseLogLevel(s: string | number): number | undefined {
  if (typeof s === 'number') return Number.isInteger(s) && s >= 0 && s <= 5 ? s : undefined
  const t = s.trim().toLowerCase()
  if (/^[0-5]$/.test(t)) return Number(t)
  const byName = VERBOSITY_NAMES.indexOf(t)
  if (byName >= 0) return byName
  const byLine = LEVEL_FOR_VERBOSITY.indexOf(t === 'warning' ? 'warn' : t)
  return byLine >= 0 ? byLine : undefined
}

/** For messages: "0 minimal (warn), 1 informational (info), …". */
export const LOG_LEVELS_TEXT = VERBOSITY_NAMES.map((n, i) => `${i} ${n} (${LEVEL_FOR_VERBOSITY[i]})`).join(', ')
