/** The status of a profile with no running agent: configuration only. */
import type { Profile } from '../config/profile.js'
import { intToIp } from '../common/ipv4.js'
import { VERSION } from '../version.js'
import { STATUS_VERSION, type StatusModel } from './status-model.js'
import { compilePolicies } from '../compile/policy.js'
import { policySection } from './status-policy.js'

export function offlineStatus(p: Profile): StatusModel {
  return {
    version: STATUS_VERSION,
    running: false,
    releaseVersion: VERSION,
    localIdentity: p.identity,
    publicKey: p.publicKey.toString('base64'),
    profileLocation: p.file,
    virtualAddress: intToIp(p.virtualAddress),
    interface: p.interface,
    exitNode: {
      providesRoutes: p.exitNode.providesRoutes.map((c) => c.text),
      activeFlows: 0,
      unsolicitedDrops: 0,
      users: [],
      warnings: [],
    },
    policy: policySection(
      p.tags,
      compilePolicies({
        selfTags: p.tags,
        selfAddress: p.virtualAddress,
        providesRoutes: p.exitNode.providesRoutes,
        peers: p.peers.map((peer, slot) => ({ slot, tags: peer.tags })),
        policies: p.policies,
      }),
    ),
    peers: p.peers.map((peer) => ({
      identity: peer.identity,
      description: peer.description,
      publicKey: peer.publicKeyBase64,
      state: 'Configured' as const,
      endpoint: peer.endpoint ? `${peer.endpoint.host}:${peer.endpoint.port}` : undefined,
      virtualAddress: intToIp(peer.virtualAddress),
      lastHandshakeSecondsAgo: null,
      lastActivitySecondsAgo: null,
      rxBytes: 0,
      txBytes: 0,
      rxPackets: 0,
      txPackets: 0,
      exitNodeFor: peer.availableRoutes.map((c) => ({ route: c.text, installed: false, active: false })),
      tags: peer.tags,
    })),
  }
}
