/**
 * The hub's JSON admin API (issue 21) over a real listener on loopback, and the accounts underneath it:
 * - bearer tokens: missing, wrong, unknown, malformed, revoked and expired ones get 401;
 * - roles: a viewer reads and previews (dryRun) but changes nothing and cannot see or mint tokens;
 * - failed authentications are limited per address (429 with Retry-After, even for a good token);
 * - input errors are the CLI's own one-line messages; bad bodies, paths and methods get 400/413/404/405;
 * - a change through the API is in `hub log` with the token as its actor;
 * - HubAuth: the login limit per address, sessions ending at logout and at `hub admin passwd`, and a
 *   salt per account.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { AttemptLimiter, HubAuth, verifyPassword } from '../../src/hub/auth.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { apiBase, exitCodeOf, policyFields } from '../../src/hub/remote.js'
import { policyBody } from '../../src/hub/policy-flags.js'
import { HubStore } from '../../src/hub/store.js'
import { helloTimestamp } from '../../src/hubproto/wire.js'
import { createLogger } from '../../src/log/logger.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

const BIN = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/run.js')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hubapi-${process.pid}-`))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const quiet = createLogger(0, 'logfmt', { out: { write: () => {} } })

function cli(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, DEBUG: '' }
    delete env.ENCLAVE_HUB_API
    delete env.ENCLAVE_HUB_TOKEN
    const child = execFile(process.execPath, [BIN, ...args], { env }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) })
    })
    child.stdin?.end(input ?? '')
  })
}

let n = 0
async function startHub() {
  const dir = path.join(tmp, `hub${n++}`)
  await initHub(dir, '127.0.0.1:0')
  const hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: '127.0.0.1:0', reflectPorts: [], log: quiet })
  await hub.start()
  const portal = hub.portal
  if (!portal) throw new Error('no portal')
  const auth = portal.auth
  const base = `http://127.0.0.1:${portal.port}/api/v1`
  const api = async (
    method: string,
    p: string,
    o: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
  ) => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) }
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`
    const body = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body))
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(`${base}${p}`, { method, headers, body })
    const text = await res.text()
    let json: { error?: { code: string; message: string } } & Record<string, unknown> = {}
    try {
      json = JSON.parse(text)
    } catch {
      // not JSON: the assertions say so
    }
    return { status: res.status, json, headers: res.headers }
  }
  return { dir, hub, auth, api, stop: () => hub.stop() }
}

/** A system enrolled (approved) straight through HubAdmin, with tags. */
async function enrolSystem(admin: HubAdmin, tags: string[]): Promise<string> {
  const k = await admin.createKey(`k${Math.random()}`, { autoApprove: true, tags })
  const r = await admin.enrol({
    publicKey: generateKeyPair().publicKey.toString('base64'),
    key: k.key,
    hostname: 'box',
    listenPort: 51820,
    endpoint: null,
    helloTs: helloTimestamp(Date.now()),
    allowGateway: false,
    acceptDefaultRoute: false,
    advertised: [],
  })
  if (!r.ok) throw new Error(r.message)
  return r.system.identity
}

t.test('authentication: every token that is not a live one gets 401', async (t) => {
  const h = await startHub()
  t.teardown(h.stop)
  const good = await h.auth.createToken('tester@cli', 'good')
  const ok = await h.api('GET', '/whoami', { token: good.token })
  t.equal(ok.status, 200, 'a live token works')
  t.same(ok.json, { name: 'good', role: 'admin', kind: 'token' })

  const none = await h.api('GET', '/whoami')
  t.equal(none.status, 401, 'no Authorization header')
  t.equal(none.json.error?.code, 'EAUTH')
  t.equal(none.headers.get('www-authenticate'), 'Bearer realm="enclave-hub"')
  t.equal((await h.api('GET', '/whoami', { headers: { authorization: `Basic ${good.token}` } })).status, 401, 'not Bearer')

  const secret = good.token.slice(-27)
  const wrongSecret = `${good.token.slice(0, -27)}${secret[0] === 'A' ? 'B' : 'A'}${secret.slice(1)}`
  t.equal((await h.api('GET', '/whoami', { token: wrongSecret })).status, 401, 'right id, wrong secret')
  t.equal((await h.api('GET', '/whoami', { token: `ehub_0123456789_${secret}` })).status, 401, 'unknown id')
  t.equal((await h.api('GET', '/whoami', { token: `${good.token}x` })).status, 401, 'malformed (too long)')
  t.equal((await h.api('GET', '/whoami', { token: 'ehub_zz_short' })).status, 401, 'malformed')

  const revoked = await h.auth.createToken('tester@cli', 'to revoke')
  t.equal((await h.api('GET', '/whoami', { token: revoked.token })).status, 200)
  await h.auth.revokeToken('tester@cli', revoked.tokenId)
  const r = await h.api('GET', '/whoami', { token: revoked.token })
  t.equal(r.status, 401, 'revoked')
  t.equal(r.json.error?.message, 'the API token is unknown, revoked or expired')

  const expiring = await h.auth.createToken('tester@cli', 'expiring', { forMs: 3600_000 })
  t.equal((await h.api('GET', '/whoami', { token: expiring.token })).status, 200, 'valid before its expiry')
  await h.auth.store.db
    .updateTable('api_tokens')
    .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
    .where('token_id', '=', expiring.tokenId)
    .execute()
  t.equal((await h.api('GET', '/whoami', { token: expiring.token })).status, 401, 'expired')
  t.equal((await h.auth.listTokens()).find((x) => x.tokenId === expiring.tokenId)?.state, 'expired')
  t.equal(
    (await h.api('GET', '/whoami', { token: good.token })).status,
    200,
    'the good token still works (8 failures, under the 10 allowed)',
  )
})

t.test('an expired token at the HubAuth level (its clock injected)', async (t) => {
  const dir = path.join(tmp, `hub${n++}`)
  await initHub(dir, '127.0.0.1:0')
  const store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  t.teardown(() => store.close())
  let clock = Date.parse('2026-01-01T00:00:00Z')
  const auth = new HubAuth(store, () => clock)
  const tok = await auth.createToken('tester@cli', 'short', { forMs: 60_000 })
  t.equal((await auth.verifyToken(tok.token))?.actor, `token:${tok.tokenId}`)
  clock += 60_000
  t.equal(await auth.verifyToken(tok.token), null, 'dead at its expiry')
})

t.test('roles: a viewer reads and previews, changes nothing', async (t) => {
  const h = await startHub()
  t.teardown(h.stop)
  const admin = new HubAdmin(h.auth.store, 'tester@cli')
  const id = await enrolSystem(admin, ['laptops'])
  const viewer = await h.auth.createToken('tester@cli', 'dashboard', { role: 'viewer' })
  const v = (method: string, p: string, body?: unknown) => h.api(method, p, { token: viewer.token, body })

  const sys = await v('GET', '/systems')
  t.equal(sys.status, 200, 'a viewer reads /systems')
  t.same(
    (sys.json.systems as Array<{ identity: string }>).map((s) => s.identity),
    [id],
  )
  t.equal((await v('GET', '/keys')).status, 200)
  t.equal((await v('GET', '/audit')).status, 200)

  const key = await v('POST', '/keys', { description: 'sneaky' })
  t.equal(key.status, 403, 'POST /keys')
  t.same(key.json.error, { code: 'EROLE', message: 'a viewer changes nothing: this needs an admin token' })
  t.equal((await v('POST', '/systems/approve', { identities: [id] })).status, 403, 'POST /systems/approve')
  t.equal((await v('GET', '/tokens')).status, 403, 'GET /tokens')
  t.equal(
    (await v('POST', '/tokens', { description: 'escalate', role: 'admin' })).status,
    403,
    'POST /tokens: no admin token from a viewer',
  )
  t.equal((await v('PUT', `/systems/${id}/tags`, { tags: 'servers' })).status, 403, 'PUT tags without dryRun')
  t.equal((await v('POST', '/policies', { description: 'p', senders: 'a', receivers: 'b', acl: ['icmp'] })).status, 403)

  const dry = await v('PUT', `/systems/${id}/tags`, { tags: 'servers', dryRun: true })
  t.equal(dry.status, 200, 'a viewer may preview a tag change')
  t.equal(dry.json.dryRun, true)
  t.same(dry.json.tags, ['servers'])
  t.same((await admin.listSystems())[0].tags, ['laptops'], 'the preview changed nothing')
  t.same((await admin.listKeys()).map((k) => k.description).includes('sneaky'), false, 'no key was made')
  t.equal((await h.auth.listTokens()).length, 1, 'no token was made')
})

t.test('rate limit: the 11th bad token in a minute from one address gets 429, then even a good one', async (t) => {
  const h = await startHub()
  t.teardown(h.stop)
  let clock = Date.now()
  // The limiter's clock, so that the test need not wait a minute for the window to pass.
  Object.assign(h.auth, { tokenFails: new AttemptLimiter(10, 60_000, () => clock) })
  const good = await h.auth.createToken('tester@cli', 'good')
  const statuses: number[] = []
  for (let i = 0; i < 10; i++) statuses.push((await h.api('GET', '/whoami', { token: `ehub_0123456789_${'A'.repeat(27)}` })).status)
  t.same(statuses, Array(10).fill(401), 'ten bad tokens: 401 each')
  const eleventh = await h.api('GET', '/whoami', { token: 'ehub_bad' })
  t.equal(eleventh.status, 429, 'the 11th is limited')
  t.equal(eleventh.json.error?.code, 'ELIMIT')
  const retry = Number(eleventh.headers.get('retry-after'))
  t.ok(retry >= 1 && retry <= 60, `Retry-After ${retry} s`)
  const goodNow = await h.api('GET', '/whoami', { token: good.token })
  t.equal(goodNow.status, 429, 'a good token is refused too while the address is limited')
  clock += 30_000
  t.equal((await h.api('GET', '/whoami', { token: good.token })).status, 429, 'still limited half-way through the window')
  clock += 30_001
  t.equal((await h.api('GET', '/whoami', { token: good.token })).status, 200, 'the window passed: the good token works')
})

t.test('input: the CLI’s one-line errors; bad bodies, paths and methods', async (t) => {
  const h = await startHub()
  t.teardown(h.stop)
  const { token } = await h.auth.createToken('tester@cli', 'admin')
  const a = (method: string, p: string, o: { body?: unknown; raw?: string } = {}) => h.api(method, p, { token, ...o })

  const acl = await a('POST', '/policies', { body: { description: 'p', senders: 'a', receivers: 'b', acl: ['tcp:99999'] } })
  t.equal(acl.status, 400)
  t.equal(acl.json.error?.code, 'EUSAGE')
  const cliAcl = await cli([
    'hub',
    'policy',
    'create',
    'p',
    '--senders',
    'a',
    '--receivers',
    'b',
    '--acl',
    'tcp:99999',
    '--data-dir',
    h.dir,
  ])
  t.equal(cliAcl.code, 2)
  t.equal(cliAcl.stderr, `Error: ${acl.json.error?.message}\n`, 'the same one line as `enclave hub policy create --acl tcp:99999`')

  const tags = await a('POST', '/keys', { body: { description: 'k', tags: 'ok,bad tag!' } })
  t.equal(tags.status, 400)
  const cliTags = await cli(['hub', 'key', 'create', 'k', '--tags', 'ok,bad tag!', '--data-dir', h.dir])
  t.equal(cliTags.stderr, `Error: ${tags.json.error?.message}\n`, 'the same one line as `enclave hub key create --tags`')

  const dur = await a('POST', '/tokens', { body: { description: 't', for: 'soon' } })
  t.equal(dur.status, 400)
  const cliDur = await cli(['hub', 'token', 'create', 't', '--for', 'soon', '--data-dir', h.dir])
  t.equal(cliDur.stderr, `Error: ${dur.json.error?.message}\n`, 'the same one line as `enclave hub token create --for soon`')

  const missing = await a('POST', '/keys/NOSUCH/revoke', { body: {} })
  t.equal(missing.status, 404)
  const cliMissing = await cli(['hub', 'key', 'revoke', 'NOSUCH', '--data-dir', h.dir])
  t.equal(cliMissing.code, 5)
  t.equal(cliMissing.stderr, `Error: ${missing.json.error?.message}\n`, 'not found: the same line (exit 5 in the CLI)')

  const notJson = await a('POST', '/keys', { raw: '{"description": ' })
  t.equal(notJson.status, 400)
  t.same(notJson.json.error, { code: 'EUSAGE', message: 'the body is not JSON' })
  t.equal((await a('POST', '/keys', { raw: '[1,2]' })).status, 400, 'a JSON array is not an object')
  const big = await a('POST', '/keys', { raw: JSON.stringify({ description: 'x'.repeat(65 * 1024) }) })
  t.equal(big.status, 413, 'a body over 64 KiB')
  t.equal(big.json.error?.code, 'ETOOBIG')
  t.equal((await a('POST', '/keys', { body: { description: 42 } })).json.error?.message, '"description" must be a string')
  const unknown = await a('GET', '/nothing/here')
  t.equal(unknown.status, 404)
  t.equal(unknown.json.error?.message, 'no API operation /nothing/here')
  const method = await a('DELETE', '/keys')
  t.equal(method.status, 405)
  t.equal(method.json.error?.message, 'DELETE is not allowed on /keys')
  t.same((await new HubAdmin(h.auth.store, 'x').listKeys()).length, 0, 'none of it made a key')
})

t.test('a change through the API is in `hub log` with the token as actor', async (t) => {
  const h = await startHub()
  t.teardown(h.stop)
  const tok = await h.auth.createToken('tester@cli', 'automation')
  const r = await h.api('POST', '/keys', { token: tok.token, body: { description: 'office', tags: 'office', for: '7d', uses: 3 } })
  t.equal(r.status, 200)
  const key = r.json.key as { keyId: string; tags: string[]; usesRemaining: number; key: string }
  t.same(key.tags, ['office'])
  t.equal(key.usesRemaining, 3)
  t.match(key.key, /^[0-9A-Z]{5}-/)
  const log = await cli(['hub', 'log', '--json', '--data-dir', h.dir])
  t.equal(log.code, 0, log.stderr)
  const entries = JSON.parse(log.stdout).entries as Array<{ actor: string; action: string; target: string }>
  t.ok(
    entries.some((e) => e.actor === `token:${tok.tokenId}` && e.action === 'key.create' && e.target === key.keyId),
    'key.create by token:<id>',
  )
  const filtered = await h.api('GET', `/audit?actor=${encodeURIComponent(`token:${tok.tokenId}`)}&target=${key.keyId}`, {
    token: tok.token,
  })
  t.same(
    (filtered.json.entries as Array<{ action: string }>).map((e) => e.action),
    ['key.create'],
    'the API filters the log by actor and target',
  )
})

t.test('the remote client: URL forms, the plain-HTTP warning, exit codes, policy bodies', async (t) => {
  t.equal(apiBase('http://127.0.0.1:8444').base, 'http://127.0.0.1:8444/api/v1')
  t.equal(apiBase('https://hub.example.com/portal/api/v1/').base, 'https://hub.example.com/portal/api/v1')
  t.equal(apiBase('http://127.0.0.1:8444').warning, undefined, 'loopback: no warning')
  t.equal(apiBase('http://[::1]:8444').warning, undefined)
  t.equal(apiBase('https://hub.example.com').warning, undefined)
  t.match(apiBase('http://hub.example.com:8444').warning ?? '', /plain HTTP to another host/, 'plain HTTP elsewhere: a warning')
  t.throws(() => apiBase('ftp://x'), /use an http:\/\/ or https:\/\/ URL/)
  t.throws(() => apiBase('http://u:p@x'), /no credentials in the URL/)
  t.throws(() => apiBase('nonsense'), /not a URL/)
  t.same(['EUSAGE', 'ENOTFOUND', 'EROLE', 'EAUTH', 'ELIMIT', 'EEXIST'].map(exitCodeOf), [2, 5, 3, 3, 1, 1])
  // The CLI form sent to the API gives back the same body there.
  for (const f of [
    { senders: 'a,b', receivers: 'c', acl: ['icmp', 'tcp:22', 'udp:8000-8100'] },
    { senders: 'a', gateway: 'G982V:172.26.0.0/20,G982V:10.0.0.0/8', acl: ['any'], 'allow-ip': '172.26.0.250,172.26.1.0/24' },
  ]) {
    const body = policyBody(f)
    t.same(policyBody(policyFields(body) as typeof f), body, `round trip ${JSON.stringify(f)}`)
  }
})

t.test('HubAuth: the login limit per address, sessions, a salt per account', async (t) => {
  const dir = path.join(tmp, `hub${n++}`)
  await initHub(dir, '127.0.0.1:0')
  const store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  t.teardown(() => store.close())
  let clock = Date.now()
  const auth = new HubAuth(store, () => clock)
  Object.assign(auth, { loginByAddress: new AttemptLimiter(5, 60_000, () => clock) })
  const pw = 'correct horse battery'
  await auth.addAdmin('tester@cli', 'alice', pw, 'admin')
  await auth.addAdmin('tester@cli', 'bob', pw, 'viewer')

  const rows = await store.db.selectFrom('admins').select(['username', 'password']).orderBy('id').execute()
  t.not(rows[0].password, rows[1].password, 'the same password hashes differently for two accounts')
  t.match(rows[0].password, /^scrypt\$32768\$8\$1\$/)
  t.notMatch(rows[0].password, new RegExp(pw), 'not the password itself')
  t.ok(await verifyPassword(pw, rows[0].password))
  t.ok(await verifyPassword(pw, rows[1].password))

  const from = '192.0.2.7'
  for (let i = 0; i < 5; i++) {
    const r = await auth.login(from, 'alice', `wrong password ${i}`)
    t.same(r, { ok: false }, `failure ${i + 1}: refused, not yet limited`)
  }
  const sixth = await auth.login(from, 'alice', pw)
  t.equal(sixth.ok, false, 'the 6th attempt in the minute is refused even with the right password')
  t.ok(!sixth.ok && sixth.limited && sixth.limited > 0, 'and says how long to wait')
  const other = await auth.login('198.51.100.9', 'alice', pw)
  t.equal(other.ok, true, 'another address logs in (the limit is per address)')
  clock += 60_001
  const later = await auth.login(from, 'alice', pw)
  t.equal(later.ok, true, 'after the minute the address may log in again')

  // Sessions end at logout.
  if (!later.ok) return
  t.equal((await auth.session(later.cookie))?.name, 'alice')
  await auth.logout(later.session)
  t.equal(await auth.session(later.cookie), null, 'logged out: the cookie is dead')

  // ... and at `enclave hub admin passwd` (the command, its password on stdin).
  const s2 = await auth.login(from, 'alice', pw)
  if (!s2.ok) throw new Error('login failed')
  const s3 = await auth.login(from, 'bob', pw)
  if (!s3.ok) throw new Error('login failed')
  t.ok(await auth.session(s2.cookie))
  const short = await cli(['hub', 'admin', 'passwd', 'alice', '--data-dir', dir], 'short\n')
  t.equal(short.code, 2)
  t.equal(short.stderr, 'Error: the password needs at least 10 characters\n')
  t.ok(await auth.session(s2.cookie), 'a refused password change ends nothing')
  const pc = await cli(['hub', 'admin', 'passwd', 'alice', '--data-dir', dir], 'a new long password\nignored second line\n')
  t.equal(pc.code, 0, pc.stderr)
  t.equal(await auth.session(s2.cookie), null, "alice's session ended with her new password")
  t.equal((await auth.session(s3.cookie))?.name, 'bob', "bob's session lives on")
  t.equal((await auth.login(from, 'alice', 'a new long password')).ok, true, 'the first line of stdin is the new password')
  t.same(await auth.login(from, 'alice', pw), { ok: false }, 'the old one is refused')
})
