/**
 * Loading, validating and writing the profile (Universe.profile).
 *
 * A profile is accepted whole or not at all: every problem is collected with its JSON path, and
 * nothing is applied or rewritten while any remains. Writes are atomic (temp file in the same
 * directory, fsync, rename, fsync of the directory) with mode 0600: the file holds a private key.
 */
import fs from 'node:fs'
import path from 'node:path'
import { ProfileError, type ProfileProblem } from '../../errors.js'
import { decodeKey, publicKeyFromPrivate } from '../keys.js'
import { identityFromPublicKey, normaliseIdentity, virtualAddressFromPublicKey } from '../identity.js'
import { type Cidr, cidrsOverlap, intToIp, parseCidr, parseIpv4 } from '../../common/ipv4.js'
import { locateJsonError } from './json-position.js'
import { type PolicyConfig, checkPolicies } from './policies.js'
import { DEFAULT_INTERFACE, DEFAULT_LOCAL_PORT, DEFAULT_MTU, errorMap, formatPath, profileSchema, type RawProfile } from './schema.js'

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
  }
  logLevel?: number
  controlGroup?: string
  workers?: number
  /** undefined: no Policies key, compatibility mode (every configured peer allowed). */
  policies?: PolicyConfig[]
}

export const PROFILE_NAME = 'Universe'

export function configDir(flag?: string): string {
  return flag || process.env.ENCLAVE_CONFIG_DIR || '/etc/enclave'
}

export function runDir(): string {
  return process.env.ENCLAVE_RUN_DIR || '/run/enclave'
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
      throw new ProfileError(file, [{ path: '', reason: 'permission denied reading the profile (it holds a private key: run as root)' }])
    throw new ProfileError(file, [{ path: '', reason: err.message }])
  }
  return parseProfileText(file, text)
}

export function validateProfile(file: string, raw: Record<string, unknown>): Profile {
  const parsed = profileSchema.safeParse(raw, { errorMap })
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => ({ path: formatPath(i.path), reason: i.message }))
    throw new ProfileError(file, dedupe(problems))
  }
  const r = parsed.data as RawProfile
  const problems: ProfileProblem[] = []
  const privateKey = decodeKey(r.PrivateKey) as Buffer
  const publicKey = publicKeyFromPrivate(privateKey)
  const identity = identityFromPublicKey(publicKey)
  const virtualAddress = r.VirtualAddress ? (parseIpv4(r.VirtualAddress) as number) : virtualAddressFromPublicKey(publicKey)

  const seenIds = new Map<string, string>([[identity, 'this system']])
  const seenAddrs = new Map<number, string>([[virtualAddress, 'this system']])
  const peers: PeerConfig[] = []
  ;(r.Peers ?? []).forEach((p, index) => {
    const where = `Peers[${index}]`
    const pk = decodeKey(p.PublicKey) as Buffer
    const derived = identityFromPublicKey(pk)
    if (p.Identity !== undefined && normaliseIdentity(p.Identity) !== derived) {
      problems.push({
        path: `${where}.Identity`,
        reason: `peer "${p.Description ?? p.Identity}" gives identity ${p.Identity}, but its PublicKey derives identity ${derived}`,
      })
    }
    if (pk.equals(publicKey)) problems.push({ path: `${where}.PublicKey`, reason: "is this system's own public key" })
    const va = p.VirtualAddress ? (parseIpv4(p.VirtualAddress) as number) : virtualAddressFromPublicKey(pk)
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
    if (p.Endpoint) {
      const i = p.Endpoint.lastIndexOf(':')
      endpoint = { host: p.Endpoint.slice(0, i), port: Number(p.Endpoint.slice(i + 1)) }
    }
    peers.push({
      index,
      publicKey: pk,
      publicKeyBase64: pk.toString('base64'),
      identity: derived,
      virtualAddress: va,
      endpoint,
      persistentKeepalive: p.PersistentKeepalive ?? 0,
      presharedKey: p.PresharedKey ? (decodeKey(p.PresharedKey) as Buffer) : undefined,
      description: p.Description,
      tags: p.Tags ?? [],
      availableRoutes: [],
    })
  })

  const en = r.ExitNode ?? {}
  const providesRoutes = (en.ProvidesRoutes ?? []).map((c) => parseCidr(c) as Cidr)
  providesRoutes.forEach((c, i) => {
    const dup = providesRoutes.findIndex((d) => d.text === c.text)
    if (dup < i) problems.push({ path: `ExitNode.ProvidesRoutes[${i}]`, reason: `${c.text} is listed twice (also at [${dup}])` })
  })
  const availableRoutes = new Map<string, Cidr[]>()
  for (const [rawId, list] of Object.entries(en.AvailableRoutes ?? {})) {
    const id = normaliseIdentity(rawId)
    const where = `ExitNode.AvailableRoutes.${rawId}`
    const peer = peers.find((p) => p.identity === id)
    if (!peer) {
      const known = peers.map((p) => p.identity).join(', ') || 'none'
      problems.push({
        path: where,
        reason:
          id === identity
            ? "is this system itself; list the exit node's identity"
            : `${rawId} is not a known peer (known peers: ${known}); add it with \`enclave add <public key>\` first`,
      })
      continue
    }
    const cidrs = list.map((c) => parseCidr(c) as Cidr)
    cidrs.forEach((c, i) => {
      const dup = cidrs.findIndex((d) => d.text === c.text)
      if (dup < i) problems.push({ path: `${where}[${i}]`, reason: `${c.text} is listed twice (also at [${dup}])` })
      if (cidrsOverlap(c, { addr: 0x64400000, len: 10, text: '100.64.0.0/10' }) && c.len >= 10) {
        problems.push({
          path: `${where}[${i}]`,
          reason: `${c.text} lies inside the overlay network 100.64.0.0/10; peers are reached by their virtual addresses`,
        })
      }
    })
    peer.availableRoutes = cidrs
    availableRoutes.set(id, cidrs)
  }
  const policies = checkPolicies(r.Policies, r.Tags ?? [], providesRoutes, problems)
  if (problems.length) throw new ProfileError(file, problems)

  return {
    file,
    raw,
    privateKey,
    publicKey,
    identity,
    virtualAddress,
    localPort: r.LocalPort ?? DEFAULT_LOCAL_PORT,
    interface: r.Interface ?? DEFAULT_INTERFACE,
    mtu: r.Mtu ?? DEFAULT_MTU,
    tags: r.Tags ?? [],
    peers,
    exitNode: {
      providesRoutes,
      availableRoutes,
      manageNat: en.ManageNat ?? false,
      snatAddress: en.SnatAddress ? (parseIpv4(en.SnatAddress) as number) : undefined,
      forceRoutes: en.ForceRoutes ?? false,
    },
    logLevel: r.LogLevel,
    controlGroup: r.ControlGroup,
    workers: r.Workers,
    policies,
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
  const dir = path.dirname(file)
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`)
  const data = JSON.stringify(raw, null, 2) + '\n'
  let fd: number | undefined
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600)
    fs.writeFileSync(fd, data)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    fd = undefined
    fs.renameSync(tmp, file)
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd)
    fs.rmSync(tmp, { force: true })
    throw e
  }
  try {
    const dfd = fs.openSync(dir, 'r')
    fs.fsyncSync(dfd)
    fs.closeSync(dfd)
  } catch {
    /* directory fsync is best effort on filesystems that refuse it */
  }
  return profile
}
