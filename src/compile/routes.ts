/**
 * The route compiler: pure functions from the profile and the peers' health to the data plane's
 * routing tables, the exit-node failover choice and the OS-route decisions. No I/O, no clock of its
 * own (`now` is an argument), so every decision is unit-tested without root.
 */
import { type Cidr, cidrContains, cidrsOverlap, intToIp, parseCidr } from '../common/ipv4.js'
import { type RouteTables, LOCAL_PROVIDED, LOCAL_SELF } from '../ipc/messages.js'
import { type RouteEntry, buildRouteTable } from '../dataplane/route-table.js'
import { REKEY_TIMEOUT_MS } from '../protocol/constants.js'
import type { OsRoute } from '../platform/linux/net.js'

/** What the compiler needs to know about one peer. */
export interface RoutePeer {
  slot: number
  identity: string
  virtualAddress: number
  availableRoutes: Cidr[]
  /** A send went unanswered (see timers): the peer is treated as down. */
  unresponsive: boolean
  /** Our handshake to it started at this time and has not completed. */
  handshakeStartedMs?: number
}

/** The part of the profile the tables depend on. */
export interface RouteProfile {
  virtualAddress: number
  providesRoutes: Cidr[]
}

/** An exit node whose handshake has been failing this long is skipped by failover. */
export const FAILOVER_HANDSHAKE_MS = 2 * REKEY_TIMEOUT_MS

export function isHealthy(p: RoutePeer, now: number): boolean {
  return !p.unresponsive && !(p.handshakeStartedMs !== undefined && now - p.handshakeStartedMs > FAILOVER_HANDSHAKE_MS)
}

/**
 * For each AvailableRoute, the first exit node in `order` (the profile's order of AvailableRoutes
 * keys) that is healthy; the first one when none is. Returns route text -> peer slot.
 */
export function chooseRoutes(peers: readonly RoutePeer[], order: readonly string[], now: number): Map<string, number> {
  const rank = (p: RoutePeer) => order.indexOf(p.identity)
  const candidates = new Map<string, RoutePeer[]>()
  for (const peer of peers) for (const c of peer.availableRoutes) candidates.set(c.text, [...(candidates.get(c.text) ?? []), peer])
  const out = new Map<string, number>()
  for (const [route, list] of candidates) {
    list.sort((a, b) => rank(a) - rank(b))
    out.set(route, (list.find((p) => isHealthy(p, now)) ?? list[0]).slot)
  }
  return out
}

/** Routes whose carrier changed between two choices (for the failover log line). */
export function failovers(before: Map<string, number>, after: Map<string, number>): Array<{ route: string; from: number; to: number }> {
  const out: Array<{ route: string; from: number; to: number }> = []
  for (const [route, to] of after) {
    const from = before.get(route)
    if (from !== undefined && from !== to) out.push({ route, from, to })
  }
  return out
}

export function sameChoice(a: Map<string, number>, b: Map<string, number>): boolean {
  if (a.size !== b.size) return false
  for (const [r, s] of a) if (b.get(r) !== s) return false
  return true
}

/** The data plane's tables for one routing state (`gen` numbers the snapshot). */
export function compileTables(profile: RouteProfile, peers: readonly RoutePeer[], active: Map<string, number>, gen: number): RouteTables {
  const route: RouteEntry[] = []
  const allow: RouteEntry[] = []
  const groups: number[][] = []
  const groupOf = new Map<string, number>()
  const addAllow = (c: Cidr, slot: number) => {
    let g = groupOf.get(c.text)
    if (g === undefined) {
      g = groups.length
      groups.push([])
      groupOf.set(c.text, g)
      allow.push({ addr: c.addr, len: c.len, value: g })
    }
    groups[g].push(slot)
  }
  const bySlot = new Map(peers.map((p) => [p.slot, p]))
  const peerAddrs = new Set(peers.map((p) => p.virtualAddress))
  for (const peer of peers) {
    route.push({ addr: peer.virtualAddress, len: 32, value: peer.slot })
    addAllow({ addr: peer.virtualAddress, len: 32, text: `${intToIp(peer.virtualAddress)}/32` }, peer.slot)
    for (const c of peer.availableRoutes) addAllow(c, peer.slot)
  }
  for (const [text, slot] of active) {
    const c = bySlot.get(slot)?.availableRoutes.find((x) => x.text === text)
    if (!c || (c.len === 32 && peerAddrs.has(c.addr))) continue
    route.push({ addr: c.addr, len: c.len, value: slot })
  }
  const groupStart = new Int32Array(groups.length + 1)
  const flat: number[] = []
  groups.forEach((g, i) => {
    groupStart[i] = flat.length
    flat.push(...g)
  })
  groupStart[groups.length] = flat.length
  const local: RouteEntry[] = [{ addr: profile.virtualAddress, len: 32, value: LOCAL_SELF }]
  for (const c of profile.providesRoutes) local.push({ addr: c.addr, len: c.len, value: LOCAL_PROVIDED })
  const rt = buildRouteTable(route)
  const at = buildRouteTable(allow)
  const lt = buildRouteTable(local)
  return {
    gen,
    routeChild: rt.child,
    routeVal: rt.val,
    allowChild: at.child,
    allowVal: at.val,
    groupStart,
    groupPeers: Int32Array.from(flat),
    localChild: lt.child,
    localVal: lt.val,
    exitNode: profile.providesRoutes.length > 0,
    selfAddr: profile.virtualAddress | 0,
  }
}

/** Every AvailableRoute of every peer, once. */
export function wantedRoutes(peers: readonly RoutePeer[]): Cidr[] {
  const out = new Map<string, Cidr>()
  for (const p of peers) for (const c of p.availableRoutes) if (!out.has(c.text)) out.set(c.text, c)
  return [...out.values()]
}

/** An OS route as `ip -j route` lists it (the platform layer's type). */
export type { OsRoute }

export interface RouteDecision {
  cidr: Cidr
  install: boolean
  reason?: string
  warning?: string
}

/**
 * Decides whether each AvailableRoute may be installed without hijacking the user's own networks:
 * a route equal to or inside a directly connected subnet, or equal to an existing route of another
 * device, is refused unless forced. A route that merely contains a connected subnet is installed
 * (longest prefix keeps the LAN local) with a warning.
 */
export function decideRoutes(wanted: Cidr[], existing: OsRoute[], ourDev: string, force: boolean): RouteDecision[] {
  const others = existing.filter((r) => r.dev !== ourDev)
  const connected = (r: OsRoute) => r.scope === 'link' || r.protocol === 'kernel'
  return wanted.map((cidr) => {
    if (cidr.len === 0)
      return {
        cidr,
        install: true,
        warning: "default route: installed with policy routing so the tunnel's own UDP keeps the original path",
      }
    for (const r of others) {
      const c = parseCidr(r.dst)
      if (typeof c === 'string' || c.len === 0) continue
      let reason: string | undefined
      if (connected(r) && cidr.len >= c.len && cidrContains(c, cidr.addr))
        reason = `overlaps this machine's directly connected subnet ${r.dst} on ${r.dev}`
      else if (c.text === cidr.text)
        reason = `conflicts with the existing route "${r.dst}${r.dev ? ` dev ${r.dev}` : ''}${r.gateway ? ` via ${r.gateway}` : ''}"`
      if (reason)
        return force
          ? { cidr, install: true, warning: `${reason}; installed anyway (ForceRoutes)` }
          : { cidr, install: false, reason: `${reason}; set "ExitNode": {"ForceRoutes": true} to override` }
    }
    const shadowed = others.filter((r) => {
      const c = parseCidr(r.dst)
      return connected(r) && typeof c !== 'string' && c.len > cidr.len && cidrsOverlap(c, cidr)
    })
    return {
      cidr,
      install: true,
      warning: shadowed.length ? `the local subnet(s) ${shadowed.map((r) => r.dst).join(', ')} inside it stay local` : undefined,
    }
  })
}
