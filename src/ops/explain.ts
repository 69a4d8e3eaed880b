/**
 * `enclave explain <ip>`: where traffic to an address goes. The OS route (`ip route get`), the
 * longest overlay prefix (a peer's own address, then exit-node routes), the exit node carrying it,
 * the standbys, and a one-line verdict. `explain()` is pure; `osRouteTo()` asks the OS.
 */
import { type Cidr, cidrContains, parseCidr } from '../common/ipv4.js'
import { run } from '../platform/linux/exec.js'
import type { StatusModel } from '../views/status-model.js'

export interface Candidate {
  identity: string
  description?: string
  state: string
  endpoint?: string
  route: string
  active: boolean
  installed: boolean
  reason?: string
}

export interface Explanation {
  destination: string
  osRoute: string
  entersOverlay: boolean
  overlayRoute?: string
  carriedBy?: Candidate
  standby: Candidate[]
  verdict: string
}

/** The first line of `ip route get <address>` (or its error). */
export async function osRouteTo(address: string): Promise<string> {
  const os = await run('ip', ['route', 'get', address])
  return (os.stdout.split('\n')[0] ?? '').trim() || os.stderr.trim()
}

export function explain(address: string, ip: number, s: StatusModel, osRoute: string): Explanation {
  const entersOverlay = new RegExp(`\\bdev ${s.interface}\\b`).test(osRoute)
  const all: Array<Candidate & { cidr: Cidr }> = []
  for (const p of s.peers) {
    const base = { identity: p.identity, description: p.description, state: p.state, endpoint: p.endpoint }
    all.push({ ...base, route: `${p.virtualAddress}/32`, active: true, installed: true, cidr: parseCidr(`${p.virtualAddress}/32`) as Cidr })
    for (const r of p.exitNodeFor)
      all.push({ ...base, route: r.route, active: r.active, installed: r.installed, reason: r.reason, cidr: parseCidr(r.route) as Cidr })
  }
  const matching = all.filter((c) => cidrContains(c.cidr, ip)).sort((a, b) => b.cidr.len - a.cidr.len)
  const best = matching.filter((c) => c.cidr.len === matching[0]?.cidr.len)
  const strip = ({ cidr: _c, ...rest }: Candidate & { cidr: Cidr }): Candidate => rest
  const carried = best.find((c) => c.active)
  return {
    destination: address,
    osRoute,
    entersOverlay,
    overlayRoute: best[0]?.route,
    carriedBy: carried ? strip(carried) : undefined,
    standby: best.filter((c) => c !== carried).map(strip),
    verdict: verdict(best, carried, entersOverlay, osRoute),
  }
}

/** `ip route get` answered with an error: the OS itself has no way there. */
export function osRefuses(osRoute: string): boolean {
  return /unreachable|prohibit|RTNETLINK|Network is down|blackhole/i.test(osRoute)
}

function verdict(best: Candidate[], carried: Candidate | undefined, entersOverlay: boolean, osRoute: string): string {
  if (!best.length)
    return entersOverlay
      ? 'the OS sends it into the overlay, but no peer routes it: it is dropped (no_route)'
      : osRefuses(osRoute)
        ? `the OS has no route to it (${osRoute}): packets fail on this machine, in the overlay or outside it`
        : 'not an overlay destination: it leaves through your normal network'
  if (!entersOverlay)
    return `not sent into the overlay: ${best[0].reason ?? 'the OS routes it elsewhere (a more specific local route wins)'}`
  if (carried && carried.state !== 'Up')
    return `goes to ${carried.identity}, whose session is ${carried.state}: packets wait for the handshake`
  if (carried) return `goes through ${carried.identity}${carried.description ? ` (${carried.description})` : ''} over the encrypted overlay`
  return 'no exit node for this route is available'
}

/**
 * The one verdict: where the route takes the traffic, unless the system that receives it refuses it by
 * policy (as this profile knows the tags), in which case that is the verdict.
 */
export function overallVerdict(e: Explanation, sends: { receiver: string; verdict: string } | undefined): string {
  const by = e.carriedBy
  if (by && e.entersOverlay && sends && /^drop/.test(sends.verdict))
    return `dropped by ${by.identity}'s policy (${sends.verdict.replace(/^drop:?\s*/, '')}): it would go through ${by.identity}, which refuses it`
  return e.verdict
}
