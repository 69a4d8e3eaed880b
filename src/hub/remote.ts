/**
 * The CLI's remote mode (`enclave hub … --hub-api <url>`, issue 21): the same methods the commands call
 * on HubAdmin, each one request to the hub's JSON admin API (src/hub/portal/api.ts) with a bearer token.
 * Bodies use the CLI's field names and forms (tags comma-separated, `acl` as `tcp:22`), so the hub
 * validates them with the CLI's own functions and a mistake reads the same either way.
 *
 * An API error `{"error":{"code","message"}}` becomes an EnclaveError with the same message and the
 * CLI's exit code (2 bad input, 3 authentication or role, 5 not found, 1 otherwise); a hub that cannot
 * be reached is one line naming the URL and the reason.
 */
import { EnclaveError } from '../errors.js'
import type { HubAdmin } from './admin.js'
import type { Role, TokenInfo } from './auth.js'
import type { PolicyBody } from './model.js'

/** What the `enclave hub` commands call: HubAdmin on the hub host, RemoteAdmin through the API. */
export type HubAdminApi = Pick<
  HubAdmin,
  | 'createKey'
  | 'listKeys'
  | 'revokeKey'
  | 'listSystems'
  | 'setState'
  | 'setTags'
  | 'listPolicies'
  | 'putPolicy'
  | 'deletePolicy'
  | 'listRoutes'
  | 'approveRoute'
  | 'addRoute'
  | 'removeRoute'
  | 'auditLog'
>

/** API tokens, with the acting user already known (HubAuth's methods take the actor first). */
export interface HubTokensApi {
  createToken(description: string, o?: { role?: Role; forMs?: number }): Promise<TokenInfo & { token: string }>
  listTokens(): Promise<TokenInfo[]>
  revokeToken(which: string): Promise<TokenInfo>
}

/** The exit code of an API error code, as the same error has on the hub host. */
export function exitCodeOf(code: string): number {
  switch (code) {
    case 'EUSAGE':
      return 2
    case 'ENOTFOUND':
      return 5
    case 'EROLE':
    case 'EAUTH':
      return 3
    default:
      return 1
  }
}

const LOOPBACK = /^(127(?:\.\d{1,3}){3}|::1|\[::1\]|localhost)$/i

/**
 * The API's base URL (`…/api/v1`) from what the user gave (`http://host:8444` or `…/api/v1`), and a
 * warning when it is plain HTTP to another host (the token would cross the network unencrypted).
 */
export function apiBase(given: string): { base: string; warning?: string } {
  let u: URL
  try {
    u = new URL(given.trim())
  } catch {
    throw new EnclaveError('EUSAGE', `--hub-api "${given}": not a URL; use e.g. https://hub.example.com or http://127.0.0.1:8444`, 2)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new EnclaveError('EUSAGE', `--hub-api "${given}": use an http:// or https:// URL`, 2)
  if (u.username || u.password)
    throw new EnclaveError('EUSAGE', `--hub-api "${given}": no credentials in the URL; the token comes from $ENCLAVE_HUB_TOKEN`, 2)
  if (u.search || u.hash) throw new EnclaveError('EUSAGE', `--hub-api "${given}": give the portal's address without a query`, 2)
  const path = u.pathname.replace(/\/+$/, '')
  const base = `${u.origin}${path.endsWith('/api/v1') ? path : `${path}/api/v1`}`
  const warning =
    u.protocol === 'http:' && !LOOPBACK.test(u.hostname)
      ? `Warning: ${u.origin} is plain HTTP to another host: the API token and the answers cross the network unencrypted unless the path is already encrypted (an SSH tunnel, the overlay). Put the portal behind a TLS proxy and use https://.`
      : undefined
  return { base, warning }
}

/** A token as given (one line, no spaces); its form is the hub's to judge (ehub_…). */
export function checkTokenText(t: string | undefined): string {
  const token = (t ?? '').trim()
  if (!token)
    throw new EnclaveError(
      'EAUTH',
      'no API token: set $ENCLAVE_HUB_TOKEN or pipe it with --token-stdin (create one on the hub host with `enclave hub token create`)',
      3,
    )
  if (token.length > 256 || !/^[\x21-\x7e]+$/.test(token))
    throw new EnclaveError('EAUTH', 'the API token is malformed: one line of printable characters, ehub_…', 3)
  return token
}

/** The CLI form of a policy body (the inverse of policyBody in src/hub/policy-flags.ts). */
export function policyFields(b: PolicyBody): Record<string, unknown> {
  return {
    senders: b.SenderTags.join(','),
    ...(b.Gateway
      ? { gateway: b.Gateway.Routes.map((r) => `${b.Gateway?.Identity}:${r}`).join(',') }
      : { receivers: (b.ReceiverTags ?? []).join(',') }),
    acl: b.Acls.map((a) => (a.Ports ? `${a.Protocol.toLowerCase()}:${a.Ports}` : a.Protocol.toLowerCase())),
    ...(b.GatewayAllowedIpRanges?.length ? { 'allow-ip': b.GatewayAllowedIpRanges.map((r) => r.IpRange).join(',') } : {}),
  }
}

/** A duration in milliseconds as the API's `for` field (parseDuration's form). */
function forField(ms: number | undefined): string | undefined {
  if (ms === undefined) return undefined
  return `${Math.max(1, Math.round(ms / 1000))}s`
}

const seg = (s: string) => encodeURIComponent(s)

export interface RemoteOptions {
  /** The user's URL (http://host:8444 or …/api/v1). */
  url: string
  token: string
  timeoutMs?: number
  fetch?: typeof fetch
}

export class RemoteAdmin implements HubAdminApi, HubTokensApi {
  readonly base: string
  private readonly token: string
  private readonly timeoutMs: number
  private readonly fetchFn: typeof fetch

  constructor(o: RemoteOptions) {
    this.base = apiBase(o.url).base
    this.token = checkTokenText(o.token)
    this.timeoutMs = o.timeoutMs ?? 30_000
    this.fetchFn = o.fetch ?? fetch
  }

  /** One API call; its JSON answer, or the API's error as an EnclaveError. */
  async call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: Record<string, unknown>): Promise<T> {
    const url = `${this.base}${path}`
    let res: Response
    try {
      res = await this.fetchFn(url, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: 'application/json',
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        redirect: 'error',
        signal: AbortSignal.timeout(this.timeoutMs),
      })
    } catch (e) {
      throw new EnclaveError('EREMOTE', `cannot reach the hub API at ${this.base}: ${reason(e, this.timeoutMs)}`, 1)
    }
    let text: string
    try {
      text = await res.text()
    } catch (e) {
      throw new EnclaveError('EREMOTE', `cannot reach the hub API at ${this.base}: ${reason(e, this.timeoutMs)}`, 1)
    }
    let data: unknown
    try {
      data = JSON.parse(text)
    } catch {
      throw new EnclaveError(
        'EREMOTE',
        `the hub API at ${this.base} answered ${res.status} ${res.statusText} without JSON: is this the portal's address?`,
        1,
      )
    }
    if (!res.ok) {
      const err = (data as { error?: { code?: unknown; message?: unknown } })?.error
      const code = typeof err?.code === 'string' ? err.code : res.status === 401 ? 'EAUTH' : res.status === 403 ? 'EROLE' : 'EREMOTE'
      const message = typeof err?.message === 'string' ? err.message : `the hub API answered ${res.status} ${res.statusText}`
      throw new EnclaveError(code, message, exitCodeOf(code))
    }
    return data as T
  }

  // ------------------------------------------------------------ enrolment keys

  async createKey(
    description: string,
    o: { autoApprove?: boolean; uses?: number; tags?: string[]; forMs?: number; ephemeral?: boolean },
  ): ReturnType<HubAdmin['createKey']> {
    const r = await this.call<{ key: Awaited<ReturnType<HubAdmin['createKey']>> }>('POST', '/keys', {
      description,
      autoApprove: o.autoApprove,
      ephemeral: o.ephemeral,
      uses: o.uses,
      tags: (o.tags ?? []).join(','),
      for: forField(o.forMs),
    })
    return r.key
  }

  async listKeys(): ReturnType<HubAdmin['listKeys']> {
    return (await this.call<{ keys: Awaited<ReturnType<HubAdmin['listKeys']>> }>('GET', '/keys')).keys
  }

  async revokeKey(which: string): ReturnType<HubAdmin['revokeKey']> {
    return (await this.call<{ key: Awaited<ReturnType<HubAdmin['revokeKey']>> }>('POST', `/keys/${seg(which)}/revoke`, {})).key
  }

  // ------------------------------------------------------------ systems

  async listSystems(o: { pending?: boolean } = {}): ReturnType<HubAdmin['listSystems']> {
    return (await this.call<{ systems: Awaited<ReturnType<HubAdmin['listSystems']>> }>('GET', `/systems${o.pending ? '?pending=1' : ''}`))
      .systems
  }

  async setState(verb: Parameters<HubAdmin['setState']>[0], ids: string[]): ReturnType<HubAdmin['setState']> {
    return (await this.call<{ systems: Awaited<ReturnType<HubAdmin['setState']>> }>('POST', `/systems/${verb}`, { identities: ids }))
      .systems
  }

  async setTags(which: string, tags: string[], dryRun = false): ReturnType<HubAdmin['setTags']> {
    const r = await this.call<Awaited<ReturnType<HubAdmin['setTags']>> & { dryRun?: boolean }>('PUT', `/systems/${seg(which)}/tags`, {
      tags: tags.join(','),
      dryRun,
    })
    return { identity: r.identity, tags: r.tags, opened: r.opened, closed: r.closed }
  }

  // ------------------------------------------------------------ policies

  async listPolicies(): ReturnType<HubAdmin['listPolicies']> {
    return (await this.call<{ policies: Awaited<ReturnType<HubAdmin['listPolicies']>> }>('GET', '/policies')).policies
  }

  async putPolicy(
    description: string,
    body: PolicyBody | null,
    o: { create?: boolean; enabled?: boolean; dryRun?: boolean },
  ): ReturnType<HubAdmin['putPolicy']> {
    if (o.create) {
      if (!body) throw new EnclaveError('EUSAGE', 'a new policy needs --senders, --receivers or --gateway and --acl', 2)
      return this.call('POST', '/policies', { description, ...policyFields(body), disabled: o.enabled === false, dryRun: !!o.dryRun })
    }
    return this.call('PUT', `/policies/${seg(description)}`, {
      ...(body ? policyFields(body) : {}),
      ...(o.enabled === undefined ? {} : { enabled: o.enabled }),
      dryRun: !!o.dryRun,
    })
  }

  async deletePolicy(which: string, dryRun = false): ReturnType<HubAdmin['deletePolicy']> {
    return this.call('DELETE', `/policies/${seg(which)}${dryRun ? '?dryRun=1' : ''}`)
  }

  // ------------------------------------------------------------ routes

  async listRoutes(o: { pending?: boolean } = {}): ReturnType<HubAdmin['listRoutes']> {
    return (await this.call<{ routes: Awaited<ReturnType<HubAdmin['listRoutes']>> }>('GET', `/routes${o.pending ? '?pending=1' : ''}`))
      .routes
  }

  async approveRoute(which: string, cidr: string): ReturnType<HubAdmin['approveRoute']> {
    return (await this.call<{ route: Awaited<ReturnType<HubAdmin['approveRoute']>> }>('POST', '/routes/approve', { identity: which, cidr }))
      .route
  }

  async addRoute(which: string, cidr: string): ReturnType<HubAdmin['addRoute']> {
    return (await this.call<{ route: Awaited<ReturnType<HubAdmin['addRoute']>> }>('POST', '/routes/add', { identity: which, cidr })).route
  }

  async removeRoute(which: string, cidr: string): ReturnType<HubAdmin['removeRoute']> {
    return (await this.call<{ route: Awaited<ReturnType<HubAdmin['removeRoute']>> }>('POST', '/routes/remove', { identity: which, cidr }))
      .route
  }

  // ------------------------------------------------------------ audit

  async auditLog(limit = 100, f: { actor?: string; target?: string; q?: string } = {}): ReturnType<HubAdmin['auditLog']> {
    const q = new URLSearchParams({ limit: String(limit) })
    if (f.actor) q.set('actor', f.actor)
    if (f.target) q.set('target', f.target)
    if (f.q) q.set('q', f.q)
    return (await this.call<{ entries: Awaited<ReturnType<HubAdmin['auditLog']>> }>('GET', `/audit?${q}`)).entries
  }

  // ------------------------------------------------------------ API tokens

  async createToken(description: string, o: { role?: Role; forMs?: number } = {}): Promise<TokenInfo & { token: string }> {
    return (
      await this.call<{ token: TokenInfo & { token: string } }>('POST', '/tokens', {
        description,
        role: o.role ?? 'admin',
        for: forField(o.forMs),
      })
    ).token
  }

  async listTokens(): Promise<TokenInfo[]> {
    return (await this.call<{ tokens: TokenInfo[] }>('GET', '/tokens')).tokens
  }

  async revokeToken(which: string): Promise<TokenInfo> {
    // A whole token goes by its id: its secret must not end up in a URL (a proxy's access log).
    const id = /^ehub_([0-9a-f]{10})_/.exec(which.trim())?.[1] ?? which
    return (await this.call<{ token: TokenInfo }>('POST', `/tokens/${seg(id)}/revoke`, {})).token
  }
}

/** Why a fetch failed, in a few words (the cause's code and message, not "fetch failed"). */
function reason(e: unknown, timeoutMs: number): string {
  const err = e as Error & { cause?: Error & { code?: string } }
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return `no answer within ${Math.round(timeoutMs / 1000)} s`
  const c = err?.cause
  // OpenSSL's messages carry its internal error stack: the code says enough.
  if (c?.code && c.message && /:error:/.test(c.message)) return `TLS failed (${c.code})`
  if (c?.code && c.message) return c.message.includes(c.code) ? c.message : `${c.code} ${c.message}`
  if (c?.message) return c.message
  return err?.message ?? String(e)
}
