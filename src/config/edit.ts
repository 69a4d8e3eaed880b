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
  if (profile.peers.some((p) => p.identity === identity)) throw new EnclaveError('EEXIST', `peer ${identity} is already in ${file}`)
  const raw = structuredClone(profile.raw)
  const peers = Array.isArray(raw.Peers) ? (raw.Peers as unknown[]) : []
  const entry: Record<string, unknown> = { PublicKey: key.toString('base64'), Identity: identity }
  if (input.description) entry.Description = input.description
  if (input.endpoint) entry.Endpoint = input.endpoint
  if (input.keepalive !== undefined) entry.PersistentKeepalive = input.keepalive
  if (input.virtualAddress) entry.VirtualAddress = input.virtualAddress
  peers.push(entry)
  raw.Peers = peers
  const next = writeProfile(file, raw)
  return { profile: next, peer: next.peers.find((p) => p.identity === identity) as PeerConfig }
}

/** Finds a peer by identity (any case, Crockford-normalised), virtual address or public key. */
export function findPeer(profile: Profile, who: string): PeerConfig {
  const id = normaliseIdentity(who)
  const peer = profile.peers.find((p) => p.identity === id || intToIp(p.virtualAddress) === who || p.publicKeyBase64 === who)
  if (!peer)
    throw new EnclaveError(
      'ENOENT',
      `no peer ${who} in ${profile.file} (peers: ${profile.peers.map((p) => p.identity).join(', ') || 'none'})`,
    )
  return peer
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
