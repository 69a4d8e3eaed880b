/**
 * Known profile keys, for catching hand-editing mistakes: a key that matches a known key except for
 * case, or within a small edit distance ("Endpiont", "exitnode", "ManageNAT"), is an error with
 * "did you mean …?"; any other unknown key is kept on rewrite and reported as a warning.
 */
import type { ProfileProblem } from '../errors.js'

interface Level {
  keys: string[]
  /** Child levels by key; `[]` marks an array of objects of that level. */
  children?: Record<string, Level | [Level]>
}

const ACL: Level = { keys: ['Protocol', 'Ports', 'Description'] }
const POLICY: Level = {
  keys: ['Description', 'IsEnabled', 'SenderTags', 'ReceiverTags', 'Acls', 'GatewayRoutes', 'GatewayAllowedIpRanges'],
  children: { Acls: [ACL], GatewayAllowedIpRanges: [{ keys: ['IpRange', 'Description'] }] },
}
const PEER: Level = {
  keys: ['PublicKey', 'Identity', 'VirtualAddress', 'Endpoint', 'PersistentKeepalive', 'PresharedKey', 'Description', 'Tags'],
}
const EXIT_NODE: Level = { keys: ['ProvidesRoutes', 'AvailableRoutes', 'ManageNat', 'SnatAddress', 'ForceRoutes', 'AllowIpv6'] }

const HUB: Level = { keys: ['Urls', 'PublicKey', 'AllowGateway', 'AcceptDefaultRoute', 'AdvertiseEndpoints'] }

export const PROFILE_KEYS: Level = {
  keys: [
    'PrivateKey',
    'VirtualAddress',
    'LocalPort',
    'Interface',
    'Mtu',
    'Peers',
    'Tags',
    'ExitNode',
    'LogLevel',
    'ControlGroup',
    'Workers',
    'MetricsListen',
    'Policies',
    'Hub',
  ],
  children: { Peers: [PEER], ExitNode: EXIT_NODE, Policies: [POLICY], Hub: HUB },
}

/** Damerau-Levenshtein distance (optimal string alignment), small strings only. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
  for (let j = 0; j <= b.length; j++) d[0][j] = j
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  return d[a.length][b.length]
}

/** The known key that `key` most likely means, or undefined. */
export function nearMiss(key: string, known: readonly string[]): string | undefined {
  const k = key.toLowerCase()
  const exact = known.find((c) => c.toLowerCase() === k)
  if (exact) return exact
  const limit = k.length <= 4 ? 1 : 2
  let best: string | undefined
  let bestD = limit + 1
  for (const c of known) {
    const dist = editDistance(k, c.toLowerCase())
    if (dist < bestD) {
      best = c
      bestD = dist
    }
  }
  return best
}

export interface KeyReport {
  /** Near misses: errors. */
  problems: ProfileProblem[]
  /** Other unknown keys (JSON paths): kept, listed as warnings by status and doctor. */
  unknown: string[]
}

/** Walks `raw` and reports wrong-case, misspelt and unknown keys at every level it knows. */
export function checkKeys(raw: unknown, level: Level = PROFILE_KEYS, at = '', out: KeyReport = { problems: [], unknown: [] }): KeyReport {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return out
  for (const [k, v] of Object.entries(raw)) {
    const path = at ? `${at}.${k}` : k
    if (!level.keys.includes(k)) {
      const guess = nearMiss(k, level.keys)
      if (guess) out.problems.push({ path, reason: `unknown key "${k}"; did you mean ${guess}?` })
      else out.unknown.push(path)
      continue
    }
    const child = level.children?.[k]
    if (!child) continue
    if (Array.isArray(child)) {
      if (Array.isArray(v)) for (const [i, item] of v.entries()) checkKeys(item, child[0], `${path}[${i}]`, out)
    } else checkKeys(v, child, path, out)
  }
  return out
}
