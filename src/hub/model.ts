/**
 * The hub's in-memory model, rebuilt from the database: who sees whom, and the map each system gets.
 *
 * A system sees another iff an enabled policy connects them in either direction (senders by tag;
 * receivers by tag, or the gateway system of a gateway policy), and both are approved. Each system
 * gets the policies it enforces as a receiver, in the profile's shape: a gateway policy becomes, on its
 * gateway, GatewayRoutes (only routes the admin approved) for the reserved tag `system:<identity>`.
 * Peer tags are cut down to the tags the recipient's policies name, so a map does not leak the
 * organisation's tags.
 */
import { intToIp } from '../common/ipv4.js'
import { type HubMap, type HubPeer, canonical } from '../hubproto/map.js'

export const SYSTEM_TAG_PREFIX = 'system:'

export interface SystemRow {
  id: number
  publicKey: string
  identity: string
  address: number
  hostname: string
  state: 'pending' | 'approved' | 'disabled'
  tags: string[]
  listenPort: number
  endpoint: string | null
  allowGateway: boolean
  acceptDefaultRoute: boolean
  /** Routes the agent advertises (its local ProvidesRoutes), approved or not. */
  advertised: string[]
}

export interface PolicyBody {
  SenderTags: string[]
  ReceiverTags?: string[]
  Gateway?: { Identity: string; Routes: string[] }
  Acls: Array<{ Protocol: string; Ports?: string; Description?: string }>
  GatewayAllowedIpRanges?: Array<{ IpRange: string; Description?: string }>
}

export interface PolicyRow {
  id: number
  description: string
  enabled: boolean
  body: PolicyBody
}

export interface RouteRow {
  systemId: number
  cidr: string
  source: 'agent' | 'admin'
  approved: boolean
}

/** Peer entries by the recipient's mentioned-tags key, then by system id (HubModel). */
export type EntryCache = Map<string, Map<number, CachedEntry>>
/** An entry, its canonical JSON, and the model that last checked it against its rows. */
interface CachedEntry {
  e: HubPeer
  c: string
  g: number
}
let modelGen = 0
const EMPTY: ReadonlySet<number> = new Set()

export class HubModel {
  readonly systems = new Map<number, SystemRow>()
  readonly byIdentity = new Map<string, SystemRow>()
  readonly byKey = new Map<string, SystemRow>()
  private readonly routes = new Map<number, RouteRow[]>()
  private tagIndex = new Map<string, Set<number>>()

  /**
   * Peer entries as recipients see them, by the recipient's mentioned-tags key and then by system: one
   * object per distinct entry, shared by every map that lists it. The cache outlives the model (the hub
   * passes the same one to each model it loads): an entry equal to the one cached is that very object, so
   * the delta engine finds unchanged peers by identity and their digests stay cached (src/hubproto/map.ts):
   * a change costs what changed, not the size of every map.
   */
  private readonly entries: EntryCache
  private readonly gen = ++modelGen

  constructor(
    systems: SystemRow[],
    readonly policies: PolicyRow[],
    private readonly routeRows: RouteRow[],
    cache: EntryCache = new Map(),
  ) {
    const routes = routeRows
    this.entries = cache

    for (const s of systems) {
      this.systems.set(s.id, s)
      this.byIdentity.set(s.identity, s)
      this.byKey.set(s.publicKey, s)
      if (s.state !== 'approved') continue
      for (const t of s.tags) {
        const set = this.tagIndex.get(t) ?? new Set<number>()
        this.tagIndex.set(t, set)
        set.add(s.id)
      }
    }
    for (const r of routes) {
      const l = this.routes.get(r.systemId) ?? []
      l.push(r)
      this.routes.set(r.systemId, l)
    }
  }

  routesOf(id: number): RouteRow[] {
    return this.routes.get(id) ?? []
  }

  approvedRoutes(id: number): string[] {
    return this.routesOf(id)
      .filter((r) => r.approved)
      .map((r) => r.cidr)
  }

  private withTags(tags: readonly string[]): Set<number> {
    const out = new Set<number>()
    for (const t of tags) for (const id of this.tagIndex.get(t) ?? []) out.add(id)
    return out
  }

  private readonly senders = new Map<PolicyRow, Set<number>>()
  private readonly receivers = new Map<PolicyRow, Set<number>>()

  /** Approved systems a policy's SenderTags name (memoised: the model is immutable once built). */
  sendersOf(p: PolicyRow): Set<number> {
    let s = this.senders.get(p)
    if (!s) {
      s = this.withTags(p.body.SenderTags)
      this.senders.set(p, s)
    }
    return s
  }

  receiversOf(p: PolicyRow): Set<number> {
    let s = this.receivers.get(p)
    if (!s) {
      if (p.body.Gateway) {
        const g = this.byIdentity.get(p.body.Gateway.Identity)
        s = g && g.state === 'approved' ? new Set([g.id]) : new Set()
      } else s = this.withTags(p.body.ReceiverTags ?? [])
      this.receivers.set(p, s)
    }
    return s
  }

  private vis?: Map<number, Set<number>>
  private readonly visMemo = new Map<number, Set<number>>()

  /** Every system each approved system sees (symmetric); computed once per model. */
  visibility(): Map<number, Set<number>> {
    this.vis ??= this.computeVisibility()
    return this.vis
  }

  /**
   * The systems `id` sees, without computing everyone's (a handshake needs one map): the receivers of
   * the policies it sends under and the senders of those it receives under.
   */
  visibleOf(id: number): ReadonlySet<number> {
    if (this.vis) return this.vis.get(id) ?? EMPTY
    let out = this.visMemo.get(id)
    if (out) return out
    out = new Set<number>()
    this.visMemo.set(id, out)
    for (const p of this.policies) {
      if (!p.enabled) continue
      const senders = this.sendersOf(p)
      const receivers = this.receiversOf(p)
      if (senders.has(id)) for (const r of receivers) out.add(r)
      if (receivers.has(id)) for (const x of senders) out.add(x)
    }
    out.delete(id)
    return out
  }

  private computeVisibility(): Map<number, Set<number>> {
    const vis = new Map<number, Set<number>>()
    const add = (a: number, b: number) => {
      if (a === b) return
      const s = vis.get(a) ?? new Set<number>()
      vis.set(a, s)
      s.add(b)
    }
    for (const p of this.policies) {
      if (!p.enabled) continue
      const senders = this.sendersOf(p)
      const receivers = this.receiversOf(p)
      for (const s of senders)
        for (const r of receivers) {
          add(s, r)
          add(r, s)
        }
    }
    return vis
  }

  /** The map of system `id` (an empty one while it is not approved). */
  mapFor(id: number, vis?: Map<number, Set<number>>): HubMap {
    const me = this.systems.get(id)
    if (!me) throw new Error(`no system ${id}`)
    const self = {
      Identity: me.identity,
      VirtualAddress: intToIp(me.address),
      Tags: me.state === 'approved' ? [...me.tags, SYSTEM_TAG_PREFIX + me.identity] : [],
      State: me.state,
      ProvidesRoutes: me.state === 'approved' ? this.approvedRoutes(id) : [],
    }
    if (me.state !== 'approved') return { Self: self, Peers: [], Policies: [], AvailableRoutes: {} }
    const { policies, mentioned, available } = this.policyPart(me)
    const peers: HubPeer[] = []
    const cache = this.entryCache(mentioned)
    for (const pid of vis ? (vis.get(id) ?? []) : this.visibleOf(id)) {
      const s = this.systems.get(pid)
      if (s?.state !== 'approved') continue
      peers.push(this.peerEntry(s, mentioned, cache))
    }
    return { Self: self, Peers: peers, Policies: policies, AvailableRoutes: available }
  }

  /** The tags of others that `id`'s map shows: those its policies name as senders. */
  mentionedFor(id: number): Set<string> {
    const me = this.systems.get(id)
    return me ? this.policyPart(me).mentioned : new Set()
  }

  /** System `s` as a peer entry for a recipient whose policies name `mentioned` (the shared object). */
  entryFor(s: SystemRow, mentioned: Set<string>): HubPeer {
    return this.peerEntry(s, mentioned, this.entryCache(mentioned))
  }

  private entryCache(mentioned: Set<string>): Map<number, CachedEntry> {
    const mkey = [...mentioned].sort().join('\n')
    let cache = this.entries.get(mkey)
    if (!cache) {
      cache = new Map()
      this.entries.set(mkey, cache)
    }
    return cache
  }

  /** What `me`'s map takes from the policies: those it enforces, the sender tags they name, its exit-node routes. */
  private policyPart(me: SystemRow): {
    policies: Array<Record<string, unknown>>
    mentioned: Set<string>
    available: Record<string, string[]>
  } {
    const id = me.id
    const policies: Array<Record<string, unknown>> = []
    const mentioned = new Set<string>()
    const available: Record<string, string[]> = {}
    for (const p of this.policies) {
      if (!p.enabled) continue
      const b = p.body
      const receivers = this.receiversOf(p)
      if (b.Gateway) {
        const g = this.byIdentity.get(b.Gateway.Identity)
        if (g?.state !== 'approved') continue
        const approved = new Set(this.approvedRoutes(g.id))
        const routes = b.Gateway.Routes.filter((r) => approved.has(r))
        if (!routes.length) continue
        if (g.id === id) {
          policies.push({
            Description: p.description,
            SenderTags: b.SenderTags,
            ReceiverTags: [SYSTEM_TAG_PREFIX + me.identity],
            Acls: b.Acls,
            GatewayRoutes: routes,
            ...(b.GatewayAllowedIpRanges ? { GatewayAllowedIpRanges: b.GatewayAllowedIpRanges } : {}),
          })
          for (const t of b.SenderTags) mentioned.add(t)
        }
        if (this.sendersOf(p).has(id) && g.id !== id) {
          const l = available[g.identity] ?? []
          for (const r of routes) if (!l.includes(r)) l.push(r)
          available[g.identity] = l
        }
        continue
      }
      if (receivers.has(id)) {
        policies.push({ Description: p.description, SenderTags: b.SenderTags, ReceiverTags: b.ReceiverTags, Acls: b.Acls })
        for (const t of b.SenderTags) mentioned.add(t)
      }
    }
    return { policies, mentioned, available }
  }

  /**
   * The systems whose rows differ between `a` and `b` when nothing else did (same policies, same routes,
   * none of them a gateway that a policy names): then a change reaches only the systems that see them,
   * entry by entry. Null otherwise (a full recompute).
   */
  static systemsOnlyChange(a: HubModel, b: HubModel): Set<number> | null {
    if (canonical(a.policies) !== canonical(b.policies) || canonical(a.routeRows) !== canonical(b.routeRows)) return null
    const changed = new Set<number>()
    for (const [id, row] of b.systems) {
      const old = a.systems.get(id)
      if (!old || JSON.stringify(old) !== JSON.stringify(row)) changed.add(id)
    }
    for (const id of a.systems.keys()) if (!b.systems.has(id)) changed.add(id)
    if (changed.size > b.systems.size / 4 + 8) return null
    for (const p of b.policies) {
      const g = p.body.Gateway?.Identity
      if (!g) continue
      const x = b.byIdentity.get(g) ?? a.byIdentity.get(g)
      if (x && changed.has(x.id)) return null
    }
    return changed
  }

  private peerEntry(s: SystemRow, mentioned: Set<string>, cache: Map<number, CachedEntry>): HubPeer {
    // Checked against this model's rows once per entry; after that the cached object is the answer.
    let x = cache.get(s.id)
    if (!x || x.g !== this.gen) {
      const e: HubPeer = {
        PublicKey: s.publicKey,
        Identity: s.identity,
        VirtualAddress: intToIp(s.address),
        Tags: s.tags.filter((t) => mentioned.has(t)),
        Description: s.hostname,
        ...(s.endpoint ? { Endpoint: s.endpoint } : {}),
      }
      const c = canonical(e)
      if (!x || x.c !== c) {
        x = { e: Object.freeze(e), c, g: this.gen }
        cache.set(s.id, x)
      } else x.g = this.gen
    }
    return x.e
  }

  /**
   * Sender -> receiver pairs the enabled policies open ("A -> B" or "A -> B:172.26.0.0/20" for a
   * gateway route), for --dry-run: the difference between two models is what a change opens or closes.
   */
  reachPairs(): Set<string> {
    const out = new Set<string>()
    for (const p of this.policies) {
      if (!p.enabled) continue
      const acl = p.body.Acls.map((a) => (a.Ports ? `${a.Protocol.toLowerCase()}:${a.Ports}` : a.Protocol.toLowerCase())).join(',')
      const receivers = this.receiversOf(p)
      for (const s of this.sendersOf(p))
        for (const r of receivers) {
          if (s === r) continue
          const S = this.systems.get(s)?.identity
          const R = this.systems.get(r)?.identity
          if (p.body.Gateway) {
            const approved = new Set(this.approvedRoutes(r))
            for (const c of p.body.Gateway.Routes) if (approved.has(c)) out.add(`${S} -> ${R}:${c} (${acl})`)
          } else out.add(`${S} -> ${R} (${acl})`)
        }
    }
    return out
  }
}
