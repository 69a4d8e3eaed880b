/**
 * The effective profile of an enrolled system: the local profile plus the hub's layer.
 *
 * The hub may set peers (key, identity, address, tags, description, endpoint), this system's tags and
 * virtual address, policies and exit-node routes; never a host setting (keys, port, interface, MTU,
 * ControlGroup, metrics, NAT): its map has no field for them (src/hubproto/map.ts is strict) and the
 * merge writes only the keys below. Two things need local consent given at enrolment:
 * - routes this system provides as an exit node (ProvidesRoutes, and the hub's gateway policies that
 *   grant them): only with Hub.AllowGateway;
 * - 0.0.0.0/0 through an exit node: only with Hub.AcceptDefaultRoute.
 * Otherwise they are listed as offered by the hub, not accepted locally.
 *
 * The merged JSON goes through the same validation as a hand-written profile: a map that does not
 * validate is refused whole and the previous one stays; a hub peer's endpoint that no agent can use is
 * dropped alone (see skippedHub). Hand-configured peers keep working beside hub peers, and win a clash; when the local profile has no Policies of its own, its peers keep their meaning (allowed) by a
 * policy from the reserved tag "@local" to "@self" (outside the tag alphabet, so it cannot clash).
 */
import { ProfileError } from '../errors.js'
import { type Cidr, cidrsOverlap, parseCidr } from '../common/ipv4.js'
import type { HubMap } from '../hubproto/map.js'
import { type Profile, validateProfile } from './profile.js'
import { endpointProblem } from './schema.js'

export interface HubLayerResult {
  profile: Profile
  /** What the hub offered that local consent does not accept, in words for status. */
  notAccepted: string[]
  /** Local peers skipped because the hub gave this system their address. */
  skippedLocal: string[]
  /**
   * Hub peers skipped (or taken without their endpoint), in words: a hub peer with a hand-configured
   * peer's address or identity is skipped (the hand-configured one wins: a system enrolled at the hub
   * cannot take the place of a peer this profile names), and an endpoint no agent can use is dropped
   * (the rest of the map still applies).
   */
  skippedHub: string[]
}

type Raw = Record<string, unknown>

const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : [])

const PRIVATE = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'].map((c) => parseCidr(c) as Cidr)

/**
 * Whether a route lies inside private address space (RFC 1918). Anything else, 0.0.0.0/0 or two /1s or
 * one public /32, would send this system's internet traffic through the hub's choice of exit node.
 */
export function isPrivateRoute(text: string): boolean {
  const c = parseCidr(text)
  if (typeof c === 'string') return false
  return PRIVATE.some((p) => c.len >= p.len && cidrsOverlap(p, c))
}

export function mergeHubLayer(local: Profile, map: HubMap): HubLayerResult {
  const consent = local.hub ?? { allowGateway: false, acceptDefaultRoute: false }
  const raw: Raw = structuredClone(local.raw)
  const notAccepted: string[] = []
  const skippedLocal: string[] = []
  const skippedHub: string[] = []
  const self = map.Self
  raw.VirtualAddress = self.VirtualAddress
  raw.Tags = [...new Set([...((local.raw.Tags as string[] | undefined) ?? []), ...self.Tags])]

  // Peers: hub peers beside local ones; a key in both keeps its local entry, with the hub's address and tags.
  const localPeers = ((local.raw.Peers as Raw[] | undefined) ?? []).map((p) => ({ ...p }))
  const hubKeys = new Set(map.Peers.map((p) => p.PublicKey))
  // What the hand-configured peers (not known to the hub) hold: a hub peer may not take it.
  const localAddrs = new Map<string, string>()
  const localIds = new Set<string>()
  const peers: Raw[] = []
  for (const lp of localPeers) {
    const hp = map.Peers.find((p) => p.PublicKey === lp.PublicKey)
    if (hp) {
      peers.push({ ...lp, VirtualAddress: hp.VirtualAddress, Tags: [...new Set([...((lp.Tags as string[]) ?? []), ...hp.Tags])] })
      continue
    }
    const cfg = local.peers.find((c) => c.publicKeyBase64 === lp.PublicKey)
    const va = cfg
      ? `${cfg.virtualAddress >>> 24}.${(cfg.virtualAddress >>> 16) & 255}.${(cfg.virtualAddress >>> 8) & 255}.${cfg.virtualAddress & 255}`
      : ''
    if (va === self.VirtualAddress) {
      skippedLocal.push(`${cfg?.identity ?? lp.PublicKey}: the hub gave this system its address ${va}`)
      continue
    }
    const name = cfg?.identity ?? String(lp.PublicKey)
    localAddrs.set(va, name)
    if (cfg?.identity) localIds.add(cfg.identity)
    peers.push(lp)
  }
  for (const hp of map.Peers) {
    if (localPeers.some((lp) => lp.PublicKey === hp.PublicKey)) continue
    const clash = localAddrs.get(hp.VirtualAddress) ?? (localIds.has(hp.Identity) ? hp.Identity : undefined)
    if (clash) {
      skippedHub.push(`${hp.Identity} (${hp.VirtualAddress}): its address or identity is the hand-configured peer ${clash}'s`)
      continue
    }
    const bad = hp.Endpoint ? endpointProblem(hp.Endpoint) : undefined
    if (bad) skippedHub.push(`${hp.Identity}: endpoint dropped (${bad}); it is reached when it connects`)
    peers.push({
      PublicKey: hp.PublicKey,
      Identity: hp.Identity,
      VirtualAddress: hp.VirtualAddress,
      Tags: hp.Tags,
      ...(hp.Description ? { Description: hp.Description } : {}),
      ...(hp.Endpoint && !bad ? { Endpoint: hp.Endpoint } : {}),
    })
  }
  raw.Peers = peers

  const exitNode: Raw = { ...((local.raw.ExitNode as Raw | undefined) ?? {}) }
  // Routes this system provides, and the gateway policies granting them, only with local consent.
  // A policy is a gateway grant when it names either key (GatewayRoutes or GatewayAllowedIpRanges).
  const hubPolicies = map.Policies.filter((p) => {
    const ranges = [...asArray(p.GatewayRoutes), ...asArray(p.GatewayAllowedIpRanges)].map((r) =>
      typeof r === 'string' ? r : String((r as { IpRange?: unknown })?.IpRange ?? '?'),
    )
    if (p.GatewayRoutes === undefined && p.GatewayAllowedIpRanges === undefined) return true
    if (consent.allowGateway) return true
    notAccepted.push(
      `gateway for ${ranges.join(', ') || '(no ranges)'} (policy "${p.Description ?? ''}"): enrol with --allow-gateway to accept`,
    )
    return false
  })
  if (self.ProvidesRoutes.length) {
    if (consent.allowGateway)
      exitNode.ProvidesRoutes = [...new Set([...((exitNode.ProvidesRoutes as string[]) ?? []), ...self.ProvidesRoutes])]
    else if (!notAccepted.length) notAccepted.push(`exit node for ${self.ProvidesRoutes.join(', ')}: enrol with --allow-gateway to accept`)
  }
  const available: Record<string, string[]> = { ...((exitNode.AvailableRoutes as Record<string, string[]>) ?? {}) }
  // Routes through hand-configured exit nodes: a hub route inside (or equal to) one would take its traffic
  // (longest match) or its failover. The hand-configured peer wins.
  const hubIds = new Set(map.Peers.map((p) => p.Identity))
  const localRoutes = Object.entries(available)
    .filter(([id]) => !hubIds.has(id))
    .flatMap(([id, rs]) => rs.map((r) => ({ id, c: parseCidr(r) })))
    .filter((x): x is { id: string; c: Cidr } => typeof x.c !== 'string')
  for (const [id, routes] of Object.entries(map.AvailableRoutes)) {
    const ok = routes.filter((r) => {
      const c = parseCidr(r)
      const under = typeof c === 'string' ? undefined : localRoutes.find((l) => c.len >= l.c.len && cidrsOverlap(l.c, c))
      if (under) {
        skippedHub.push(`${r} through ${id}: inside ${under.c.text}, which goes through the hand-configured ${under.id}`)
        return false
      }
      if (consent.acceptDefaultRoute || isPrivateRoute(r)) return true
      notAccepted.push(
        `${r} through ${id}: public address space (the default route or part of it); enrol with --accept-default-route to accept`,
      )
      return false
    })
    if (!ok.length) continue
    available[id] = [...new Set([...(available[id] ?? []), ...ok])]
  }
  if (Object.keys(available).length) exitNode.AvailableRoutes = available
  if (Object.keys(exitNode).length) raw.ExitNode = exitNode

  const localPolicies = local.raw.Policies as Raw[] | undefined
  raw.Policies = [...hubPolicies, ...(localPolicies ?? [])]

  let profile: Profile
  try {
    profile = validateProfile(local.file, raw)
  } catch (e) {
    if (e instanceof ProfileError)
      throw new ProfileError(
        `${local.file} with the hub's map`,
        e.problems.map((p) => ({ ...p, reason: `${p.reason} (in the hub's layer; the previous map stays in force)` })),
      )
    throw e
  }
  // The file on disk is the local profile: rewrites (enclave add, peer set) must not save the hub's layer.
  profile.raw = local.raw
  for (const p of profile.peers)
    p.source = hubKeys.has(p.publicKeyBase64) && !local.peers.some((l) => l.publicKeyBase64 === p.publicKeyBase64) ? 'hub' : 'local'
  if (localPolicies === undefined && profile.peers.some((p) => p.source === 'local')) {
    for (const p of profile.peers) if (p.source === 'local') p.tags = [...p.tags, '@local']
    profile.tags = [...profile.tags, '@self']
    profile.policies = [
      ...(profile.policies ?? []),
      {
        index: profile.policies?.length ?? 0,
        description: 'hand-configured peers (local profile without Policies)',
        enabled: true,
        senderTags: ['@local'],
        receiverTags: ['@self'],
        acls: [{ protocol: 'Any', portLo: 0, portHi: 65535 }],
        appliesHere: true,
      },
    ]
  }
  return { profile, notAccepted, skippedLocal, skippedHub }
}
