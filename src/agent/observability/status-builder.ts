/**
 * The status builder: a pure function from plain facts (profile, per-peer figures, route choice,
 * counters) to the versioned status model. The agent gathers the facts; nothing here reads shared
 * memory, the clock or the OS.
 */
import { intToIp } from '../../common/ipv4.js'
import type { Profile } from '../../config/profile.js'
import { type PeerStatus, type PolicySection, type RouteStatus, STATUS_VERSION, type StatusModel } from '../../views/status-model.js'

export interface PeerFacts {
  slot: number
  identity: string
  description?: string
  publicKey: string
  virtualAddress: number
  availableRoutes: string[]
  state: PeerStatus['state']
  endpoint?: string
  lastHandshakeMs?: number
  /** Latest of last receive and last send (0: never). */
  lastActivityMs: number
  /** Last authenticated packet from the peer, and last data we sent it (0: never). */
  lastRxMs?: number
  lastTxDataMs?: number
  rxBytes: number
  txBytes: number
  rxPackets: number
  txPackets: number
  bytesToLan: number
  bytesFromLan: number
  tags?: string[]
}

export interface StatusFacts {
  now: number
  pid: number
  releaseVersion: string
  profile: Profile
  interface: string
  port: number
  verbosity: number
  counters: Record<string, number>
  exitWarnings: string[]
  /** Live conntrack flows per peer slot. */
  flows: Map<number, number>
  peers: PeerFacts[]
  /** Route text -> slot of the peer carrying it. */
  active: ReadonlyMap<string, number>
  routeInstalled: (route: string) => boolean
  /** Why a route was not installed. */
  routeRefusal: (route: string) => string | undefined
  policy?: PolicySection
}

export function buildStatus(f: StatusFacts): StatusModel {
  const p = f.profile
  const ago = (t: number | undefined) => (t && t > 0 ? (f.now - t) / 1000 : null)
  const name = new Map(f.peers.map((x) => [x.slot, x.identity]))
  const routeStatus = (peer: PeerFacts, route: string): RouteStatus => {
    const installed = f.routeInstalled(route)
    const carrier = f.active.get(route)
    const active = carrier === peer.slot
    const reason = !installed
      ? f.routeRefusal(route)
      : !active
        ? `${(carrier !== undefined && name.get(carrier)) || 'another exit node'} is active`
        : undefined
    return { route, installed, active, reason }
  }
  let activeFlows = 0
  for (const n of f.flows.values()) activeFlows += n
  return {
    version: STATUS_VERSION,
    running: true,
    pid: f.pid,
    releaseVersion: f.releaseVersion,
    localIdentity: p.identity,
    publicKey: p.publicKey.toString('base64'),
    profileLocation: p.file,
    virtualAddress: intToIp(p.virtualAddress),
    interface: f.interface,
    bindingAddress: `0.0.0.0:${f.port}`,
    logLevel: f.verbosity,
    exitNode: {
      providesRoutes: p.exitNode.providesRoutes.map((c) => c.text),
      activeFlows,
      unsolicitedDrops: f.counters.unsolicited ?? 0,
      users: f.peers
        .filter((peer) => f.flows.has(peer.slot) || peer.bytesToLan > 0)
        .map((peer) => ({
          identity: peer.identity,
          flows: f.flows.get(peer.slot) ?? 0,
          bytesToLan: peer.bytesToLan,
          bytesFromLan: peer.bytesFromLan,
        })),
      warnings: f.exitWarnings,
    },
    counters: f.counters,
    policy: f.policy,
    peers: f.peers.map((peer) => ({
      identity: peer.identity,
      description: peer.description,
      publicKey: peer.publicKey,
      state: peer.state,
      endpoint: peer.endpoint,
      virtualAddress: intToIp(peer.virtualAddress),
      lastHandshakeSecondsAgo: ago(peer.lastHandshakeMs),
      lastActivitySecondsAgo: ago(peer.lastActivityMs),
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      rxPackets: peer.rxPackets,
      txPackets: peer.txPackets,
      exitNodeFor: peer.availableRoutes.map((r) => routeStatus(peer, r)),
      tags: peer.tags,
      ...noReply(peer, f.now),
    })),
  }
}

/** We send to an Up peer and it has sent nothing authenticated for this long: shown before the timers act. */
export const NO_REPLY_AFTER_MS = 15_000

/** `noReplySeconds` for an Up peer we have sent data to since it last answered, NO_REPLY_AFTER_MS ago or more. */
function noReply(peer: PeerFacts, now: number): { noReplySeconds?: number } {
  if (peer.state !== 'Up' || !peer.lastTxDataMs) return {}
  const rx = peer.lastRxMs ?? 0
  if (peer.lastTxDataMs <= rx || now - rx < NO_REPLY_AFTER_MS) return {}
  return { noReplySeconds: Math.floor((now - rx) / 1000) }
}
