/**
 * The hub's portal and admin API on their own HTTP listener, 127.0.0.1:8444 by default (hub.json
 * `Portal.Listen`), apart from the agents' listener: put a TLS proxy in front to reach it from elsewhere.
 *
 * - `/api/v1/…`: JSON, `Authorization: Bearer ehub_…` only (cookies never authenticate it, so it needs
 *   no CSRF token). src/hub/portal/api.ts.
 * - Everything else: server-rendered pages (src/hub/portal/pages.ts) that work without JavaScript. A
 *   session cookie (HttpOnly, SameSite=Strict, Secure and `__Host-` behind HTTPS); every POST carries the
 *   session's CSRF token, is refused for a viewer, and answers with a redirect (post/redirect/get).
 *
 * Every response says no-store, forbids framing and scripts (CSP), and sends no referrer off the site.
 */
import crypto from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import { EnclaveError } from '../../errors.js'
import type { AgentLogger as Logger } from '../../log/logger.js'
import { HubAdmin } from '../admin.js'
import { HubAuth } from '../auth.js'
import { sourceKey } from '../source-key.js'
import { type HubStore, isDatabaseDown } from '../store.js'
import { errorStatus, matchOp } from './api.js'
import { CSS, type Html } from './html.js'
import { type LiveInfo, NO_LIVE } from './live.js'
import { loginPage, renderPage } from './pages.js'
import type { Flash, PageRequest, PageResult } from './types.js'

export const DEFAULT_PORTAL_LISTEN = '127.0.0.1:8444'
export const MAX_BODY = 64 * 1024
/** What an admin reads while PostgreSQL (or the SQLite file) cannot be reached. */
export const DB_DOWN = "the hub's database is unreachable: changes and enrolments wait until it is back (agents' sessions and relays go on)"
/** Open connections one source address (IPv6 per /64) may hold, unless behind a trusted proxy. */
export const MAX_CONNECTIONS_PER_SOURCE = 64

export interface PortalConfig {
  /** "127.0.0.1:8444" by default; "off" turns the portal and API off. */
  Listen?: string
  /** Behind a TLS proxy: trust its X-Forwarded-For (client address) and X-Forwarded-Proto (Secure cookie). */
  TrustProxy?: boolean
  /**
   * Host names the portal answers to besides IP addresses and localhost (the name a TLS proxy passes
   * on): a request for any other name is refused, so a web page cannot reach the portal by DNS rebinding.
   */
  Hosts?: string[]
}

export interface PortalOptions {
  store: HubStore
  log: Logger
  host: string
  port: number
  trustProxy?: boolean
  /** Portal.Hosts. */
  hosts?: string[]
  live?: () => LiveInfo
  /** What agents enrol with: the hub's URL and public key (for the join command). */
  hub?: () => { url: string; publicKey: string }
  now?: () => number
}

export type { Flash, PageRequest, PageResult } from './types.js'

const SECURITY_HEADERS: Record<string, string> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'same-origin',
  'content-security-policy':
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}

function parseCookies(h: string | undefined): Map<string, string> {
  const m = new Map<string, string>()
  for (const part of (h ?? '').split(';')) {
    const i = part.indexOf('=')
    if (i > 0) m.set(part.slice(0, i).trim(), part.slice(i + 1).trim())
  }
  return m
}

/** A local path to go back to (never another site: `//host` and `/\host` are refused). */
export function localPath(s: string | null | undefined, fallback = '/'): string {
  // Browsers drop tabs and newlines inside URLs and read "\\" as "/": "/\t/evil" would become "//evil".
  // Only printable ASCII (our own links are percent-encoded): Node refuses a Location past U+00FF.
  if (!s?.startsWith('/') || s.startsWith('//') || [...s].some((c) => c <= ' ' || c >= '\x7f' || c === '\\')) return fallback
  return s
}

export class PortalServer {
  readonly auth: HubAuth
  private server!: http.Server
  private readonly flashes = new Map<string, Flash>()
  /** Open connections per source address (sourceKey). */
  private readonly connections = new Map<string, number>()
  address = ''
  port = 0

  constructor(private readonly opts: PortalOptions) {
    this.auth = new HubAuth(opts.store, opts.now)
  }

  async start(): Promise<void> {
    this.server = http.createServer(
      { connectionsCheckingInterval: 1000, headersTimeout: 10_000, requestTimeout: 15_000, maxHeaderSize: 16 * 1024 },
      (req, res) => {
        for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v)
        this.handle(req, res).catch((e) => {
          if (res.headersSent) {
            res.destroy()
            return
          }
          const api = (req.url ?? '').startsWith('/api/')
          if (isDatabaseDown(e)) {
            this.opts.log.warn({ err: (e as Error).message }, 'portal request refused: the database is unreachable')
            if (api) return this.json(res, 503, { error: { code: 'EUNAVAILABLE', message: DB_DOWN } }, { 'retry-after': '5' })
            return this.text(res, 503, `${DB_DOWN[0].toUpperCase()}${DB_DOWN.slice(1)}.`, { 'retry-after': '5' })
          }
          this.opts.log.error({ err: (e as Error).message }, 'portal request failed')
          if (api) return this.json(res, 500, { error: { code: 'EINTERNAL', message: 'internal error (see the hub log)' } })
          this.text(res, 500, 'Internal error: see the hub log.')
        })
      },
    )
    this.server.maxConnections = 1024
    // Slowloris: one address would otherwise hold all 1,024 (behind a proxy all come from it: its to limit).
    if (!this.opts.trustProxy)
      this.server.on('connection', (sock: net.Socket) => {
        const key = sourceKey(sock.remoteAddress ?? '')
        const n = this.connections.get(key) ?? 0
        if (n >= MAX_CONNECTIONS_PER_SOURCE) return sock.destroy()
        this.connections.set(key, n + 1)
        sock.once('close', () => {
          const left = (this.connections.get(key) ?? 1) - 1
          if (left > 0) this.connections.set(key, left)
          else this.connections.delete(key)
        })
      })
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.opts.port, this.opts.host, () => resolve())
    })
    const a = this.server.address() as net.AddressInfo
    this.address = a.address
    this.port = a.port
    this.opts.log.info({ listen: `${this.address}:${this.port}` }, 'hub portal and admin API listening')
  }

  async stop(): Promise<void> {
    if (!this.server) return
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
  }

  /**
   * The client's address: the socket's, or behind a trusted proxy the last X-Forwarded-For hop when it
   * is an IP address (a port after it is dropped); anything else is not an address to key limits on.
   */
  private client(req: http.IncomingMessage): string {
    const sock = req.socket.remoteAddress ?? ''
    if (!this.opts.trustProxy) return sock
    const xff = String(req.headers['x-forwarded-for'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
    const last = xff[xff.length - 1] ?? ''
    if (net.isIP(last)) return last
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d+\.\d+\.\d+\.\d+)):\d+$/.exec(last)
    const ip = m?.[1] ?? m?.[2] ?? ''
    return net.isIP(ip) ? ip : sock
  }

  private secure(req: http.IncomingMessage): boolean {
    return (
      !!this.opts.trustProxy &&
      String(req.headers['x-forwarded-proto'] ?? '')
        .split(',')[0]
        .trim() === 'https'
    )
  }

  private cookieName(req: http.IncomingMessage): string {
    return this.secure(req) ? '__Host-enclave_hub' : 'enclave_hub'
  }

  /**
   * The login form's CSRF cookie: `__Host-` behind HTTPS (Path=/ then), so that a sibling site of the
   * portal's domain cannot plant one and log the admin's browser into its own account.
   */
  private loginCookie(req: http.IncomingMessage): { name: string; path: string } {
    return this.secure(req) ? { name: '__Host-enclave_hub_login', path: '/' } : { name: 'enclave_hub_login', path: '/login' }
  }

  private cookie(req: http.IncomingMessage, name: string, value: string, maxAge: number | null, path = '/'): string {
    return `${name}=${value}; Path=${path}; HttpOnly; SameSite=Strict${this.secure(req) ? '; Secure' : ''}${maxAge === null ? '' : `; Max-Age=${maxAge}`}`
  }

  private text(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...headers })
    res.end(`${body}\n`)
  }

  private send(res: http.ServerResponse, status: number, page: Html, headers: Record<string, string | string[]> = {}): void {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', ...headers })
    res.end(page.s)
  }

  private json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers })
    res.end(`${JSON.stringify(body)}\n`)
  }

  private redirect(res: http.ServerResponse, to: string, headers: Record<string, string | string[]> = {}): void {
    res.writeHead(303, { location: localPath(to), ...headers })
    res.end()
  }

  /** The body, at most MAX_BODY bytes (null when larger). */
  private async body(req: http.IncomingMessage): Promise<string | null> {
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > MAX_BODY) return null
    const chunks: Buffer[] = []
    let n = 0
    for await (const c of req) {
      n += (c as Buffer).length
      if (n > MAX_BODY) return null
      chunks.push(c as Buffer)
    }
    return Buffer.concat(chunks).toString('utf8')
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://portal')
    } catch {
      this.text(res, 400, 'Bad request.')
      return
    }
    const path = url.pathname
    if (!this.hostAllowed(req.headers.host))
      return this.text(
        res,
        421,
        `This portal does not answer to the host name "${String(req.headers.host ?? '').slice(0, 100)}": add it to hub.json Portal.Hosts.`,
      )
    if (path === '/api/v1' || path.startsWith('/api/v1/')) return this.api(req, res, url)
    if (path === '/static/portal.css' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'max-age=3600' })
      res.end(CSS)
      return
    }
    if (path === '/healthz' && req.method === 'GET') return this.text(res, 200, 'ok')
    if (req.method !== 'GET' && req.method !== 'POST') return this.text(res, 405, 'Method not allowed.', { allow: 'GET, POST' })
    const method = req.method
    let form = new URLSearchParams()
    if (method === 'POST') {
      const ct = String(req.headers['content-type'] ?? '')
        .split(';')[0]
        .trim()
      if (ct !== 'application/x-www-form-urlencoded') return this.text(res, 415, 'Forms only (application/x-www-form-urlencoded).')
      const b = await this.body(req)
      if (b === null) return this.text(res, 413, 'The form is larger than 64 KiB.')
      form = new URLSearchParams(b)
    }
    const cookies = parseCookies(req.headers.cookie)
    if (path === '/login') return this.login(req, res, url, method, form, cookies)
    const session = await this.auth.session(cookies.get(this.cookieName(req)))
    if (!session) {
      if (method === 'GET') return this.redirect(res, `/login${path === '/' ? '' : `?next=${encodeURIComponent(path + url.search)}`}`)
      return this.text(res, 403, 'Not signed in (the session ended): log in again.')
    }
    if (method === 'POST') {
      if (!HubAuth.csrfMatches(session, form.get('_csrf'))) {
        this.opts.log.warn({ user: session.name, path }, 'portal form refused: missing or wrong CSRF token')
        return this.text(res, 403, 'Refused: the form did not carry this session’s CSRF token. Reload the page and try again.')
      }
      if (path === '/logout') {
        await this.auth.logout(session)
        return this.redirect(res, '/login', { 'set-cookie': this.cookie(req, this.cookieName(req), '', 0) })
      }
      if (session.role !== 'admin') return this.text(res, 403, 'Refused: a viewer changes nothing.')
    }
    const flash = this.flashes.get(session.idSha256)
    if (flash && method === 'GET') this.flashes.delete(session.idSha256)
    const admin = new HubAdmin(this.opts.store, session.actor)
    const r: PageRequest = {
      method,
      path,
      query: url.searchParams,
      form,
      session,
      admin,
      auth: this.auth,
      live: (this.opts.live ?? (() => NO_LIVE))(),
      hub: this.opts.hub?.() ?? { url: 'http://<hub>:8443', publicKey: '<hub public key>' },
      flash: method === 'GET' ? flash : undefined,
    }
    let out: PageResult
    try {
      out = await renderPage(r)
    } catch (e) {
      if (!(e instanceof EnclaveError) || isDatabaseDown(e)) throw e
      if (method === 'GET') return this.text(res, errorStatus(e), e.message)
      // A refused change goes back to the page it came from, with the CLI's one-line reason.
      this.flashes.set(session.idSha256, { kind: 'error', text: e.message })
      return this.redirect(res, this.back(req, path))
    }
    if (!out) return this.text(res, 404, 'No such page.')
    if ('redirect' in out) {
      if (out.flash) this.flashes.set(session.idSha256, out.flash)
      if (this.flashes.size > 10_000) this.flashes.clear()
      return this.redirect(res, out.redirect)
    }
    this.send(res, out.status ?? 200, out.html)
  }

  /** An IP address, localhost, or a name in Portal.Hosts (no Host header: HTTP/1.0, allowed). */
  private hostAllowed(h: string | undefined): boolean {
    if (h === undefined) return true
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+)(?::\d+)?$/.exec(h.trim())
    if (!m) return false
    const name = m[1].toLowerCase()
    if (name.startsWith('[') || net.isIP(name) || name === 'localhost') return true
    return (this.opts.hosts ?? []).some((x) => x.toLowerCase() === name)
  }

  /** Where a refused form goes back to: the page that sent it (same site only), else its own path. */
  private back(req: http.IncomingMessage, path: string): string {
    try {
      const ref = new URL(String(req.headers.referer ?? ''))
      if (ref.host === req.headers.host) return localPath(ref.pathname + ref.search, path)
    } catch {
      // no referer
    }
    return path
  }

  private async login(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL,
    method: 'GET' | 'POST',
    form: URLSearchParams,
    cookies: Map<string, string>,
  ): Promise<void> {
    const next = localPath(url.searchParams.get('next') ?? form.get('next'), '/')
    // Login CSRF: a random value in a cookie and in the form, compared (the session's token does not exist yet).
    const lc = this.loginCookie(req)
    const pre = cookies.get(lc.name)
    if (method === 'GET') {
      const token = pre && /^[A-Za-z0-9_-]{43}$/.test(pre) ? pre : crypto.randomBytes(32).toString('base64url')
      return this.send(res, 200, loginPage({ csrf: token, next }), {
        'set-cookie': this.cookie(req, lc.name, token, 3600, lc.path),
      })
    }
    const given = form.get('_csrf')
    if (!pre || !given || pre.length !== given.length || pre !== given)
      return this.text(res, 403, 'Refused: the login form did not carry its CSRF token. Reload the page and try again.')
    const username = form.get('username') ?? ''
    const password = form.get('password') ?? ''
    const r = await this.auth.login(this.client(req), username, password)
    if (!r.ok) {
      this.opts.log.warn({ user: username.slice(0, 64), from: this.client(req), limited: !!r.limited }, 'portal login refused')
      const status = r.limited ? 429 : 401
      const text = r.limited ? `Too many attempts: try again in ${r.limited} s.` : 'Wrong user name or password.'
      return this.send(
        res,
        status,
        loginPage({ csrf: pre, next, error: text, username }),
        r.limited ? { 'retry-after': String(r.limited) } : {},
      )
    }
    this.opts.log.info({ user: r.session.name, from: this.client(req) }, 'portal login')
    return this.redirect(res, next, {
      'set-cookie': [this.cookie(req, this.cookieName(req), r.cookie, null), this.cookie(req, lc.name, '', 0, lc.path)],
    })
  }

  private async api(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const client = this.client(req)
    const failKey = `t:${sourceKey(client)}`
    const wait = this.auth.tokenFails.retryAfter(failKey)
    if (wait)
      return this.json(
        res,
        429,
        { error: { code: 'ELIMIT', message: `too many failed authentications: try again in ${wait} s` } },
        { 'retry-after': String(wait) },
      )
    const h = String(req.headers.authorization ?? '')
    const m = /^Bearer\s+(\S+)$/i.exec(h)
    const principal = m ? await this.auth.verifyToken(m[1]) : null
    if (!principal) {
      this.auth.tokenFails.fail(failKey)
      return this.json(
        res,
        401,
        {
          error: {
            code: 'EAUTH',
            message: m ? 'the API token is unknown, revoked or expired' : 'send Authorization: Bearer <token> (enclave hub token create)',
          },
        },
        { 'www-authenticate': 'Bearer realm="enclave-hub"' },
      )
    }
    const sub = url.pathname.slice('/api/v1'.length) || '/'
    const found = matchOp(req.method ?? 'GET', sub)
    if (found === null) return this.json(res, 404, { error: { code: 'ENOTFOUND', message: `no API operation ${sub}` } })
    if (found === 'method') return this.json(res, 405, { error: { code: 'EMETHOD', message: `${req.method} is not allowed on ${sub}` } })
    const { op, params } = found
    if (op.role === 'admin' && principal.role !== 'admin')
      return this.json(res, 403, { error: { code: 'EROLE', message: 'a viewer changes nothing: this needs an admin token' } })
    let body: Record<string, unknown> = {}
    if (op.method === 'POST' || op.method === 'PUT') {
      const raw = await this.body(req)
      if (raw === null) return this.json(res, 413, { error: { code: 'ETOOBIG', message: 'the body is larger than 64 KiB' } })
      if (raw.trim()) {
        try {
          body = JSON.parse(raw)
        } catch {
          return this.json(res, 400, { error: { code: 'EUSAGE', message: 'the body is not JSON' } })
        }
        if (!body || typeof body !== 'object' || Array.isArray(body))
          return this.json(res, 400, { error: { code: 'EUSAGE', message: 'the body must be a JSON object' } })
      }
    }
    try {
      const out = await op.run({
        principal,
        admin: new HubAdmin(this.opts.store, principal.actor),
        auth: this.auth,
        live: this.opts.live ?? (() => NO_LIVE),
        params,
        query: url.searchParams,
        body,
      })
      this.json(res, 200, out)
    } catch (e) {
      if (isDatabaseDown(e)) throw e
      const status = errorStatus(e)
      if (status === 500) {
        this.opts.log.error({ err: (e as Error).message, op: `${op.method} ${op.path}` }, 'admin API operation failed')
        return this.json(res, 500, { error: { code: 'EINTERNAL', message: 'internal error (see the hub log)' } })
      }
      this.json(res, status, { error: { code: (e as EnclaveError).code, message: (e as Error).message } })
    }
  }
}
