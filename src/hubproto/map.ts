/**
 * What the hub tells an agent: its own place (identity, address, tags, the routes it may provide), the
 * peers it may see, the policies it enforces as a receiver and the exit-node routes it may use. Peers
 * and policies are in the profile's own JSON shape, so the agent merges them into its profile and
 * validates the result with the same schema as a hand-written profile (src/config/hub-layer.ts).
 */
import { blake2s } from '@noble/hashes/blake2s'
import { z } from 'zod'

export const hubPeerSchema = z
  .object({
    PublicKey: z.string().max(64),
    Identity: z.string().max(8),
    VirtualAddress: z.string().max(15),
    Tags: z.array(z.string().max(64)).max(256),
    Description: z.string().max(200).optional(),
    Endpoint: z.string().max(64).optional(),
  })
  .strict()

export type HubPeer = z.infer<typeof hubPeerSchema>

export const hubSelfSchema = z
  .object({
    Identity: z.string().max(8),
    VirtualAddress: z.string().max(15),
    Tags: z.array(z.string().max(64)).max(256),
    State: z.enum(['pending', 'approved', 'disabled']),
    ProvidesRoutes: z.array(z.string().max(18)).max(1024),
  })
  .strict()

export type HubSelf = z.infer<typeof hubSelfSchema>

/**
 * The map's content. Strict: a key the agent does not know (a host setting such as PrivateKey,
 * LocalPort, Interface, Mtu, ControlGroup or MetricsListen) makes the whole map refused.
 */
export const hubMapSchema = z
  .object({
    Self: hubSelfSchema,
    Peers: z.array(hubPeerSchema).max(100_000),
    // Validated in full by the profile's policy schema after the merge.
    Policies: z.array(z.record(z.unknown())).max(4096),
    AvailableRoutes: z.record(z.array(z.string().max(18)).max(1024)),
  })
  .strict()

export type HubMap = z.infer<typeof hubMapSchema>

/** Canonical JSON (sorted keys) so that both sides hash the same bytes. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v)
}

/** Each peer entry's digest, by object: entries are never changed once made (applyDelta makes new ones). */
const digests = new WeakMap<HubPeer, Uint32Array>()

/** BLAKE2s-256 of a peer entry's canonical JSON, as eight 32-bit lanes (cached per entry object). */
export function peerDigest(p: HubPeer): Uint32Array {
  let d = digests.get(p)
  if (!d) {
    const h = blake2s(new TextEncoder().encode(canonical(p)))
    d = new Uint32Array(8)
    for (let i = 0; i < 8; i++) d[i] = (h[4 * i] | (h[4 * i + 1] << 8) | (h[4 * i + 2] << 16) | (h[4 * i + 3] << 24)) >>> 0
    digests.set(p, d)
  }
  return d
}

/**
 * The peers' part of the map hash: their digests summed lane by lane (mod 2^32), so it does not depend
 * on their order, costs one addition per peer when the digests are cached, and a peer listed twice does
 * not cancel out. It checks that two honest sides hold the same map (the channel is authenticated); it
 * is not a commitment against an adversary.
 */
/** Adds (sign 1) or takes away (sign -1) one peer's digest from a sum (peersDigest). */
export function addDigest(sum: Uint32Array, p: HubPeer, sign: 1 | -1): void {
  const d = peerDigest(p)
  for (let i = 0; i < 8; i++) sum[i] = (sum[i] + sign * d[i]) >>> 0
}

export function peersDigest(peers: readonly HubPeer[]): Uint32Array {
  const acc = new Uint32Array(8)
  for (const p of peers) {
    const d = peerDigest(p)
    for (let i = 0; i < 8; i++) acc[i] = (acc[i] + d[i]) >>> 0
  }
  return acc
}

/** The sync check after each delta: BLAKE2s-256 of the canonical map without its peers, then their digest sum. */
export function mapHash(m: HubMap): string {
  return mapHashWith(m, peersDigest(m.Peers))
}

/** mapHash with the peers' digest sum given (the hub keeps one per connection); `m.Peers` is not read. */
export function mapHashWith(m: Omit<HubMap, 'Peers'>, sum: Uint32Array): string {
  const rest = new TextEncoder().encode(canonical({ Self: m.Self, Policies: m.Policies, AvailableRoutes: m.AvailableRoutes }))
  const buf = new Uint8Array(rest.length + 32)
  buf.set(rest, 0)
  for (let i = 0; i < 8; i++) for (let j = 0; j < 4; j++) buf[rest.length + 4 * i + j] = (sum[i] >>> (8 * j)) & 255
  return Buffer.from(blake2s(buf)).toString('base64')
}

export interface HubDelta {
  Upsert: HubPeer[]
  Remove: string[]
  /** Peers whose endpoint alone changed, by identity: the common change, kept small. */
  Patch?: Array<{ Identity: string; Endpoint?: string }>
  Self?: HubSelf
  Policies?: Array<Record<string, unknown>>
  AvailableRoutes?: Record<string, string[]>
}

export const hubDeltaSchema = z
  .object({
    Upsert: z.array(hubPeerSchema).max(100_000),
    Remove: z.array(z.string().max(64)).max(100_000),
    Patch: z
      .array(z.object({ Identity: z.string().max(8), Endpoint: z.string().max(64).optional() }).strict())
      .max(100_000)
      .optional(),
    Self: hubSelfSchema.optional(),
    Policies: z.array(z.record(z.unknown())).max(4096).optional(),
    AvailableRoutes: z.record(z.array(z.string().max(18)).max(1024)).optional(),
  })
  .strict()

/**
 * What changed from `a` to `b`; null when nothing did. `index` is `a`'s peers by public key when the
 * caller keeps one (the hub does, per connection: no map is rebuilt per change); an entry that is equal
 * but a new object replaces the old one in it (the caller updates the rest from the delta).
 */
export function diffMaps(a: HubMap, b: HubMap, index?: Map<string, HubPeer>): HubDelta | null {
  const old = index ?? new Map(a.Peers.map((p) => [p.PublicKey, p]))
  const upsert: HubPeer[] = []
  const patch: Array<{ Identity: string; Endpoint?: string }> = []
  let kept = 0
  for (const p of b.Peers) {
    const o = old.get(p.PublicKey)
    if (o) kept++
    // The hub reuses an unchanged entry's object from one model to the next: most peers end here.
    if (o === p) continue
    if (o && canonical(o) === canonical(p)) {
      // The same entry in a new object: the index takes it, so the next change finds it by identity.
      index?.set(p.PublicKey, p)
      continue
    }
    if (o && canonical({ ...o, Endpoint: undefined }) === canonical({ ...p, Endpoint: undefined }))
      patch.push(p.Endpoint ? { Identity: p.Identity, Endpoint: p.Endpoint } : { Identity: p.Identity })
    else upsert.push(p)
  }
  const remove: string[] = []
  if (kept < old.size) {
    const now = new Set(b.Peers.map((p) => p.PublicKey))
    for (const k of old.keys()) if (!now.has(k)) remove.push(k)
  }
  const d: HubDelta = { Upsert: upsert, Remove: remove }
  if (patch.length) d.Patch = patch
  if (canonical(a.Self) !== canonical(b.Self)) d.Self = b.Self
  if (canonical(a.Policies) !== canonical(b.Policies)) d.Policies = b.Policies
  if (canonical(a.AvailableRoutes) !== canonical(b.AvailableRoutes)) d.AvailableRoutes = b.AvailableRoutes
  return upsert.length || remove.length || patch.length || d.Self || d.Policies || d.AvailableRoutes ? d : null
}

export function applyDelta(m: HubMap, d: HubDelta): HubMap {
  const peers = new Map(m.Peers.map((p) => [p.PublicKey, p]))
  for (const k of d.Remove) peers.delete(k)
  for (const p of d.Upsert) peers.set(p.PublicKey, p)
  if (d.Patch?.length) {
    const byId = new Map([...peers.values()].map((p) => [p.Identity, p]))
    for (const x of d.Patch) {
      const p = byId.get(x.Identity)
      if (!p) continue
      const { Endpoint: _old, ...rest } = p
      peers.set(p.PublicKey, x.Endpoint ? { ...rest, Endpoint: x.Endpoint } : rest)
    }
  }
  return {
    Self: d.Self ?? m.Self,
    Peers: [...peers.values()],
    Policies: d.Policies ?? m.Policies,
    AvailableRoutes: d.AvailableRoutes ?? m.AvailableRoutes,
  }
}
