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

/** BLAKE2s-256 of the canonical map, peers in key order: the sync check after each delta. */
export function mapHash(m: HubMap): string {
  const sorted = { ...m, Peers: [...m.Peers].sort((a, b) => (a.PublicKey < b.PublicKey ? -1 : a.PublicKey > b.PublicKey ? 1 : 0)) }
  return Buffer.from(blake2s(new TextEncoder().encode(canonical(sorted)))).toString('base64')
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

/** What changed from `a` to `b`; null when nothing did. */
export function diffMaps(a: HubMap, b: HubMap): HubDelta | null {
  const old = new Map(a.Peers.map((p) => [p.PublicKey, p]))
  const upsert: HubPeer[] = []
  const patch: Array<{ Identity: string; Endpoint?: string }> = []
  for (const p of b.Peers) {
    const o = old.get(p.PublicKey)
    if (o && canonical(o) === canonical(p)) continue
    if (o && canonical({ ...o, Endpoint: undefined }) === canonical({ ...p, Endpoint: undefined }))
      patch.push(p.Endpoint ? { Identity: p.Identity, Endpoint: p.Endpoint } : { Identity: p.Identity })
    else upsert.push(p)
  }
  const now = new Set(b.Peers.map((p) => p.PublicKey))
  const remove = a.Peers.filter((p) => !now.has(p.PublicKey)).map((p) => p.PublicKey)
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
