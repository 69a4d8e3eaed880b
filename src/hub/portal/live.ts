/**
 * What the portal and the API show beyond the database: which systems are connected to this hub, their
 * NAT class, and the systems each shares a relay pair with (the hub relays for them until their direct
 * path opens; agents keep the truth of their own paths in `enclave status`).
 */
import type { HubAdmin, SystemInfo } from '../admin.js'

export interface LiveInfo {
  online: Set<string>
  /** "direct", "relay with B7Q2M, …", or "offline". */
  path(identity: string): string
  nat(identity: string): string | undefined
}

export const NO_LIVE: LiveInfo = { online: new Set(), path: () => 'offline', nat: () => undefined }

export function liveInfo(connected: Array<{ identity: string; nat?: string }>, relayPairs: Array<[string, string]>): LiveInfo {
  const online = new Set(connected.map((c) => c.identity))
  const nat = new Map(connected.map((c) => [c.identity, c.nat]))
  const relayed = new Map<string, string[]>()
  for (const [a, b] of relayPairs) {
    relayed.set(a, [...(relayed.get(a) ?? []), b])
    relayed.set(b, [...(relayed.get(b) ?? []), a])
  }
  return {
    online,
    nat: (id) => nat.get(id),
    path: (id) => {
      if (!online.has(id)) return 'offline'
      const r = relayed.get(id)
      return r?.length ? `relay pair with ${r.sort().join(', ')}` : 'direct'
    },
  }
}

export interface SystemDetail extends SystemInfo {
  online: boolean
  path: string
  nat?: string
  audit: Awaited<ReturnType<HubAdmin['auditLog']>>
}

export async function systemDetail(admin: HubAdmin, live: LiveInfo, which: string): Promise<SystemDetail> {
  const s = await admin.findSystem(which)
  const info = (await admin.listSystems()).find((x) => x.identity === s.identity)
  if (!info) throw new Error('system vanished')
  return {
    ...info,
    online: live.online.has(s.identity),
    path: live.path(s.identity),
    nat: live.nat(s.identity),
    audit: await admin.auditLog(200, { target: s.identity }),
  }
}

export interface TagInfo {
  tag: string
  systems: string[]
  policies: string[]
  keys: string[]
}

/** Every tag in use: the systems that carry it, the policies that name it, the keys that give it. */
export async function tagIndex(admin: HubAdmin): Promise<TagInfo[]> {
  const [systems, policies, keys] = await Promise.all([admin.listSystems(), admin.listPolicies(), admin.listKeys()])
  const m = new Map<string, TagInfo>()
  const get = (t: string) => {
    let x = m.get(t)
    if (!x) {
      x = { tag: t, systems: [], policies: [], keys: [] }
      m.set(t, x)
    }
    return x
  }
  for (const s of systems) for (const t of s.tags) get(t).systems.push(s.identity)
  for (const p of policies)
    for (const t of new Set([...p.body.SenderTags, ...(p.body.ReceiverTags ?? [])])) get(t).policies.push(p.description)
  for (const k of keys) for (const t of k.tags) get(t).keys.push(k.keyId)
  return [...m.values()].sort((a, b) => a.tag.localeCompare(b.tag))
}
