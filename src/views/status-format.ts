/**
 * Text rendering of the status model in the original product's layout: a label padded to
 * 20 columns ipconfig-style (after the label, even columns get '.', odd ones a space), then
 * ': ' and the value. Continuation lines are blank-padded to column 20.
 */
import type { StatusModel, PeerStatus } from './status-model.js'
import { EVENT_REASONS } from '../ipc/layout.js'

const LABEL_WIDTH = 20

export function dotted(label: string): string {
  let s = label
  for (let col = label.length; col < LABEL_WIDTH; col++) s += col % 2 === 0 ? '.' : ' '
  return s
}

export function field(indent: string, label: string, values: string | string[]): string[] {
  const list = Array.isArray(values) ? values : [values]
  if (list.length === 0) return []
  const out = [`${indent}${dotted(label)}: ${list[0]}`]
  for (const v of list.slice(1)) out.push(`${indent}${' '.repeat(LABEL_WIDTH)}: ${v}`)
  return out
}

/** Bytes with three significant digits: 999 B, 1.93 KB, 19.3 MB, 193 GB. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`
  const units = ['KB', 'MB', 'GB', 'TB']
  let v = n
  let u = -1
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000
    u++
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`
}

const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`

export function formatAgo(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return 'never'
  if (seconds < 60) return `${seconds.toFixed(1)} seconds ago`
  if (seconds < 3600) return `${plural(Math.floor(seconds / 60), 'minute')} ${plural(Math.floor(seconds % 60), 'second')} ago`
  return `${(seconds / 3600).toFixed(1)} hours ago`
}

/** A peer's state with what the agent sees: "Up", or "Up, no reply for 17 s". */
export function formatPeerState(p: PeerStatus): string {
  return p.noReplySeconds !== undefined ? `${p.state}, no reply for ${p.noReplySeconds} s` : p.state
}

/** Non-zero drop reasons (events such as keepalives left out), largest first: "not_for_us 12, unsolicited 3". */
export function formatDrops(counters: Record<string, number> | undefined, events: ReadonlySet<string>): string | undefined {
  const list = Object.entries(counters ?? {})
    .filter(([k, v]) => v > 0 && !events.has(k))
    .sort((a, b) => b[1] - a[1])
  return list.length ? list.map(([k, v]) => `${k} ${v}`).join(', ') : undefined
}

function peerTitle(p: PeerStatus): string {
  return p.description ? `${p.identity} (${p.description})` : p.identity
}

export function formatStatus(s: StatusModel): string {
  const lines: string[] = [`Local identity: ${s.localIdentity}`, '']
  const i1 = '  '
  lines.push(...field(i1, 'Release version', s.releaseVersion))
  lines.push(...field(i1, 'Agent state', s.running ? `Running (pid ${s.pid})` : 'Not running (showing the profile only)'))
  lines.push(...field(i1, 'Profile location', s.profileLocation))
  lines.push(...field(i1, 'Public key', s.publicKey))
  if (s.bindingAddress) lines.push(...field(i1, 'Binding address', s.bindingAddress))
  lines.push(...field(i1, 'Virtual adapter', s.interface))
  lines.push(...field(i1, 'Virtual address', s.virtualAddress))
  lines.push(...field(i1, 'Virtual network', '100.64.0.0/10 (255.192.0.0)'))
  const en = s.exitNode
  if (en.providesRoutes.length) {
    lines.push(...field(i1, 'Exit node for', en.providesRoutes))
    if (s.running) {
      lines.push(...field(i1, 'Exit node flows', `${en.activeFlows} active, ${en.unsolicitedDrops} unsolicited packets dropped`))
      const users = en.users.map(
        (u) =>
          `${u.identity}: ${u.flows} ${u.flows === 1 ? 'flow' : 'flows'}, ${formatBytes(u.bytesToLan)} to LAN, ${formatBytes(u.bytesFromLan)} from LAN`,
      )
      if (users.length) lines.push(...field(i1, 'Exit node users', users))
    }
    for (const w of en.warnings) lines.push(...field(i1, 'Warning', w))
  }
  if (s.running) {
    const drops = formatDrops(s.counters, EVENT_REASONS)
    lines.push(...field(i1, 'Dropped packets', drops ? `${drops} (since start; -v 5 logs each)` : 'none'))
  }
  if (s.hub) {
    const h = s.hub
    const facts = [
      h.state,
      h.rev !== undefined ? `rev ${h.rev}` : '',
      h.peers !== undefined ? `${h.peers} peers` : '',
      h.mapAgeS !== undefined ? `map ${h.mapAgeS} s old` : '',
    ]
    lines.push(...field(i1, 'Hub', `${h.url} (${facts.filter(Boolean).join(', ')})`))
    if (h.systemState) lines.push(...field(i1, 'On the hub', h.systemState === 'pending' ? 'awaiting approval' : h.systemState))
    if (h.error) lines.push(...field(i1, 'Hub error', h.error))
    if (h.nat)
      lines.push(...field(i1, 'NAT', `${NAT_WORDS[h.nat] ?? h.nat}${h.reflexive ? `; the hub sees this system at ${h.reflexive}` : ''}`))
    for (const n of h.notAccepted) lines.push(...field(i1, 'Not accepted', `offered by the hub, not accepted locally: ${n}`))
  }
  lines.push(...formatPolicy(s, i1))
  for (const p of s.peers) {
    lines.push('', `${i1}Peer: ${peerTitle(p)}`, '')
    const i2 = '    '
    lines.push(...field(i2, 'Peer state', formatPeerState(p)))
    lines.push(...field(i2, 'Endpoint', p.endpoint ? `Udp/${p.endpoint}` : '(none: waits for the peer to connect)'))
    if (p.path)
      lines.push(
        ...field(i2, 'Path', `${PATH_WORDS[p.path] ?? p.path}${p.roundTripMs !== undefined ? `; round trip ${p.roundTripMs} ms` : ''}`),
      )
    lines.push(...field(i2, 'Virtual address', p.virtualAddress))
    const tags = p.tags?.filter((t) => !t.startsWith('@'))
    if (tags?.length) lines.push(...field(i2, 'Tags', tags.join(', ')))
    if (p.source) lines.push(...field(i2, 'Source', p.source === 'hub' ? 'hub' : 'local profile'))
    if (s.running) {
      lines.push(...field(i2, 'Last handshake', formatAgo(p.lastHandshakeSecondsAgo)))
      lines.push(...field(i2, 'Last activity', formatAgo(p.lastActivitySecondsAgo)))
      lines.push(...field(i2, 'Transfer', `${formatBytes(p.rxBytes)} received, ${formatBytes(p.txBytes)} sent`))
    }
    if (p.exitNodeFor.length) {
      lines.push(
        ...field(
          i2,
          'Exit node for',
          p.exitNodeFor.map((r) => {
            const notes: string[] = []
            if (s.running && !r.installed) notes.push(`not installed: ${r.reason ?? 'unknown'}`)
            else if (s.running && r.active === false) notes.push(`standby: ${r.reason ?? 'another exit node is preferred'}`)
            return notes.length ? `${r.route} (${notes.join('; ')})` : r.route
          }),
        ),
      )
    }
  }
  return lines.join('\n')
}

/** `enclave peers`: one line per peer, like `wg show`, with a header. */
export function formatPeerLines(s: StatusModel): string {
  const rows = [['IDENTITY', 'DESCRIPTION', 'STATE', 'ENDPOINT', 'HANDSHAKE', 'TRANSFER (rx/tx)', 'ROUTES']]
  for (const p of s.peers)
    rows.push([
      p.identity,
      p.description ?? '-',
      formatPeerState(p),
      p.endpoint ?? '-',
      s.running ? formatAgo(p.lastHandshakeSecondsAgo) : '-',
      s.running ? `${formatBytes(p.rxBytes)} / ${formatBytes(p.txBytes)}` : '-',
      p.exitNodeFor.map((r) => r.route + (s.running && !r.active ? ' (standby)' : '')).join(', ') || '-',
    ])
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)))
  const table = rows.map((r) => r.map((v, c) => (c === r.length - 1 ? v : v.padEnd(widths[c]))).join('  ')).join('\n')
  const drops = s.running ? formatDrops(s.counters, EVENT_REASONS) : undefined
  return drops ? `${table}\n\nDropped since start: ${drops}` : table
}

/** Warnings about the profile that do not stop it from loading (unknown keys are kept, ignored). */
export function formatProfileWarnings(unknownKeys: string[]): string[] {
  return unknownKeys.map((k) => `Warning: profile key ${k} is not known to this version: kept, ignored (check its spelling)`)
}

/** Tags, the policy mode and each policy with its counters. */
function formatPolicy(s: StatusModel, indent: string): string[] {
  const pol = s.policy
  if (!pol) return []
  const out = [
    ...field(indent, 'Tags', pol.tags.length ? pol.tags.join(', ') : '(none)'),
    ...field(indent, 'Policy', pol.summary.replace(/^policy: /, '')),
  ]
  const rows = pol.policies.map((p) => {
    const where = p.enforcedHere ? '' : ' (not enforced here)'
    const counts = s.running && p.enforcedHere ? `; ${p.hits} flows allowed, ${p.drops} dropped by its Acls` : ''
    return `${p.label}: ${p.rule}${where}${counts}`
  })
  if (rows.length) out.push(...field(indent, 'Policies', rows))
  if (s.running && pol.mode === 'enforce') out.push(...field(indent, 'Policy drops', `${pol.droppedNoPolicy} new flows no policy allows`))
  return out
}

/** The NAT classes of endpoint discovery (src/hubproto/reflect.ts), as status says them. */
const PATH_WORDS: Record<string, string> = {
  direct: 'direct (through NAT, found by probes)',
  local: 'local (behind the same router)',
  'relay-udp': 'relayed by the hub (UDP); probing for a direct path',
}

export const NAT_WORDS: Record<string, string> = {
  none: 'none (a public address)',
  easy: 'easy (one mapping for every destination: peers can reach this system)',
  hard: 'hard (a mapping per destination: direct paths need the other side public)',
  blocked: "blocked (UDP to the hub's reflect ports gets no answer)",
  unknown: 'unknown (one of the two reflect ports answered)',
}
