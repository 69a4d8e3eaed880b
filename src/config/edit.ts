/**
 * Editing the profile for the CLI: add and remove peers, provide routes (exit node) and use them
 * (client). Every edit checks its inputs first and names the flag or argument that is wrong (exit 2),
 * then rewrites the file through writeProfile: validated whole, atomic, unknown keys kept.
 * applyToAgent() (src/api/apply.ts) then asks a running agent to reload, so an edit takes effect at once.
 */
import { EnclaveError } from '../errors.js'
import { decodeKey } from './keys.js'
import { identityFromPublicKey, inOverlay, normaliseIdentity } from './identity.js'
import { type Cidr, intToIp, parseCidr, parseIpv4 } from '../common/ipv4.js'
import { loadProfile, type PeerConfig, type Profile, writeProfile } from './profile.js'
import { endpointProblem, publicKeyProblem } from './schema.js'

/** A wrong flag or argument: one line naming it, exit code 2. */
export function usageError(what: string, reason: string): EnclaveError {
  return new EnclaveError('EUSAGE', `${what}: ${reason}`, 2)
}

export interface AddPeerInput {
  publicKey: string
  endpoint?: string
  description?: string
  keepalive?: number
  virtualAddress?: string
  tags?: string[]
}

export function addPeer(file: string, input: AddPeerInput): { profile: Profile; peer: PeerConfig } {
  const why = publicKeyProblem(input.publicKey)
  if (why) throw usageError('<public key>', why)
  const key = decodeKey(input.publicKey) as Buffer
  if (input.endpoint !== undefined) {
    const e = endpointProblem(input.endpoint)
    if (e) throw usageError('--endpoint', e)
  }
  if (input.virtualAddress !== undefined) {
    const a = parseIpv4(input.virtualAddress)
    if (typeof a === 'string') throw usageError('--virtual-address', a)
    if (!inOverlay(a)) throw usageError('--virtual-address', `"${input.virtualAddress}" is outside the overlay network 100.64.0.0/10`)
  }
  const profile = loadProfile(file)
  if (key.equals(profile.publicKey))
    throw usageError('<public key>', "is this system's own public key; add the other machine's key (run `enclave pubkey` there)")
  const identity = identityFromPublicKey(key)
  if (profile.peers.some((p) => p.identity === identity))
    throw new EnclaveError(
      'EEXIST',
      `peer ${identity} is already in ${file}; change its settings with \`enclave peer set ${identity} --endpoint … --tag … --keepalive … --description …\``,
    )
  const raw = structuredClone(profile.raw)
  const peers = Array.isArray(raw.Peers) ? (raw.Peers as unknown[]) : []
  const entry: Record<string, unknown> = { PublicKey: key.toString('base64'), Identity: identity }
  if (input.description) entry.Description = input.description
  if (input.endpoint) entry.Endpoint = input.endpoint
  if (input.keepalive !== undefined) entry.PersistentKeepalive = input.keepalive
  if (input.virtualAddress) entry.VirtualAddress = input.virtualAddress
  if (input.tags?.length) entry.Tags = [...new Set(input.tags)]
  peers.push(entry)
  raw.Peers = peers
  const next = writeProfile(file, raw)
  return { profile: next, peer: next.peers.find((p) => p.identity === identity) as PeerConfig }
}

/** The peers of a profile as a short list for messages: "29XM4 (office), 8VS5P". */
export function peerList(profile: Profile): string {
  return profile.peers.map((p) => (p.description ? `${p.identity} (${p.description})` : p.identity)).join(', ') || 'none'
}

/**
 * Finds a peer by identity (any case, Crockford-normalised), virtual address, public key or description
 * (a description must name exactly one peer).
 */
export function findPeer(profile: Profile, who: string): PeerConfig {
  const id = normaliseIdentity(who)
  const peer = profile.peers.find((p) => p.identity === id || intToIp(p.virtualAddress) === who || p.publicKeyBase64 === who)
  if (peer) return peer
  const described = profile.peers.filter((p) => p.description === who)
  if (described.length === 1) return described[0]
  if (described.length > 1)
    throw new EnclaveError(
      'EAMBIGUOUS',
      `"${who}" describes ${described.length} peers (${described.map((p) => p.identity).join(', ')}); name one by its identity`,
    )
  throw new EnclaveError('ENOENT', `no peer ${who} in ${profile.file} (peers: ${peerList(profile)})`)
}

export interface PeerSettings {
  /** host:port, or null to remove the Endpoint (the peer then has to connect first). */
  endpoint?: string | null
  /** The peer's Tags, replacing the ones it has ([] removes them). */
  tags?: string[]
  keepalive?: number
  /** A note, or null to remove it. */
  description?: string | null
}

/** `enclave peer set`: changes a peer's Endpoint, Tags, PersistentKeepalive or Description in place. */
export function setPeer(file: string, who: string, s: PeerSettings): { identity: string; changed: string[] } {
  if (typeof s.endpoint === 'string') {
    const e = endpointProblem(s.endpoint)
    if (e) throw usageError('--endpoint', e)
  }
  const profile = loadProfile(file)
  const peer = findPeer(profile, who)
  const raw = structuredClone(profile.raw)
  const entry = (raw.Peers as Record<string, unknown>[])[peer.index]
  const changed: string[] = []
  const put = (key: string, value: unknown) => {
    const before = JSON.stringify(entry[key])
    if (value === null || (Array.isArray(value) && value.length === 0)) delete entry[key]
    else entry[key] = value
    if (JSON.stringify(entry[key]) !== before) changed.push(key)
  }
  if (s.endpoint !== undefined) put('Endpoint', s.endpoint)
  if (s.tags !== undefined) put('Tags', [...new Set(s.tags)])
  if (s.keepalive !== undefined) put('PersistentKeepalive', s.keepalive)
  if (s.description !== undefined) put('Description', s.description)
  if (changed.length) writeProfile(file, raw)
  return { identity: peer.identity, changed }
}

/**
 * With Policies, a peer that carries no tag any policy names can neither start traffic here nor be
 * reached through a policy: every packet of a flow it starts is dropped. These are such peers.
 */
export function peersNoPolicyNames(profile: Profile): PeerConfig[] {
  if (profile.policies === undefined) return []
  const named = new Set(profile.policies.flatMap((p) => [...p.senderTags, ...p.receiverTags]))
  return profile.peers.filter((p) => !p.tags.some((t) => named.has(t)))
}

export function removePeer(file: string, who: string): { identity: string; removedRoutes: boolean } {
  const profile = loadProfile(file)
  const peer = findPeer(profile, who)
  const raw = structuredClone(profile.raw)
  ;(raw.Peers as unknown[]).splice(peer.index, 1)
  const en = raw.ExitNode as { AvailableRoutes?: Record<string, unknown> } | undefined
  let removedRoutes = false
  if (en?.AvailableRoutes) {
    for (const k of Object.keys(en.AvailableRoutes)) {
      if (normaliseIdentity(k) === peer.identity) {
        delete en.AvailableRoutes[k]
        removedRoutes = true
      }
    }
  }
  writeProfile(file, raw)
  return { identity: peer.identity, removedRoutes }
}

function routeArg(cidr: string): Cidr {
  const c = parseCidr(cidr)
  if (typeof c === 'string') throw usageError('<cidr>', c)
  return c
}

function exitNodeOf(raw: Record<string, unknown>): Record<string, unknown> {
  if (typeof raw.ExitNode !== 'object' || raw.ExitNode === null || Array.isArray(raw.ExitNode)) raw.ExitNode = {}
  return raw.ExitNode as Record<string, unknown>
}

/** Adds (or removes) a route this exit node provides: ExitNode.ProvidesRoutes. `changed` is false when nothing was to do. */
export function setProvidedRoute(file: string, cidr: string, provide: boolean): { route: string; changed: boolean; routes: string[] } {
  const c = routeArg(cidr)
  const profile = loadProfile(file)
  const raw = structuredClone(profile.raw)
  const en = exitNodeOf(raw)
  const list = Array.isArray(en.ProvidesRoutes) ? (en.ProvidesRoutes as string[]) : []
  const has = list.some((x) => parseCidr(x) && (parseCidr(x) as Cidr).text === c.text)
  if (has === provide) return { route: c.text, changed: false, routes: list }
  en.ProvidesRoutes = provide ? [...list, c.text] : list.filter((x) => (parseCidr(x) as Cidr).text !== c.text)
  writeProfile(file, raw)
  return { route: c.text, changed: true, routes: en.ProvidesRoutes as string[] }
}

/** Adds (or removes) a route that exit node `who` carries for us: ExitNode.AvailableRoutes.<identity>. */
export function setAvailableRoute(
  file: string,
  who: string,
  cidr: string,
  add: boolean,
): { identity: string; route: string; changed: boolean; routes: string[] } {
  const c = routeArg(cidr)
  const profile = loadProfile(file)
  const peer = findPeer(profile, who)
  const raw = structuredClone(profile.raw)
  const en = exitNodeOf(raw)
  if (typeof en.AvailableRoutes !== 'object' || en.AvailableRoutes === null || Array.isArray(en.AvailableRoutes)) en.AvailableRoutes = {}
  const av = en.AvailableRoutes as Record<string, unknown>
  const key = Object.keys(av).find((k) => normaliseIdentity(k) === peer.identity) ?? peer.identity
  const list = Array.isArray(av[key]) ? (av[key] as string[]) : []
  const has = list.some((x) => (parseCidr(x) as Cidr).text === c.text)
  if (has === add) return { identity: peer.identity, route: c.text, changed: false, routes: list }
  const next = add ? [...list, c.text] : list.filter((x) => (parseCidr(x) as Cidr).text !== c.text)
  if (next.length) av[key] = next
  else delete av[key]
  writeProfile(file, raw)
  return { identity: peer.identity, route: c.text, changed: true, routes: next }
}
