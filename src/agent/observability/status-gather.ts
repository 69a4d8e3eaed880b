/** Collects the facts for the status builder from the running parts (read-only). */
import { ctCountByPeer } from '../../dataplane/conntrack.js'
import { C_FROM_LAN_BYTES, C_RX_BYTES, C_RX_PKTS, C_TO_LAN_BYTES, C_TX_BYTES, C_TX_PKTS } from '../../ipc/layout.js'
import { REJECT_AFTER_TIME_MS } from '../../protocol/constants.js'
import { VERSION } from '../../version.js'
import { type PeerMemory, endpointText } from '../peers/peer-memory.js'
import { type PeerTable, peerState } from '../peers/peer-table.js'
import type { Profile } from '../../config/profile.js'
import type { OsRouteInstaller } from '../../ops/route-installer.js'
import type { Sessions } from '../peers/sessions.js'
import { type PeerFacts, buildStatus } from './status-builder.js'
import type { StatusModel } from '../../views/status-model.js'
import type { CompiledPolicies } from '../../compile/policy.js'
import type { PolicyCounts } from '../network/policy-state.js'
import { policySection } from '../../views/status-policy.js'

export interface StatusSources {
  profile: Profile
  peers: PeerTable
  memory: PeerMemory
  sessions: Sessions
  routes: OsRouteInstaller
  active: ReadonlyMap<string, number>
  conntrack: SharedArrayBuffer
  epochMs: number
  interface: string
  port: number
  verbosity: number
  exitWarnings: string[]
  policy: CompiledPolicies
  policyCounts: PolicyCounts
}

export function gatherStatus(s: StatusSources, now = Date.now()): StatusModel {
  const m = s.memory
  const peers: PeerFacts[] = s.peers.list().map((peer) => {
    const t = m.times(peer.slot)
    return {
      slot: peer.slot,
      identity: peer.cfg.identity,
      description: peer.cfg.description,
      publicKey: peer.cfg.publicKeyBase64,
      virtualAddress: peer.cfg.virtualAddress,
      availableRoutes: peer.cfg.availableRoutes.map((c) => c.text),
      state: peerState(peer, now, REJECT_AFTER_TIME_MS),
      endpoint: endpointText(s.sessions.endpointOf(peer)),
      lastHandshakeMs: peer.session.lastHandshakeMs,
      lastActivityMs: Math.max(t.lastRxAny, t.lastTxAny),
      lastRxMs: t.lastRxAny,
      lastTxDataMs: t.lastTxData,
      rxBytes: m.counter(peer.slot, C_RX_BYTES),
      txBytes: m.counter(peer.slot, C_TX_BYTES),
      rxPackets: m.counter(peer.slot, C_RX_PKTS),
      txPackets: m.counter(peer.slot, C_TX_PKTS),
      bytesToLan: m.counter(peer.slot, C_TO_LAN_BYTES),
      bytesFromLan: m.counter(peer.slot, C_FROM_LAN_BYTES),
      tags: peer.cfg.tags,
    }
  })
  return buildStatus({
    now,
    pid: process.pid,
    releaseVersion: VERSION,
    profile: s.profile,
    interface: s.interface,
    port: s.port,
    verbosity: s.verbosity,
    counters: m.reasons(),
    exitWarnings: s.exitWarnings,
    flows: ctCountByPeer(new Int32Array(s.conntrack), Math.floor((now - s.epochMs) / 1000)),
    peers,
    active: s.active,
    routeInstalled: (r) => s.routes.isInstalled(r),
    routeRefusal: (r) => s.routes.decision(r)?.reason,
    policy: policySection(s.profile.tags, s.policy, s.policyCounts),
  })
}
