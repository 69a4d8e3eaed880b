/**
 * The hub's JSON admin API, `/api/v1/…`, with bearer tokens. Every operation calls the same HubAdmin and
 * HubAuth methods as `enclave hub …` on the hub host, and bodies take the CLI's flag names and forms
 * (tags comma-separated, `acl` as `tcp:22`), so a mistake gets the CLI's one-line error. The CLI's remote
 * mode (`--hub-api`) is a client of exactly these operations (src/hub/remote.ts).
 */
import { EnclaveError } from '../../errors.js'
import { type HubAdmin, parseDuration, parseTags, usage } from '../admin.js'
import type { HubAuth, Principal, Role } from '../auth.js'
import { checkRole } from '../auth.js'
import { policyBody } from '../policy-flags.js'
import type { LiveInfo } from './live.js'
import { systemDetail, tagIndex } from './live.js'

export interface ApiContext {
  principal: Principal
  admin: HubAdmin
  auth: HubAuth
  live: () => LiveInfo
  params: Record<string, string>
  query: URLSearchParams
  body: Record<string, unknown>
}

export interface ApiOp {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  /** `/systems/:id/tags` style; parameters match one path segment. */
  path: string
  /** The least role that may call it (a viewer reads; only an admin changes anything). */
  role: Role
  run(c: ApiContext): Promise<unknown>
}

// ------------------------------------------------------------ body fields (one-line errors naming the field)

export function str(b: Record<string, unknown>, k: string, required = false): string | undefined {
  const v = b[k]
  if (v === undefined || v === null) {
    if (required) throw usage(`"${k}" is required`)
    return undefined
  }
  if (typeof v !== 'string') throw usage(`"${k}" must be a string`)
  if (v.length > 4096) throw usage(`"${k}" is longer than 4,096 characters`)
  return v
}

/** A list given as an array of strings or one comma-separated string (the CLI's form). */
export function list(b: Record<string, unknown>, k: string): string | undefined {
  const v = b[k]
  if (Array.isArray(v)) {
    if (v.length > 1024 || !v.every((x) => typeof x === 'string')) throw usage(`"${k}" must be a list of at most 1,024 strings`)
    return v.join(',')
  }
  return str(b, k)
}

export function strArray(b: Record<string, unknown>, k: string): string[] | undefined {
  const v = b[k]
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string') return [v]
  if (!Array.isArray(v) || v.length > 1024 || !v.every((x) => typeof x === 'string'))
    throw usage(`"${k}" must be a list of at most 1,024 strings`)
  return v as string[]
}

export function bool(b: Record<string, unknown>, k: string): boolean | undefined {
  const v = b[k]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'boolean') throw usage(`"${k}" must be true or false`)
  return v
}

export function int(b: Record<string, unknown>, k: string, min: number): number | undefined {
  const v = b[k]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 2 ** 31) throw usage(`"${k}" must be a whole number, ${min} or more`)
  return v
}

function needAdmin(c: ApiContext, dryRun: boolean | undefined): void {
  if (!dryRun && c.principal.role !== 'admin') throw new EnclaveError('EROLE', 'a viewer changes nothing: this needs an admin token', 3)
}

/** The policy fields of a body, in the CLI's flag names (`allow-ip` also as `allowIp`). */
export function policyInput(b: Record<string, unknown>) {
  return {
    senders: list(b, 'senders'),
    receivers: list(b, 'receivers'),
    gateway: list(b, 'gateway'),
    acl: strArray(b, 'acl'),
    'allow-ip': list(b, 'allow-ip') ?? list(b, 'allowIp'),
  }
}

const STATE_VERBS = ['approve', 'decline', 'disable', 'enable', 'remove'] as const

export const API_OPS: ApiOp[] = [
  {
    method: 'GET',
    path: '/whoami',
    role: 'viewer',
    run: async (c) => ({ name: c.principal.name, role: c.principal.role, kind: c.principal.kind }),
  },

  // systems
  {
    method: 'GET',
    path: '/systems',
    role: 'viewer',
    run: async (c) => {
      const live = c.live()
      const systems = await c.admin.listSystems({ pending: c.query.get('pending') === '1' || c.query.get('pending') === 'true' })
      return { systems: systems.map((s) => ({ ...s, online: live.online.has(s.identity), path: live.path(s.identity) })) }
    },
  },
  {
    method: 'GET',
    path: '/systems/:id',
    role: 'viewer',
    run: async (c) => ({ system: await systemDetail(c.admin, c.live(), c.params.id) }),
  },
  ...STATE_VERBS.map(
    (verb): ApiOp => ({
      method: 'POST',
      path: `/systems/${verb}`,
      role: 'admin',
      run: async (c) => {
        const ids = strArray(c.body, 'identities')
        if (!ids?.length) throw usage(`"identities": name at least one system to ${verb}`)
        return { systems: await c.admin.setState(verb, ids) }
      },
    }),
  ),
  {
    method: 'PUT',
    path: '/systems/:id/tags',
    role: 'viewer',
    run: async (c) => {
      const dryRun = bool(c.body, 'dryRun')
      needAdmin(c, dryRun)
      const tags = list(c.body, 'tags')
      if (tags === undefined) throw usage('"tags" is required (an empty string for none)')
      return { ...(await c.admin.setTags(c.params.id, parseTags(tags), dryRun)), dryRun: !!dryRun }
    },
  },

  // enrolment keys
  { method: 'GET', path: '/keys', role: 'viewer', run: async (c) => ({ keys: await c.admin.listKeys() }) },
  {
    method: 'POST',
    path: '/keys',
    role: 'admin',
    run: async (c) => {
      const b = c.body
      const ephemeral = bool(b, 'ephemeral')
      const autoApprove = bool(b, 'autoApprove')
      if (ephemeral && autoApprove) throw usage('--ephemeral keys approve automatically; drop --auto-approve')
      const forS = str(b, 'for')
      return {
        key: await c.admin.createKey(str(b, 'description', true) as string, {
          autoApprove,
          ephemeral,
          uses: int(b, 'uses', 1),
          tags: parseTags(list(b, 'tags')),
          forMs: forS ? parseDuration(forS) : undefined,
        }),
      }
    },
  },
  { method: 'POST', path: '/keys/:id/revoke', role: 'admin', run: async (c) => ({ key: await c.admin.revokeKey(c.params.id) }) },

  // policies
  { method: 'GET', path: '/policies', role: 'viewer', run: async (c) => ({ policies: await c.admin.listPolicies() }) },
  {
    method: 'POST',
    path: '/policies',
    role: 'viewer',
    run: async (c) => {
      const dryRun = bool(c.body, 'dryRun')
      needAdmin(c, dryRun)
      const description = str(c.body, 'description', true) as string
      const body = policyBody(policyInput(c.body))
      return c.admin.putPolicy(description, body, { create: true, enabled: !bool(c.body, 'disabled'), dryRun })
    },
  },
  {
    method: 'PUT',
    path: '/policies/:name',
    role: 'viewer',
    run: async (c) => {
      const dryRun = bool(c.body, 'dryRun')
      needAdmin(c, dryRun)
      const f = policyInput(c.body)
      const body = f.senders || f.acl || f.receivers || f.gateway ? policyBody(f) : null
      const enabled = bool(c.body, 'enabled')
      return c.admin.putPolicy(c.params.name, body, { enabled, dryRun })
    },
  },
  {
    method: 'DELETE',
    path: '/policies/:name',
    role: 'viewer',
    run: async (c) => {
      const dryRun = c.query.get('dryRun') === '1' || c.query.get('dryRun') === 'true'
      needAdmin(c, dryRun)
      return c.admin.deletePolicy(c.params.name, dryRun)
    },
  },

  // routes
  {
    method: 'GET',
    path: '/routes',
    role: 'viewer',
    run: async (c) => ({
      routes: await c.admin.listRoutes({ pending: c.query.get('pending') === '1' || c.query.get('pending') === 'true' }),
    }),
  },
  ...(['add', 'approve', 'remove'] as const).map(
    (verb): ApiOp => ({
      method: 'POST',
      path: `/routes/${verb}`,
      role: 'admin',
      run: async (c) => {
        const id = str(c.body, 'identity', true) as string
        const cidr = str(c.body, 'cidr', true) as string
        return {
          route: await (verb === 'add'
            ? c.admin.addRoute(id, cidr)
            : verb === 'approve'
              ? c.admin.approveRoute(id, cidr)
              : c.admin.removeRoute(id, cidr)),
        }
      },
    }),
  ),

  // tags, audit
  { method: 'GET', path: '/tags', role: 'viewer', run: async (c) => ({ tags: await tagIndex(c.admin) }) },
  {
    method: 'GET',
    path: '/audit',
    role: 'viewer',
    run: async (c) => {
      const limit = Number(c.query.get('limit') ?? 100)
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw usage('"limit" must be a whole number from 1 to 10,000')
      return {
        entries: await c.admin.auditLog(limit, {
          actor: c.query.get('actor') ?? undefined,
          target: c.query.get('target') ?? undefined,
          q: c.query.get('q') ?? undefined,
        }),
      }
    },
  },

  // API tokens (admins only: a viewer token cannot mint an admin one)
  { method: 'GET', path: '/tokens', role: 'admin', run: async (c) => ({ tokens: await c.auth.listTokens() }) },
  {
    method: 'POST',
    path: '/tokens',
    role: 'admin',
    run: async (c) => {
      const forS = str(c.body, 'for')
      const role = str(c.body, 'role')
      return {
        token: await c.auth.createToken(c.principal.actor, str(c.body, 'description', true) as string, {
          role: role ? checkRole(role) : 'admin',
          forMs: forS ? parseDuration(forS) : undefined,
        }),
      }
    },
  },
  {
    method: 'POST',
    path: '/tokens/:id/revoke',
    role: 'admin',
    run: async (c) => ({ token: await c.auth.revokeToken(c.principal.actor, c.params.id) }),
  },
]

/** The operation and its parameters for a method and a path below /api/v1, or why there is none. */
export function matchOp(method: string, path: string): { op: ApiOp; params: Record<string, string> } | 'method' | null {
  const segs = path.split('/').filter(Boolean)
  let pathMatched = false
  for (const op of API_OPS) {
    const want = op.path.split('/').filter(Boolean)
    if (want.length !== segs.length) continue
    const params: Record<string, string> = {}
    let ok = true
    for (let i = 0; i < want.length; i++) {
      if (want[i].startsWith(':')) {
        try {
          params[want[i].slice(1)] = decodeURIComponent(segs[i])
        } catch {
          ok = false
          break
        }
      } else if (want[i] !== segs[i]) {
        ok = false
        break
      }
    }
    if (!ok) continue
    pathMatched = true
    if (op.method === method) return { op, params }
  }
  return pathMatched ? 'method' : null
}

/** HTTP status of an error thrown by a handler. */
export function errorStatus(e: unknown): number {
  if (!(e instanceof EnclaveError)) return 500
  switch (e.code) {
    case 'EUSAGE':
      return 400
    case 'ENOTFOUND':
      return 404
    case 'EROLE':
      return 403
    case 'EEXIST':
      return 409
    default:
      return 400
  }
}
