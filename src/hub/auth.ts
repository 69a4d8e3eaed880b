/**
 * Who may administer the hub through its portal and API (issue 21):
 * - local accounts (role admin or viewer) with scrypt from node:crypto (N=2^15, r=8, p=1, 16-byte salt);
 * - portal sessions stored in the database (only the cookie's SHA-256), 12 h idle and 7 d at most, each
 *   with its own CSRF token (synchroniser pattern);
 * - API bearer tokens `ehub_<id>_<secret>` (the secret's SHA-256 only, 160 random bits), revocable, with
 *   an optional expiry;
 * - a limit on failed attempts: 5 a minute per source address (IPv6 per /64), 20 a minute per account.
 *
 * Nothing here changes a map; account and token changes still get an audit row.
 */
import crypto from 'node:crypto'
import { promisify } from 'node:util'
import { EnclaveError } from '../errors.js'
import { sourceKey } from './source-key.js'
import type { HubStore } from './store.js'

const scrypt = promisify(crypto.scrypt) as (pw: string, salt: Buffer, len: number, o: crypto.ScryptOptions) => Promise<Buffer>

export type Role = 'admin' | 'viewer'
export const ROLES: readonly Role[] = ['admin', 'viewer']

export const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 96 * 1024 * 1024 }
export const SESSION_IDLE_MS = 12 * 3600_000
export const SESSION_MAX_MS = 7 * 86400_000
export const MIN_PASSWORD = 10
export const LOGIN_PER_ADDRESS = 5
export const LOGIN_PER_USER = 20
export const TOKEN_FAILS_PER_ADDRESS = 10
export const ATTEMPT_WINDOW_MS = 60_000

export interface Principal {
  /** admin@portal, or token:<id> for the API: the audit log's actor. */
  actor: string
  name: string
  role: Role
  kind: 'session' | 'token'
}

export interface SessionInfo extends Principal {
  csrf: string
  idSha256: string
}

function usage(m: string): EnclaveError {
  return new EnclaveError('EUSAGE', m, 2)
}

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex')

function timingSafeHexEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === y.length && x.length > 0 && crypto.timingSafeEqual(x, y)
}

export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.randomBytes(16)
  const h = await scrypt(password, salt, 32, SCRYPT)
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${h.toString('base64')}`
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(stored)
  if (!m) return false
  const want = Buffer.from(m[5], 'base64')
  const got = await scrypt(password, Buffer.from(m[4], 'base64'), want.length, {
    N: Number(m[1]),
    r: Number(m[2]),
    p: Number(m[3]),
    maxmem: SCRYPT.maxmem,
  })
  return got.length === want.length && crypto.timingSafeEqual(got, want)
}

/** Compared against when the account does not exist, so that a login takes as long either way. */
let dummyHash: Promise<string> | undefined

export function checkUsername(u: string): string {
  const name = u.trim()
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name))
    throw usage(`user name "${u}": 1 to 64 letters, digits, ".", "_", "@" or "-", starting with a letter or digit`)
  return name
}

export function checkPassword(p: string): string {
  if (p.length < MIN_PASSWORD) throw usage(`the password needs at least ${MIN_PASSWORD} characters`)
  if (p.length > 1024) throw usage('the password is longer than 1,024 characters')
  return p
}

export function checkRole(r: string): Role {
  if (!(ROLES as readonly string[]).includes(r)) throw usage(`role "${r}": use admin or viewer`)
  return r as Role
}

/** Failed attempts per key in a sliding minute. */
export class AttemptLimiter {
  private readonly fails = new Map<string, number[]>()
  constructor(
    private readonly limit: number,
    private readonly windowMs = ATTEMPT_WINDOW_MS,
    private readonly now: () => number = Date.now,
  ) {}

  private recent(key: string): number[] {
    const t = this.now()
    const a = (this.fails.get(key) ?? []).filter((x) => t - x < this.windowMs)
    if (a.length) this.fails.set(key, a)
    else this.fails.delete(key)
    return a
  }

  /** Seconds to wait before another attempt under this key, 0 when one is allowed. */
  retryAfter(key: string): number {
    const a = this.recent(key)
    if (a.length < this.limit) return 0
    return Math.max(1, Math.ceil((a[a.length - this.limit] + this.windowMs - this.now()) / 1000))
  }

  fail(key: string): void {
    const a = this.recent(key)
    a.push(this.now())
    this.fails.set(key, a)
    // Bounded: a flood of sources forgets the oldest first.
    if (this.fails.size > 50_000) for (const k of [...this.fails.keys()].slice(0, 10_000)) this.fails.delete(k)
  }

  clear(key: string): void {
    this.fails.delete(key)
  }

  /** Takes back the latest attempt under this key (it succeeded). */
  forgive(key: string): void {
    const a = this.fails.get(key)
    a?.pop()
    if (a && !a.length) this.fails.delete(key)
  }
}

export interface TokenInfo {
  tokenId: string
  description: string
  role: Role
  createdAt: string
  createdBy: string
  expiresAt: string | null
  revokedAt: string | null
  lastUsedAt: string | null
  state: 'active' | 'revoked' | 'expired'
}

export class HubAuth {
  readonly loginByAddress: AttemptLimiter
  readonly loginByUser: AttemptLimiter
  readonly tokenFails: AttemptLimiter

  constructor(
    readonly store: HubStore,
    private readonly now: () => number = Date.now,
  ) {
    this.loginByAddress = new AttemptLimiter(LOGIN_PER_ADDRESS, ATTEMPT_WINDOW_MS, now)
    this.loginByUser = new AttemptLimiter(LOGIN_PER_USER, ATTEMPT_WINDOW_MS, now)
    this.tokenFails = new AttemptLimiter(TOKEN_FAILS_PER_ADDRESS, ATTEMPT_WINDOW_MS, now)
  }

  // ------------------------------------------------------------ accounts

  async addAdmin(actor: string, username: string, password: string, role: Role): Promise<{ username: string; role: Role }> {
    const name = checkUsername(username)
    checkPassword(password)
    checkRole(role)
    const exists = await this.store.db.selectFrom('admins').select('id').where('username', '=', name).executeTakeFirst()
    if (exists) throw usage(`an account named "${name}" exists; use \`enclave hub admin passwd ${name}\``)
    const hash = await hashPassword(password)
    await this.store.write({ actor, action: 'admin.add', target: name, details: { role } }, async (trx) => {
      await trx
        .insertInto('admins')
        .values({ username: name, role, password: hash, created_at: new Date(this.now()).toISOString() })
        .execute()
    })
    return { username: name, role }
  }

  async setPassword(actor: string, username: string, password: string): Promise<{ username: string }> {
    checkPassword(password)
    const a = await this.findAdmin(username)
    const hash = await hashPassword(password)
    await this.store.write({ actor, action: 'admin.passwd', target: a.username }, async (trx) => {
      await trx.updateTable('admins').set({ password: hash }).where('id', '=', a.id).execute()
      // A new password ends every session of the account.
      await trx.deleteFrom('sessions').where('admin_id', '=', a.id).execute()
    })
    return { username: a.username }
  }

  async removeAdmin(actor: string, username: string): Promise<{ username: string; removed: true }> {
    const a = await this.findAdmin(username)
    await this.store.write({ actor, action: 'admin.remove', target: a.username }, async (trx) => {
      await trx.deleteFrom('sessions').where('admin_id', '=', a.id).execute()
      await trx.deleteFrom('admins').where('id', '=', a.id).execute()
    })
    return { username: a.username, removed: true }
  }

  async listAdmins(): Promise<Array<{ username: string; role: Role; createdAt: string }>> {
    const rows = await this.store.db.selectFrom('admins').select(['username', 'role', 'created_at']).orderBy('id').execute()
    return rows.map((r) => ({ username: r.username, role: r.role as Role, createdAt: r.created_at }))
  }

  private async findAdmin(username: string) {
    const a = await this.store.db.selectFrom('admins').selectAll().where('username', '=', username.trim()).executeTakeFirst()
    if (!a) throw new EnclaveError('ENOTFOUND', `no account "${username}" (see \`enclave hub admin list\`)`, 5)
    return a
  }

  // ------------------------------------------------------------ sessions

  /**
   * A login attempt from `address`. Refused without checking the password when the address or the
   * account had too many failures this minute ({ limited: seconds }).
   */
  async login(
    address: string,
    username: string,
    password: string,
  ): Promise<{ ok: true; cookie: string; session: SessionInfo } | { ok: false; limited?: number }> {
    const byAddr = `a:${sourceKey(address)}`
    // No account name is longer than 64 characters: a longer one must not grow the limiter's memory.
    const byUser = `u:${username.trim().toLowerCase().slice(0, 64)}`
    const wait = Math.max(this.loginByAddress.retryAfter(byAddr), this.loginByUser.retryAfter(byUser))
    if (wait) return { ok: false, limited: wait }
    // Counted before the password is checked (and taken back on success): attempts sent all at once
    // would otherwise all pass the check above while the first ones are still hashing.
    this.loginByAddress.fail(byAddr)
    this.loginByUser.fail(byUser)
    const a =
      username.length <= 64
        ? await this.store.db.selectFrom('admins').selectAll().where('username', '=', username.trim()).executeTakeFirst()
        : undefined
    dummyHash ??= hashPassword(crypto.randomBytes(16).toString('hex'))
    const good = password.length <= 1024 && (await verifyPassword(password, a?.password ?? (await dummyHash))) && !!a
    if (!good || !a) return { ok: false }
    const cookie = crypto.randomBytes(32).toString('base64url')
    const csrf = crypto.randomBytes(32).toString('base64url')
    const t = new Date(this.now()).toISOString()
    // Recorded in a write (serialised with a password change, on any replica) and only while the account
    // still has the password just checked: a change that committed meanwhile ended every session.
    const recorded = await this.store.write(null, async (trx) => {
      const still = await trx.selectFrom('admins').select('id').where('id', '=', a.id).where('password', '=', a.password).executeTakeFirst()
      if (!still) return false
      await trx
        .insertInto('sessions')
        .values({ id_sha256: sha256(cookie), admin_id: a.id, csrf, created_at: t, seen_at: t })
        .execute()
      // Old sessions go when someone logs in: the table holds only live ones.
      await trx
        .deleteFrom('sessions')
        .where('seen_at', '<', new Date(this.now() - SESSION_IDLE_MS).toISOString())
        .execute()
      return true
    })
    if (!recorded) return { ok: false }
    this.loginByAddress.clear(byAddr)
    this.loginByUser.forgive(byUser)
    return {
      ok: true,
      cookie,
      session: { actor: `${a.username}@portal`, name: a.username, role: a.role as Role, kind: 'session', csrf, idSha256: sha256(cookie) },
    }
  }

  /** The session of a cookie value, or null when unknown, idle past 12 h, older than 7 d or its account is gone. */
  async session(cookie: string | undefined): Promise<SessionInfo | null> {
    if (!cookie || cookie.length > 128) return null
    const id = sha256(cookie)
    const r = await this.store.db
      .selectFrom('sessions')
      .innerJoin('admins', 'admins.id', 'sessions.admin_id')
      .select(['sessions.csrf', 'sessions.created_at', 'sessions.seen_at', 'admins.username', 'admins.role'])
      .where('sessions.id_sha256', '=', id)
      .executeTakeFirst()
    if (!r) return null
    const t = this.now()
    if (t - Date.parse(r.seen_at) > SESSION_IDLE_MS || t - Date.parse(r.created_at) > SESSION_MAX_MS) {
      await this.store.db.deleteFrom('sessions').where('id_sha256', '=', id).execute()
      return null
    }
    if (t - Date.parse(r.seen_at) > 60_000)
      await this.store.db
        .updateTable('sessions')
        .set({ seen_at: new Date(t).toISOString() })
        .where('id_sha256', '=', id)
        .execute()
    return { actor: `${r.username}@portal`, name: r.username, role: r.role as Role, kind: 'session', csrf: r.csrf, idSha256: id }
  }

  async logout(s: SessionInfo): Promise<void> {
    await this.store.db.deleteFrom('sessions').where('id_sha256', '=', s.idSha256).execute()
  }

  /** A form's CSRF token against its session's, in constant time. */
  static csrfMatches(s: SessionInfo, given: unknown): boolean {
    if (typeof given !== 'string') return false
    // Compared as bytes: a token as long in characters but not in bytes (é) would make timingSafeEqual throw.
    const a = Buffer.from(given)
    const b = Buffer.from(s.csrf)
    return a.length === b.length && crypto.timingSafeEqual(a, b)
  }

  // ------------------------------------------------------------ API tokens

  async createToken(actor: string, description: string, o: { role?: Role; forMs?: number } = {}): Promise<TokenInfo & { token: string }> {
    const desc = description.trim()
    if (!desc) throw usage('a token needs a description')
    if (desc.length > 200) throw usage('a token description has at most 200 characters')
    const role = checkRole(o.role ?? 'admin')
    if (await this.store.db.selectFrom('api_tokens').select('id').where('description', '=', desc).executeTakeFirst())
      throw usage(`a token named "${desc}" exists; choose another description`)
    const tokenId = crypto.randomBytes(5).toString('hex')
    const secret = crypto.randomBytes(20).toString('base64url')
    const t = new Date(this.now())
    await this.store.write({ actor, action: 'token.create', target: tokenId, details: { description: desc, role } }, async (trx) => {
      await trx
        .insertInto('api_tokens')
        .values({
          token_id: tokenId,
          secret_sha256: sha256(secret),
          description: desc,
          role,
          created_at: t.toISOString(),
          created_by: actor,
          expires_at: o.forMs ? new Date(t.getTime() + o.forMs).toISOString() : null,
          revoked_at: null,
          last_used_at: null,
        })
        .execute()
    })
    const info = (await this.listTokens()).find((x) => x.tokenId === tokenId)
    if (!info) throw new Error('token vanished')
    return { ...info, token: `ehub_${tokenId}_${secret}` }
  }

  async listTokens(): Promise<TokenInfo[]> {
    const rows = await this.store.db.selectFrom('api_tokens').selectAll().orderBy('id').execute()
    const t = this.now()
    return rows.map((r) => ({
      tokenId: r.token_id,
      description: r.description,
      role: r.role as Role,
      createdAt: r.created_at,
      createdBy: r.created_by,
      expiresAt: r.expires_at,
      revokedAt: r.revoked_at,
      lastUsedAt: r.last_used_at,
      state: r.revoked_at ? 'revoked' : r.expires_at && Date.parse(r.expires_at) <= t ? 'expired' : 'active',
    }))
  }

  /** Revokes by token id, description or the whole token. */
  async revokeToken(actor: string, which: string): Promise<TokenInfo> {
    const id = /^ehub_([0-9a-f]{10})_/.exec(which.trim())?.[1] ?? which.trim()
    const all = await this.listTokens()
    const k = all.find((x) => x.tokenId === id) ?? all.find((x) => x.description === which)
    if (!k) throw new EnclaveError('ENOTFOUND', `no API token "${which}" (see \`enclave hub token list\`)`, 5)
    const at = new Date(this.now()).toISOString()
    await this.store.write({ actor, action: 'token.revoke', target: k.tokenId }, async (trx) => {
      await trx.updateTable('api_tokens').set({ revoked_at: at }).where('token_id', '=', k.tokenId).execute()
    })
    return { ...k, revokedAt: at, state: 'revoked' }
  }

  /** The principal of an `Authorization: Bearer ehub_…` value, or null. */
  async verifyToken(bearer: string): Promise<Principal | null> {
    const m = /^ehub_([0-9a-f]{10})_([A-Za-z0-9_-]{27})$/.exec(bearer)
    if (!m) return null
    const r = await this.store.db.selectFrom('api_tokens').selectAll().where('token_id', '=', m[1]).executeTakeFirst()
    if (!r || !timingSafeHexEqual(sha256(m[2]), r.secret_sha256)) return null
    const t = this.now()
    if (r.revoked_at || (r.expires_at && Date.parse(r.expires_at) <= t)) return null
    if (!r.last_used_at || t - Date.parse(r.last_used_at) > 60_000)
      await this.store.db
        .updateTable('api_tokens')
        .set({ last_used_at: new Date(t).toISOString() })
        .where('id', '=', r.id)
        .execute()
    return { actor: `token:${r.token_id}`, name: r.description, role: r.role as Role, kind: 'token' }
  }
}
