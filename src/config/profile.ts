/**
 * Loading, validating and writing the profile (Universe.profile).
 *
 * A profile is accepted whole or not at all: every problem is collected with its JSON path, and
 * nothing is applied or rewritten while any remains. Writes are atomic (temp file in the same
 * directory, fsync, rename, fsync of the directory) with mode 0600: the file holds a private key.
 */
import { parseLogLevel } from '../common/log-levels.js'
import fs from 'node:fs'
import path from 'node:path'
import { ProfileError, type ProfileProblem } from '../errors.js'
import { decodeKey, publicKeyFromPrivate } from './keys.js'
import { identityFromPublicKey, normaliseIdentity, virtualAddressFromPublicKey } from './identity.js'
import { type Cidr, cidrsOverlap, intToIp, parseCidr, parseIpv4 } from '../common/ipv4.js'
import { locateJsonError } from './json-position.js'
import { writeFileAtomic } from '../common/atomic-file.js'
import {
  DEFAULT_INTERFACE,
  DEFAULT_LOCAL_PORT,
  DEFAULT_MTU,
  endpointProblem,
  errorMap,
  formatPath,
  profileSchema,
  type RawProfile,
} from './schema.js'
import { checkKeys } from './known-keys.js'
import { type PolicyConfig, checkPolicies, policiesSchema } from './policies.js'

export interface Endpoint {
  host: string
  port: number
}

export interface PeerConfig {
  index: number
  publicKey: Buffer
  publicKeyBase64: string
  identity: string
  virtualAddress: number
  endpoint?: Endpoint
  persistentKeepalive: number
  presharedKey?: Buffer
  description?: string
  tags: string[]
  /** Routes this peer provides to us as an exit node (from our AvailableRoutes), in profile order. */
  availableRoutes: Cidr[]
  /** Where the peer comes from: the local profile (default) or the hub's map. */
  source?: 'local' | 'hub'
}

export interface HubSettings {
  urls: string[]
  publicKey: Buffer
  allowGateway: boolean
  acceptDefaultRoute: boolean
  advertiseEndpoints: string[]
}

export interface Profile {
  file: string
  raw: Record<string, unknown>
  privateKey: Buffer
  publicKey: Buffer
  identity: string
  virtualAddress: number
  localPort: number
  interface: string
  mtu: number
  tags: string[]
  peers: PeerConfig[]
  exitNode: {
    providesRoutes: Cidr[]
    /** Exit-node identity -> routes, in profile order (the order is the failover preference). */
    availableRoutes: Map<string, Cidr[]>
    manageNat: boolean
    snatAddress?: number
    forceRoutes: boolean
    /** IPv6 may use the local network while 0.0.0.0/0 goes through an exit node (ExitNode.AllowIpv6). */
    allowIpv6: boolean
  }
  logLevel?: number
  controlGroup?: string
  workers?: number
  /** Opt-in Prometheus endpoint (MetricsListen), "address:port". */
  metricsListen?: string
  /** JSON paths of keys this version does not know: kept on rewrite, listed as warnings. */
  unknownKeys: string[]
  /** undefined: no Policies key, compatibility mode (every configured peer allowed). */
  policies?: PolicyConfig[]
  /** The hub this system is enrolled with. */
  hub?: HubSettings
}

export const PROFILE_NAME = 'Universe'

export function configDir(flag?: string): string {
  return flag || process.env.ENCLAVE_CONFIG_DIR || '/etc/enclave'
}

export function runDir(): string {
  return process.env.ENCLAVE_RUN_DIR || '/run/enclave'
}

/** Where state that survives a reboot lives (the hub's cached map). */
export function stateDir(): string {
  return process.env.ENCLAVE_STATE_DIR || '/var/lib/enclave'
}

export function profilePath(dir: string): string {
  return path.join(dir, 'profiles', `${PROFILE_NAME}.profile`)
}

export function parseProfileText(file: string, text: string): Profile {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    const p = locateJsonError(text)
    throw new ProfileError(file, [{ path: '', reason: `not valid JSON at line ${p.line}, column ${p.column}: ${p.reason}` }])
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ProfileError(file, [{ path: '', reason: 'the profile must be a JSON object ({ ... })' }])
  }
  return validateProfile(file, json as Record<string, unknown>)
}

export function loadProfile(file: string): Profile {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    if (err.code === 'ENOENT') throw new ProfileError(file, [{ path: '', reason: 'no profile here; create one with `enclave init`' }])
    if (err.code === 'EACCES')
      throw new ProfileError(file, [{ path: '', reason: 'permission denied reading the profile (it holds a private key: run as root)' }], 4)
    throw new ProfileError(file, [{ path: '', reason: err.message }])
  }
  return parseProfileText(file, text)
}

export function validateProfile(file: string, raw: Record<string, unknown>): Profile {
  // Every check runs in one round: key spelling, each field's shape, and the rules across fields
  // (the latter skip values whose shape is wrong), so one edit can fix every reported problem.
  const keys = checkKeys(raw)
  const problems: ProfileProblem[] = [...keys.problems]
  const parsed = profileSchema.safeParse(raw, { errorMap })
  if (!parsed.success) problems.push(...parsed.error.issues.map((i) => ({ path: formatPath(i.path), reason: i.message })))
  // Past this point `r` may hold values of the wrong shape when parsing failed: read it defensively.
  const r = (parsed.success ? parsed.data : raw) as RawProfile
  const privateKey = decodeKey(r.PrivateKey)
  const own = typeof privateKey === 'string' ? undefined : publicKeyFromPrivate(privateKey)
  const identity = own ? identityFromPublicKey(own) : ''
  const ownVa = typeof r.VirtualAddress === 'string' ? parseIpv4(r.VirtualAddress) : undefined
  const virtualAddress = typeof ownVa === 'number' ? ownVa : own ? virtualAddressFromPublicKey(own) : 0

  const seenIds = new Map<string, string>(own ? [[identity, 'this system']] : [])
  const seenAddrs = new Map<number, string>(own ? [[virtualAddress, 'this system']] : [])
  const peers: PeerConfig[] = []
  /** Identities named by peers whose PublicKey is invalid: AvailableRoutes may still name them. */
  const unresolved = new Set<string>()
  const rawPeers = Array.isArray(r.Peers) ? r.Peers : []
  rawPeers.forEach((p, index) => {
    if (typeof p !== 'object' || p === null) return
    const where = `Peers[${index}]`
    const pk = decodeKey(p.PublicKey)
    if (typeof pk === 'string') {
      if (typeof p.Identity === 'string') unresolved.add(normaliseIdentity(p.Identity))
      else unresolved.add('*')
      return
    }
    if (own && pk.equals(own)) {
      problems.push({ path: `${where}.PublicKey`, reason: "is this system's own public key; a system is not its own peer" })
      return
    }
    const derived = identityFromPublicKey(pk)
    if (typeof p.Identity === 'string' && normaliseIdentity(p.Identity) !== derived) {
      problems.push({
        path: `${where}.Identity`,
        reason: `peer "${p.Description ?? p.Identity}" gives identity ${p.Identity}, but its PublicKey derives identity ${derived}`,
      })
    }
    const given = typeof p.VirtualAddress === 'string' ? parseIpv4(p.VirtualAddress) : undefined
    const va = typeof given === 'number' ? given : virtualAddressFromPublicKey(pk)
    const idOwner = seenIds.get(derived)
    if (idOwner) problems.push({ path: `${where}.PublicKey`, reason: `identity ${derived} is already used by ${idOwner}` })
    else seenIds.set(derived, where)
    const vaOwner = seenAddrs.get(va)
    if (vaOwner)
      problems.push({
        path: p.VirtualAddress ? `${where}.VirtualAddress` : `${where}.PublicKey`,
        reason: `virtual address ${intToIp(va)} is already used by ${vaOwner}`,
      })
    else seenAddrs.set(va, where)
    let endpoint: Endpoint | undefined
    if (typeof p.Endpoint === 'string' && !endpointProblem(p.Endpoint)) {
      const i = p.Endpoint.lastIndexOf(':')
      endpoint = { host: p.Endpoint.slice(0, i), port: Number(p.Endpoint.slice(i + 1)) }
    }
    const psk = p.PresharedKey ? decodeKey(p.PresharedKey) : undefined
    peers.push({
      index,
      publicKey: pk,
      publicKeyBase64: pk.toString('base64'),
      identity: derived,
      virtualAddress: va,
      endpoint,
      persistentKeepalive: typeof p.PersistentKeepalive === 'number' ? p.PersistentKeepalive : 0,
      presharedKey: psk instanceof Buffer ? psk : undefined,
      description: p.Description,
      tags: Array.isArray(p.Tags) ? p.Tags : [],
      availableRoutes: [],
    })
  })

  const en = (typeof r.ExitNode === 'object' && r.ExitNode !== null ? r.ExitNode : {}) as NonNullable<RawProfile['ExitNode']>
  const cidrsOf = (list: unknown): Array<Cidr | undefined> =>
    Array.isArray(list)
      ? list.map((c) => (typeof c === 'string' ? parseCidr(c) : undefined)).map((c) => (typeof c === 'object' ? c : undefined))
      : []
  const provided = cidrsOf(en.ProvidesRoutes)
  provided.forEach((c, i) => {
    const dup = provided.findIndex((d) => d && c && d.text === c.text)
    if (c && dup < i) problems.push({ path: `ExitNode.ProvidesRoutes[${i}]`, reason: `${c.text} is listed twice (also at [${dup}])` })
  })
  const availableRoutes = new Map<string, Cidr[]>()
  const av = typeof en.AvailableRoutes === 'object' && en.AvailableRoutes !== null ? en.AvailableRoutes : {}
  for (const [rawId, list] of Object.entries(av)) {
    const id = normaliseIdentity(rawId)
    const where = `ExitNode.AvailableRoutes.${rawId}`
    const peer = peers.find((p) => p.identity === id)
    if (!peer) {
      if (unresolved.has(id) || unresolved.has('*')) continue
      const known = [...new Set(peers.map((p) => p.identity))].join(', ') || 'none'
      problems.push({
        path: where,
        reason:
          own && id === identity
            ? "is this system itself; list the exit node's identity"
            : `${rawId} is not a known peer (known peers: ${known}); add it with \`enclave add <public key>\` first`,
      })
      continue
    }
    const cidrs = cidrsOf(list)
    cidrs.forEach((c, i) => {
      if (!c) return
      const dup = cidrs.findIndex((d) => d && d.text === c.text)
      if (dup < i) problems.push({ path: `${where}[${i}]`, reason: `${c.text} is listed twice (also at [${dup}])` })
      if (cidrsOverlap(c, { addr: 0x64400000, len: 10, text: '100.64.0.0/10' }) && c.len >= 10) {
        problems.push({
          path: `${where}[${i}]`,
          reason: `${c.text} lies inside the overlay network 100.64.0.0/10; peers are reached by their virtual addresses`,
        })
      }
    })
    peer.availableRoutes = cidrs.filter((c): c is Cidr => !!c)
    availableRoutes.set(id, peer.availableRoutes)
  }
  const providesRoutes = provided.filter((c): c is Cidr => !!c)
  // Policies are cross-checked once their own shape is valid (zod reports shape problems above), even when
  // another part of the profile is wrong: every problem in one round.
  const polShape = policiesSchema.safeParse(raw.Policies)
  const selfTags = Array.isArray(raw.Tags) ? raw.Tags.filter((x): x is string => typeof x === 'string') : []
  const policies =
    raw.Policies !== undefined && polShape.success ? checkPolicies(polShape.data, selfTags, providesRoutes, problems) : undefined
  if (problems.length || !own) throw new ProfileError(file, dedupe(problems))

  return {
    file,
    raw,
    privateKey: privateKey as Buffer,
    publicKey: own,
    identity,
    virtualAddress,
    localPort: r.LocalPort ?? DEFAULT_LOCAL_PORT,
    interface: r.Interface ?? DEFAULT_INTERFACE,
    mtu: r.Mtu ?? DEFAULT_MTU,
    tags: r.Tags ?? [],
    peers,
    exitNode: {
      providesRoutes: provided.filter((c): c is Cidr => !!c),
      availableRoutes,
      manageNat: en.ManageNat ?? false,
      snatAddress: en.SnatAddress ? (parseIpv4(en.SnatAddress) as number) : undefined,
      forceRoutes: en.ForceRoutes ?? false,
      allowIpv6: en.AllowIpv6 ?? false,
    },
    logLevel: r.LogLevel === undefined ? undefined : parseLogLevel(r.LogLevel),
    controlGroup: r.ControlGroup,
    workers: r.Workers,
    metricsListen: r.MetricsListen,
    unknownKeys: keys.unknown,
    policies,
    hub: r.Hub
      ? {
          urls: r.Hub.Urls,
          publicKey: decodeKey(r.Hub.PublicKey) as Buffer,
          allowGateway: r.Hub.AllowGateway ?? false,
          acceptDefaultRoute: r.Hub.AcceptDefaultRoute ?? false,
          advertiseEndpoints: r.Hub.AdvertiseEndpoints ?? [],
        }
      : undefined,
  }
}

function dedupe(ps: ProfileProblem[]): ProfileProblem[] {
  const seen = new Set<string>()
  return ps.filter((p) => {
    const k = p.path + '\0' + p.reason
    if (seen.has(k)) return false
    seen.add(k)
    return true
  })
}

/**
 * Atomically replaces `file` with `raw` as pretty JSON, mode 0600.
 * The raw object is validated first; a profile that would not load is never written.
 */
export function writeProfile(file: string, raw: Record<string, unknown>): Profile {
  const profile = validateProfile(file, raw)
  writeFileAtomic(file, JSON.stringify(raw, null, 2) + '\n')
  return profile
}
