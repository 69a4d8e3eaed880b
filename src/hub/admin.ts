/**
 * Everything that changes the hub's data, in one place: the CLI (on the hub host), the hub server
 * (enrolment, presence) and later the admin API call these. Each change is one store transaction with
 * its revision and audit row (src/hub/store.ts); a running hub follows the revision and pushes maps.
 */
import { EnclaveError } from '../errors.js'
import { parseCidr } from '../common/ipv4.js'
import { OVERLAY_NETWORK, OVERLAY_SIZE, identityFromPublicKey, normaliseIdentity, virtualAddressFromPublicKey } from '../config/identity.js'
import { tagSchema, parsePorts } from '../config/policies.js'
import { newEnrolmentKey, keyMatches, normaliseEnrolmentKey } from '../hubproto/enrolment-key.js'
import { type EntryCache, HubModel, type PolicyBody, type PolicyRow, type RouteRow, SYSTEM_TAG_PREFIX, type SystemRow } from './model.js'
import type { HubStore, Tx } from './store.js'

/** Exit code 5: the named key, system, policy or route does not exist. */
export const EXIT_NOT_FOUND = 5

export function notFound(what: string): EnclaveError {
  return new EnclaveError('ENOTFOUND', what, EXIT_NOT_FOUND)
}

export function usage(what: string): EnclaveError {
  return new EnclaveError('EUSAGE', what, 2)
}

export function parseTags(s: string | undefined): string[] {
  if (!s) return []
  const tags = s
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean)
  for (const t of tags) {
    const r = tagSchema.safeParse(t)
    if (!r.success) throw usage(`tag "${t}": ${r.error.issues[0].message}`)
    if (t.startsWith(SYSTEM_TAG_PREFIX)) throw usage(`tag "${t}": tags starting with "${SYSTEM_TAG_PREFIX}" are reserved for the hub`)
  }
  return [...new Set(tags)]
}

/** `icmp`, `any`, `tcp:22`, `udp:53`, `tcp:8000-8100` -> a profile Acls entry. */
export function parseAcl(s: string): { Protocol: string; Ports?: string } {
  const m = /^(any|icmp|tcp|udp)(?::(.+))?$/i.exec(s.trim())
  if (!m) throw usage(`--acl "${s}": use icmp, any, tcp:PORT, udp:PORT or a range tcp:8000-8100`)
  const Protocol = m[1][0].toUpperCase() + m[1].slice(1).toLowerCase()
  if (!m[2]) return { Protocol }
  if (Protocol === 'Any' || Protocol === 'Icmp') throw usage(`--acl "${s}": ${Protocol.toLowerCase()} takes no port`)
  const r = parsePorts(m[2])
  if (typeof r === 'string') throw usage(`--acl "${s}": ${r}`)
  return { Protocol, Ports: m[2] }
}

export function parseRoute(s: string): string {
  const c = parseCidr(s)
  if (typeof c === 'string') throw usage(`route "${s}": ${c}`)
  return c.text
}

/** "7d", "12h", "30m" -> milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(s.trim())
  if (!m) throw usage(`"${s}" is not a duration such as 30m, 12h, 7d`)
  const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }[m[2] as 's']
  return Number(m[1]) * unit
}

export interface KeyInfo {
  keyId: string
  description: string
  autoApprove: boolean
  ephemeral: boolean
  usesRemaining: number | null
  usedCount: number
  expiresAt: string | null
  enabled: boolean
  tags: string[]
  createdAt: string
  state: 'enabled' | 'revoked' | 'no-uses' | 'expired'
}

export interface SystemInfo {
  identity: string
  virtualAddress: string
  hostname: string
  state: string
  tags: string[]
  enrolledAt: string
  lastSeenAt: string | null
  endpoint: string | null
  allowGateway: boolean
  routes: Array<{ cidr: string; approved: boolean; source: string }>
}

function systemRow(r: {
  id: number
  public_key: string
  identity: string
  virtual_address: number
  hostname: string
  state: string
  tags: string
  listen_port: number
  endpoint: string | null
  allow_gateway: number
  accept_default_route: number
  advertised_routes: string
}): SystemRow {
  return {
    id: r.id,
    publicKey: r.public_key,
    identity: r.identity,
    address: Number(r.virtual_address),
    hostname: r.hostname,
    state: r.state as SystemRow['state'],
    tags: JSON.parse(r.tags),
    listenPort: r.listen_port,
    endpoint: r.endpoint,
    allowGateway: r.allow_gateway === 1,
    acceptDefaultRoute: r.accept_default_route === 1,
    advertised: JSON.parse(r.advertised_routes),
  }
}

/** The model from the database; `cache` holds peer entries across models (HubModel). */
export async function loadModel(trx: Tx, cache?: EntryCache): Promise<HubModel> {
  const systems = (await trx.selectFrom('systems').selectAll().execute()).map(systemRow)
  const policies: PolicyRow[] = (await trx.selectFrom('policies').selectAll().orderBy('id').execute()).map((p) => ({
    id: p.id,
    description: p.description,
    enabled: p.enabled === 1,
    body: JSON.parse(p.body) as PolicyBody,
  }))
  const routes: RouteRow[] = (await trx.selectFrom('routes').selectAll().execute()).map((r) => ({
    systemId: r.system_id,
    cidr: r.cidr,
    source: r.source as RouteRow['source'],
    approved: r.approved === 1,
  }))
  return new HubModel(systems, policies, routes, cache)
}

export interface EnrolRequest {
  publicKey: string
  key?: string
  hostname: string
  listenPort: number
  endpoint: string | null
  helloTs: string
  allowGateway: boolean
  acceptDefaultRoute: boolean
  advertised: string[]
}

export type EnrolResult = { ok: true; system: SystemRow; enrolled: boolean } | { ok: false; code: string; message: string }

export class HubAdmin {
  constructor(
    readonly store: HubStore,
    readonly actor: string,
  ) {}

  model(): Promise<HubModel> {
    return loadModel(this.store.db)
  }

  // ------------------------------------------------------------ enrolment keys

  async createKey(
    description: string,
    o: { autoApprove?: boolean; uses?: number; tags?: string[]; forMs?: number; ephemeral?: boolean },
  ): Promise<KeyInfo & { key: string }> {
    if (!description.trim()) throw usage('a key needs a description')
    if (o.uses !== undefined && (!Number.isInteger(o.uses) || o.uses < 1)) throw usage('--uses must be 1 or more')
    // The key id (its first 5 characters) is unique: a new key whose id is taken is drawn again.
    let k = newEnrolmentKey()
    for (let i = 0; i < 16; i++) {
      if (!(await this.store.db.selectFrom('enrolment_keys').select('id').where('key_id', '=', k.keyId).executeTakeFirst())) break
      k = newEnrolmentKey()
    }
    const now = new Date()
    const expires = o.forMs ? new Date(now.getTime() + o.forMs).toISOString() : null
    const existing = await this.store.db.selectFrom('enrolment_keys').select('id').where('description', '=', description).executeTakeFirst()
    if (existing) throw usage(`an enrolment key named "${description}" exists; choose another description`)
    await this.store.write({ actor: this.actor, action: 'key.create', target: k.keyId, details: { description, ...o } }, async (trx) => {
      await trx
        .insertInto('enrolment_keys')
        .values({
          key_id: k.keyId,
          secret_sha256: k.sha256,
          description,
          auto_approve: o.autoApprove || o.ephemeral ? 1 : 0,
          ephemeral: o.ephemeral ? 1 : 0,
          uses_remaining: o.uses ?? null,
          used_count: 0,
          expires_at: expires,
          enabled: 1,
          tags: JSON.stringify(o.tags ?? []),
          created_at: now.toISOString(),
          created_by: this.actor,
        })
        .execute()
    })
    const info = (await this.listKeys()).find((x) => x.keyId === k.keyId)
    if (!info) throw new Error('key vanished')
    return { ...info, key: k.key }
  }

  async listKeys(): Promise<KeyInfo[]> {
    const rows = await this.store.db.selectFrom('enrolment_keys').selectAll().orderBy('id').execute()
    const now = Date.now()
    return rows.map((r) => ({
      keyId: r.key_id,
      description: r.description,
      autoApprove: r.auto_approve === 1,
      ephemeral: r.ephemeral === 1,
      usesRemaining: r.uses_remaining,
      usedCount: r.used_count,
      expiresAt: r.expires_at,
      enabled: r.enabled === 1,
      tags: JSON.parse(r.tags),
      createdAt: r.created_at,
      state:
        r.enabled !== 1
          ? 'revoked'
          : r.expires_at && Date.parse(r.expires_at) <= now
            ? 'expired'
            : r.uses_remaining !== null && r.uses_remaining <= 0
              ? 'no-uses'
              : 'enabled',
    }))
  }

  /** Revokes by key id (the first group), the whole key or the description: no new enrolments. */
  async revokeKey(which: string): Promise<KeyInfo> {
    const keys = await this.listKeys()
    const id = which.trim().toUpperCase().slice(0, 5)
    // Exactly a key id, or the whole key, first (ids are unique and shown in every list): a description
    // that happens to look like another key's id cannot revoke that other key by accident, nor hide it.
    const whole = normaliseEnrolmentKey(which)
    const exactId = whole ? whole.slice(0, 5) : which.trim().length === 5 ? id : undefined
    const k = (exactId ? keys.find((x) => x.keyId === exactId) : undefined) ?? keys.find((x) => x.description === which)
    if (!k) throw notFound(`no enrolment key "${which}" (see \`enclave hub key list\`)`)
    await this.store.write({ actor: this.actor, action: 'key.revoke', target: k.keyId }, async (trx) => {
      await trx.updateTable('enrolment_keys').set({ enabled: 0 }).where('key_id', '=', k.keyId).execute()
    })
    return { ...k, enabled: false, state: 'revoked' }
  }

  // ------------------------------------------------------------ enrolment (the hub server calls this)

  /**
   * A hello from `publicKey`. A known key is a reconnection (never consumes a use); otherwise the
   * enrolment key is checked and one use taken atomically, the identity must be free and an address
   * is allocated, all in one transaction. `helloTs` (TAI64N, hex) must be newer than the last one
   * seen for this key: a recorded hello cannot be replayed.
   */
  async enrol(req: EnrolRequest): Promise<EnrolResult> {
    return this.store.write(null, async (trx) => {
      const known = await trx.selectFrom('systems').selectAll().where('public_key', '=', req.publicKey).executeTakeFirst()
      if (known) {
        if (req.helloTs <= known.last_hello_ts)
          return { ok: false, code: 'REPLAYED', message: 'a hello not newer than the last one was refused' }
        await trx
          .updateTable('systems')
          .set({ last_hello_ts: req.helloTs, last_seen_at: new Date().toISOString() })
          .where('id', '=', known.id)
          .execute()
        return { ok: true, system: systemRow({ ...known, last_hello_ts: req.helloTs } as never), enrolled: false }
      }
      if (!req.key)
        return { ok: false, code: 'UNKNOWN_SYSTEM', message: 'this system is not enrolled (or was removed): enrol it with a key' }
      // A removed key's recorded enrolment must not bring it back: only a newer hello may enrol it again.
      const floor = await trx.selectFrom('hello_floors').select('last_hello_ts').where('public_key', '=', req.publicKey).executeTakeFirst()
      if (floor && req.helloTs <= floor.last_hello_ts)
        return { ok: false, code: 'REPLAYED', message: 'a hello not newer than the last one from this key was refused' }
      const key = normaliseEnrolmentKey(req.key)
      if (!key) return { ok: false, code: 'KEY_INVALID', message: 'that is not an enrolment key' }
      const row = await trx.selectFrom('enrolment_keys').selectAll().where('key_id', '=', key.slice(0, 5)).executeTakeFirst()
      if (!row || !keyMatches(key, row.secret_sha256)) return { ok: false, code: 'KEY_INVALID', message: 'unknown enrolment key' }
      if (row.enabled !== 1) return { ok: false, code: 'KEY_REVOKED', message: 'this enrolment key was revoked' }
      const nowIso = new Date().toISOString()
      if (row.expires_at && row.expires_at <= nowIso)
        return { ok: false, code: 'KEY_EXPIRED', message: `this enrolment key expired at ${row.expires_at}` }
      const identity = identityFromPublicKey(Buffer.from(req.publicKey, 'base64'))
      const clash = await trx.selectFrom('systems').select('id').where('identity', '=', identity).executeTakeFirst()
      if (clash)
        return {
          ok: false,
          code: 'IDENTITY_TAKEN',
          message: `identity ${identity} belongs to another system: generate a new key pair (enclave rotate-key) and enrol again`,
        }
      const used = await trx
        .updateTable('enrolment_keys')
        .set((eb) => ({
          used_count: eb('used_count', '+', 1),
          uses_remaining: eb
            .case()
            .when('uses_remaining', 'is', null)
            .then(null)
            .else(eb('uses_remaining', '-', 1))
            .end(),
        }))
        .where('id', '=', row.id)
        .where((eb) => eb.or([eb('uses_remaining', 'is', null), eb('uses_remaining', '>', 0)]))
        .executeTakeFirst()
      if (Number(used.numUpdatedRows) !== 1) return { ok: false, code: 'KEY_EXHAUSTED', message: 'this enrolment key has no uses left' }
      const address = await this.freeAddress(trx, virtualAddressFromPublicKey(Buffer.from(req.publicKey, 'base64')))
      const rev = await bumpRevision(trx)
      const state = row.auto_approve === 1 ? 'approved' : 'pending'
      await trx
        .insertInto('systems')
        .values({
          public_key: req.publicKey,
          identity,
          virtual_address: address,
          hostname: req.hostname,
          state,
          tags: row.tags,
          ephemeral: row.ephemeral,
          enrolment_key_id: row.id,
          enrolled_at: nowIso,
          approved_at: state === 'approved' ? nowIso : null,
          approved_by: state === 'approved' ? `key ${row.key_id}` : null,
          last_seen_at: nowIso,
          allow_gateway: req.allowGateway ? 1 : 0,
          accept_default_route: req.acceptDefaultRoute ? 1 : 0,
          last_hello_ts: req.helloTs,
          listen_port: req.listenPort,
          endpoint: req.endpoint,
          advertised_routes: JSON.stringify(req.advertised),
        })
        .execute()
      const sys = await trx.selectFrom('systems').selectAll().where('public_key', '=', req.publicKey).executeTakeFirstOrThrow()
      for (const cidr of req.advertised)
        await trx
          .insertInto('routes')
          .values({ system_id: sys.id, cidr, source: 'agent', approved: 0 })
          .onConflict((oc) => oc.doNothing())
          .execute()
      await trx
        .insertInto('audit')
        .values({
          at: nowIso,
          rev,
          actor: `key ${row.key_id}`,
          action: 'system.enrol',
          target: identity,
          details: JSON.stringify({ hostname: req.hostname, state, tags: JSON.parse(row.tags) }),
        })
        .execute()
      return { ok: true, system: systemRow(sys), enrolled: true }
    })
  }

  /** The derived address when free, else the next free one after it (uniqueness is the table's). */
  private async freeAddress(trx: Tx, derived: number): Promise<number> {
    const used = new Set((await trx.selectFrom('systems').select('virtual_address').execute()).map((r) => Number(r.virtual_address)))
    const base = OVERLAY_NETWORK >>> 0
    let a = derived >>> 0
    for (let i = 0; i < OVERLAY_SIZE; i++) {
      const host = (a - base) & (OVERLAY_SIZE - 1)
      // Not the network's first or last address.
      if (host !== 0 && host !== OVERLAY_SIZE - 1 && !used.has(a)) return a
      a = base + ((host + 1) & (OVERLAY_SIZE - 1))
    }
    throw new EnclaveError('EFULL', 'no free virtual address left in 100.64.0.0/10')
  }

  /** Presence: where the system's hub connection comes from, its WireGuard port and advertised routes. */
  async seen(publicKey: string, endpoint: string | null, listenPort: number, advertised: string[]): Promise<void> {
    const s = await this.store.db.selectFrom('systems').selectAll().where('public_key', '=', publicKey).executeTakeFirst()
    if (!s) return
    advertised = [...new Set(advertised)]
    const changed = s.endpoint !== endpoint || s.listen_port !== listenPort || s.advertised_routes !== JSON.stringify(advertised)
    const routes = await this.store.db.selectFrom('routes').selectAll().where('system_id', '=', s.id).execute()
    const newRoutes = advertised.filter((c) => !routes.some((r) => r.cidr === c))
    // Routes the agent advertised once and no longer does, still waiting for approval: withdrawn (the
    // rows an agent can add are the ones it advertises now, never more).
    const withdrawn = routes.filter((r) => r.source === 'agent' && r.approved === 0 && !advertised.includes(r.cidr)).map((r) => r.cidr)
    const now = new Date().toISOString()
    if (!changed && !newRoutes.length && !withdrawn.length) {
      await this.store.write(null, async (trx) => {
        await trx.updateTable('systems').set({ last_seen_at: now }).where('id', '=', s.id).execute()
      })
      return
    }
    // A pending system is in no one's map: its presence changes nothing anyone holds (no revision, no audit).
    const audit =
      s.state === 'pending' ? null : { actor: s.identity, action: 'system.presence', target: s.identity, details: { endpoint, advertised } }
    await this.store.write(audit, async (trx) => {
      await trx
        .updateTable('systems')
        .set({ endpoint, listen_port: listenPort, advertised_routes: JSON.stringify(advertised), last_seen_at: now })
        .where('id', '=', s.id)
        .execute()
      if (withdrawn.length)
        await trx
          .deleteFrom('routes')
          .where('system_id', '=', s.id)
          .where('source', '=', 'agent')
          .where('approved', '=', 0)
          .where('cidr', 'in', withdrawn)
          .execute()
      for (const cidr of newRoutes)
        await trx
          .insertInto('routes')
          .values({ system_id: s.id, cidr, source: 'agent', approved: 0 })
          .onConflict((oc) => oc.doNothing())
          .execute()
    })
  }

  /** The endpoint a connected system's discovery found (reflexive address); nothing when unchanged. */
  async setEndpoint(systemId: number, endpoint: string): Promise<void> {
    const s = await this.store.db.selectFrom('systems').select(['identity', 'endpoint']).where('id', '=', systemId).executeTakeFirst()
    if (!s || s.endpoint === endpoint) return
    await this.store.write({ actor: s.identity, action: 'system.endpoint', target: s.identity, details: { endpoint } }, async (trx) => {
      await trx.updateTable('systems').set({ endpoint }).where('id', '=', systemId).execute()
    })
  }

  // ------------------------------------------------------------ systems

  async findSystem(which: string, trx: Tx = this.store.db): Promise<SystemRow> {
    const id = normaliseIdentity(which)
    const r = await trx.selectFrom('systems').selectAll().where('identity', '=', id).executeTakeFirst()
    if (!r) throw notFound(`no system ${which} on this hub (see \`enclave hub system list\`)`)
    return systemRow(r)
  }

  async listSystems(o: { pending?: boolean } = {}): Promise<SystemInfo[]> {
    let q = this.store.db.selectFrom('systems').selectAll().orderBy('id')
    if (o.pending) q = q.where('state', '=', 'pending')
    const rows = await q.execute()
    const routes = await this.store.db.selectFrom('routes').selectAll().execute()
    return rows.map((r) => ({
      identity: r.identity,
      virtualAddress: intToIpSafe(Number(r.virtual_address)),
      hostname: r.hostname,
      state: r.state,
      tags: JSON.parse(r.tags),
      enrolledAt: r.enrolled_at,
      lastSeenAt: r.last_seen_at,
      endpoint: r.endpoint,
      allowGateway: r.allow_gateway === 1,
      routes: routes.filter((x) => x.system_id === r.id).map((x) => ({ cidr: x.cidr, approved: x.approved === 1, source: x.source })),
    }))
  }

  /** approve | decline | disable | enable | remove, for several systems in one transaction. */
  async setState(
    verb: 'approve' | 'decline' | 'disable' | 'enable' | 'remove',
    ids: string[],
  ): Promise<Array<{ identity: string; state: string }>> {
    if (!ids.length) throw usage(`name at least one system to ${verb}`)
    return this.store.write({ actor: this.actor, action: `system.${verb}`, target: ids.join(',') }, async (trx) => {
      const out: Array<{ identity: string; state: string }> = []
      for (const which of ids) {
        const s = await this.findSystem(which, trx)
        if (verb === 'decline' && s.state !== 'pending')
          throw usage(`${s.identity} is not awaiting approval (it is ${s.state}); use remove`)
        if (verb === 'approve' && s.state === 'disabled') throw usage(`${s.identity} is disabled; use enable`)
        if (verb === 'decline' || verb === 'remove') {
          const row = await trx.selectFrom('systems').select('last_hello_ts').where('id', '=', s.id).executeTakeFirstOrThrow()
          await trx
            .insertInto('hello_floors')
            .values({ public_key: s.publicKey, last_hello_ts: row.last_hello_ts })
            .onConflict((oc) => oc.column('public_key').doUpdateSet({ last_hello_ts: row.last_hello_ts }))
            .execute()
          await trx.deleteFrom('routes').where('system_id', '=', s.id).execute()
          await trx.deleteFrom('systems').where('id', '=', s.id).execute()
          out.push({ identity: s.identity, state: 'removed' })
          continue
        }
        const state = verb === 'disable' ? 'disabled' : 'approved'
        await trx
          .updateTable('systems')
          .set(verb === 'approve' ? { state, approved_at: new Date().toISOString(), approved_by: this.actor } : { state })
          .where('id', '=', s.id)
          .execute()
        out.push({ identity: s.identity, state })
      }
      return out
    })
  }

  async setTags(
    which: string,
    tags: string[],
    dryRun = false,
  ): Promise<{ identity: string; tags: string[]; opened: string[]; closed: string[] }> {
    const s = await this.findSystem(which)
    const before = await this.model()
    const after = new HubModel(
      [...before.systems.values()].map((x) => (x.id === s.id ? { ...x, tags } : x)),
      before.policies,
      routesOfModel(before),
    )
    const d = pairDiff(before, after)
    if (!dryRun)
      await this.store.write(
        { actor: this.actor, action: 'system.tags', target: s.identity, details: { from: s.tags, to: tags } },
        async (trx) => {
          await trx
            .updateTable('systems')
            .set({ tags: JSON.stringify(tags) })
            .where('id', '=', s.id)
            .execute()
        },
      )
    return { identity: s.identity, tags, ...d }
  }

  // ------------------------------------------------------------ policies

  async listPolicies(): Promise<PolicyRow[]> {
    return (await this.model()).policies
  }

  private async findPolicy(which: string): Promise<PolicyRow> {
    const all = await this.listPolicies()
    const p = all.find((x) => x.description === which) ?? all.find((x) => String(x.id) === which)
    if (!p) throw notFound(`no policy "${which}" (see \`enclave hub policy list\`)`)
    return p
  }

  private async checkBody(b: PolicyBody): Promise<void> {
    if (!b.SenderTags.length) throw usage('--senders: name at least one tag')
    if (!b.Acls.length) throw usage('--acl: give at least one, e.g. --acl icmp --acl tcp:22')
    if (!b.Gateway && !b.ReceiverTags?.length) throw usage('give --receivers <tags> or --gateway <identity>:<cidr>')
    if (b.Gateway && b.ReceiverTags?.length) throw usage('--receivers and --gateway exclude each other')
    if (b.Gateway) await this.findSystem(b.Gateway.Identity)
  }

  /** Writes (or with dryRun only computes) a policy; returns the pairs it opens and closes. */
  async putPolicy(
    description: string,
    body: PolicyBody | null,
    o: { create?: boolean; enabled?: boolean; dryRun?: boolean },
  ): Promise<{ description: string; opened: string[]; closed: string[]; dryRun: boolean }> {
    const before = await this.model()
    const existing = before.policies.find((p) => p.description === description)
    if (o.create && existing) throw usage(`a policy named "${description}" exists; use \`enclave hub policy update\``)
    if (!o.create && !existing) throw notFound(`no policy "${description}" (see \`enclave hub policy list\`)`)
    if (body) await this.checkBody(body)
    const next: PolicyRow = {
      id: existing?.id ?? -1,
      description,
      enabled: o.enabled ?? existing?.enabled ?? true,
      body: body ?? (existing as PolicyRow).body,
    }
    const policies = existing ? before.policies.map((p) => (p.id === existing.id ? next : p)) : [...before.policies, next]
    const after = new HubModel([...before.systems.values()], policies, routesOfModel(before))
    const d = pairDiff(before, after)
    if (!o.dryRun)
      await this.store.write(
        { actor: this.actor, action: o.create ? 'policy.create' : 'policy.update', target: description, details: next },
        async (trx, rev) => {
          if (existing)
            await trx
              .updateTable('policies')
              .set({ body: JSON.stringify(next.body), enabled: next.enabled ? 1 : 0, updated_rev: rev })
              .where('id', '=', existing.id)
              .execute()
          else
            await trx
              .insertInto('policies')
              .values({ description, enabled: next.enabled ? 1 : 0, body: JSON.stringify(next.body), updated_rev: rev })
              .execute()
        },
      )
    return { description, ...d, dryRun: !!o.dryRun }
  }

  async deletePolicy(which: string, dryRun = false): Promise<{ description: string; opened: string[]; closed: string[]; dryRun: boolean }> {
    const p = await this.findPolicy(which)
    const before = await this.model()
    const after = new HubModel(
      [...before.systems.values()],
      before.policies.filter((x) => x.id !== p.id),
      routesOfModel(before),
    )
    const d = pairDiff(before, after)
    if (!dryRun)
      await this.store.write({ actor: this.actor, action: 'policy.delete', target: p.description, details: p.body }, async (trx) => {
        await trx.deleteFrom('policies').where('id', '=', p.id).execute()
      })
    return { description: p.description, ...d, dryRun }
  }

  // ------------------------------------------------------------ routes

  async listRoutes(o: { pending?: boolean } = {}): Promise<Array<{ identity: string; cidr: string; source: string; approved: boolean }>> {
    const m = await this.model()
    const out: Array<{ identity: string; cidr: string; source: string; approved: boolean }> = []
    for (const s of m.systems.values())
      for (const r of m.routesOf(s.id))
        if (!o.pending || !r.approved) out.push({ identity: s.identity, cidr: r.cidr, source: r.source, approved: r.approved })
    return out
  }

  async approveRoute(which: string, cidrIn: string): Promise<{ identity: string; cidr: string; approved: true }> {
    const cidr = parseRoute(cidrIn)
    const s = await this.findSystem(which)
    const r = await this.store.db.selectFrom('routes').selectAll().where('system_id', '=', s.id).where('cidr', '=', cidr).executeTakeFirst()
    if (!r) throw notFound(`${s.identity} does not advertise ${cidr} (add it with \`enclave hub route add ${s.identity} ${cidr}\`)`)
    await this.store.write({ actor: this.actor, action: 'route.approve', target: `${s.identity} ${cidr}` }, async (trx) => {
      await trx.updateTable('routes').set({ approved: 1 }).where('system_id', '=', s.id).where('cidr', '=', cidr).execute()
    })
    return { identity: s.identity, cidr, approved: true }
  }

  async addRoute(which: string, cidrIn: string): Promise<{ identity: string; cidr: string; approved: true }> {
    const cidr = parseRoute(cidrIn)
    const s = await this.findSystem(which)
    await this.store.write({ actor: this.actor, action: 'route.add', target: `${s.identity} ${cidr}` }, async (trx) => {
      await trx
        .insertInto('routes')
        .values({ system_id: s.id, cidr, source: 'admin', approved: 1 })
        .onConflict((oc) => oc.columns(['system_id', 'cidr']).doUpdateSet({ approved: 1 }))
        .execute()
    })
    return { identity: s.identity, cidr, approved: true }
  }

  async removeRoute(which: string, cidrIn: string): Promise<{ identity: string; cidr: string; removed: true }> {
    const cidr = parseRoute(cidrIn)
    const s = await this.findSystem(which)
    const r = await this.store.db.selectFrom('routes').selectAll().where('system_id', '=', s.id).where('cidr', '=', cidr).executeTakeFirst()
    if (!r) throw notFound(`${s.identity} has no route ${cidr}`)
    await this.store.write({ actor: this.actor, action: 'route.remove', target: `${s.identity} ${cidr}` }, async (trx) => {
      await trx.deleteFrom('routes').where('system_id', '=', s.id).where('cidr', '=', cidr).execute()
    })
    return { identity: s.identity, cidr, removed: true }
  }

  // ------------------------------------------------------------ audit

  /**
   * The latest `limit` entries, oldest first; `actor` matches the actor exactly or its user part
   * (`alice` finds `alice@portal`), `target` a system, key or policy named in the target, `q` any
   * substring of the action or target.
   */
  async auditLog(
    limit = 100,
    f: { actor?: string; target?: string; q?: string } = {},
  ): Promise<Array<{ at: string; rev: number; actor: string; action: string; target: string; details: unknown }>> {
    const actor = f.actor?.trim().toLowerCase()
    const target = f.target?.trim().toLowerCase()
    const q = f.q?.trim().toLowerCase()
    const keep = (r: { actor: string; action: string; target: string }) =>
      (!actor || r.actor.toLowerCase() === actor || r.actor.toLowerCase().startsWith(`${actor}@`)) &&
      (!target || r.target.toLowerCase().includes(target)) &&
      (!q || r.action.toLowerCase().includes(q) || r.target.toLowerCase().includes(q))
    // Newest first, a page at a time, until `limit` entries match (at most 100,000 rows read).
    const rows: Array<{ id: number; at: string; rev: number; actor: string; action: string; target: string; details: string }> = []
    let before: number | undefined
    for (let read = 0; rows.length < limit && read < 100_000; ) {
      let q = this.store.db.selectFrom('audit').selectAll()
      // (No bound on the first page: PostgreSQL's integer id refuses a bound past 2^31.)
      if (before !== undefined) q = q.where('id', '<', before)
      const page = await q.orderBy('id', 'desc').limit(1000).execute()
      if (!page.length) break
      read += page.length
      before = page[page.length - 1].id
      for (const r of page) if (rows.length < limit && keep(r)) rows.push(r)
    }
    return rows
      .reverse()
      .map((r) => ({ at: r.at, rev: r.rev, actor: r.actor, action: r.action, target: r.target, details: JSON.parse(r.details) }))
  }
}

async function bumpRevision(trx: Tx): Promise<number> {
  const { sql } = await import('kysely')
  await sql`update meta set value = cast(cast(value as integer) + 1 as text) where key = 'rev'`.execute(trx)
  return Number((await trx.selectFrom('meta').select('value').where('key', '=', 'rev').executeTakeFirstOrThrow()).value)
}

function routesOfModel(m: HubModel): RouteRow[] {
  return [...m.systems.keys()].flatMap((id) => m.routesOf(id))
}

function pairDiff(a: HubModel, b: HubModel): { opened: string[]; closed: string[] } {
  const x = a.reachPairs()
  const y = b.reachPairs()
  return { opened: [...y].filter((p) => !x.has(p)).sort(), closed: [...x].filter((p) => !y.has(p)).sort() }
}

function intToIpSafe(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}
