/**
 * The portal and the admin API as an attacker sees them (issue 21 review), over a real listener on loopback:
 * - the login limit holds against attempts sent all at once (they are counted before the password is checked);
 * - the limiter keeps a bounded key per attempt whatever user name is sent;
 * - a CSRF token of the right length in characters but not in bytes is refused (403), not a 500;
 * - a `next` that cannot be a Location header sends the user to / instead of failing after the login;
 * - behind HTTPS (TrustProxy) the login CSRF cookie is `__Host-`: one planted by a sibling site is refused;
 * - the remote CLI revokes a whole token by its id: the secret never goes into a URL.
 * - one address cannot hold all the portal's connections (slowloris): the 65th from it is closed;
 * - behind a trusted proxy, an X-Forwarded-For hop that is not an IP address is no limiter key (the socket's is).
 */
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAuth, LOGIN_PER_ADDRESS } from '../../src/hub/auth.js'
import { HubServer, hubPaths, initHub } from '../../src/hub/hub.js'
import { MAX_CONNECTIONS_PER_SOURCE } from '../../src/hub/portal/server.js'
import { RemoteAdmin } from '../../src/hub/remote.js'
import { HubStore } from '../../src/hub/store.js'
import { createLogger } from '../../src/log/logger.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-portalsec-${process.pid}-`))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const quiet = createLogger(0, 'logfmt', { out: { write: () => {} } })
const PW = 'correct horse battery'

let n = 0
async function startHub(portal: Record<string, unknown> = {}) {
  const dir = path.join(tmp, `hub${n++}`)
  await initHub(dir, '127.0.0.1:0')
  if (Object.keys(portal).length) {
    const file = hubPaths(dir).config
    const cfg = JSON.parse(fs.readFileSync(file, 'utf8'))
    cfg.Portal = { ...(cfg.Portal ?? {}), ...portal }
    fs.writeFileSync(file, JSON.stringify(cfg))
  }
  const hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: '127.0.0.1:0', reflectPorts: [], log: quiet })
  await hub.start()
  const store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  await new HubAuth(store).addAdmin('test', 'alice', PW, 'admin')
  await store.close()
  if (!hub.portal) throw new Error('no portal')
  const base = `http://127.0.0.1:${hub.portal.port}`
  return { hub, auth: hub.portal.auth, base }
}

const form = (f: Record<string, string>) => new URLSearchParams(f).toString()

async function loginForm(base: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}/login`, { headers })
  const body = await res.text()
  const csrf = /name="_csrf" value="([^"]+)"/.exec(body)?.[1] ?? ''
  const setCookie = res.headers.getSetCookie()[0] ?? ''
  return { csrf, setCookie, cookie: setCookie.split(';')[0] }
}

async function postLogin(base: string, cookie: string, fields: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: form(fields),
  })
  await res.text()
  return res
}

t.test('login limit: attempts sent all at once are limited like one after another', async (t) => {
  const { hub, base } = await startHub()
  t.teardown(() => hub.stop())
  const { csrf, cookie } = await loginForm(base)
  const tries = 20
  const statuses = await Promise.all(
    Array.from({ length: tries }, (_, i) => postLogin(base, cookie, { _csrf: csrf, username: 'alice', password: `wrong password ${i}` })),
  ).then((rs) => rs.map((r) => r.status))
  const checked = statuses.filter((s) => s === 401).length
  t.ok(
    checked <= LOGIN_PER_ADDRESS,
    `at most ${LOGIN_PER_ADDRESS} of ${tries} simultaneous attempts had their password checked (${checked})`,
  )
  t.equal(statuses.filter((s) => s === 429).length, tries - checked, 'the rest were refused with 429')
  // A right password from another address still logs in: the account limit (20) was not spent by refused ones.
  const ok = await hub.portal?.auth.login('198.51.100.9', 'alice', PW)
  t.equal(ok?.ok, true, 'alice logs in from another address')
})

t.test('login limit: a huge user name keeps a bounded key in the limiter', async (t) => {
  const { hub, base, auth } = await startHub()
  t.teardown(() => hub.stop())
  const { csrf, cookie } = await loginForm(base)
  const r = await postLogin(base, cookie, { _csrf: csrf, username: 'x'.repeat(60_000), password: 'wrong password' })
  t.equal(r.status, 401)
  const keys = [...(auth.loginByUser as unknown as { fails: Map<string, number[]> }).fails.keys()]
  t.equal(keys.length, 1, 'one key for the attempt')
  t.ok(Math.max(...keys.map((k) => k.length)) <= 100, `the key is short (${Math.max(...keys.map((k) => k.length))} characters)`)
})

async function signedIn(base: string) {
  const { csrf, cookie } = await loginForm(base)
  const r = await postLogin(base, cookie, { _csrf: csrf, username: 'alice', password: PW })
  const session =
    r.headers
      .getSetCookie()
      .find((c) => c.startsWith('enclave_hub='))
      ?.split(';')[0] ?? ''
  const page = await (await fetch(`${base}/keys`, { headers: { cookie: session } })).text()
  return { session, csrf: /name="_csrf" value="([^"]+)"/.exec(page)?.[1] ?? '' }
}

t.test('CSRF: a token as long in characters but not in bytes is refused, not an internal error', async (t) => {
  const { hub, base } = await startHub()
  t.teardown(() => hub.stop())
  const s = await signedIn(base)
  t.equal(s.csrf.length, 43)
  const forged = `é${s.csrf.slice(1)}`
  const res = await fetch(`${base}/keys`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: s.session, 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ _csrf: forged, description: 'k' }),
  })
  const body = await res.text()
  t.equal(res.status, 403, body.trim())
  t.match(body, /CSRF token/)
})

t.test('login: a `next` that cannot be a Location header goes to / after the login', async (t) => {
  const { hub, base } = await startHub()
  t.teardown(() => hub.stop())
  const { csrf, cookie } = await loginForm(base)
  const r = await postLogin(base, cookie, { _csrf: csrf, username: 'alice', password: PW, next: '/systems/日本' })
  t.equal(r.status, 303, `status ${r.status}`)
  t.equal(r.headers.get('location'), '/')
  t.ok(
    r.headers.getSetCookie().some((c) => c.startsWith('enclave_hub=')),
    'the session cookie is set',
  )
})

t.test('login CSRF behind HTTPS: the login cookie is __Host- and a planted plain one is refused', async (t) => {
  const { hub, base } = await startHub({ TrustProxy: true })
  t.teardown(() => hub.stop())
  const https = { 'x-forwarded-proto': 'https' }
  const g = await loginForm(base, https)
  t.match(g.setCookie, /^__Host-enclave_hub_login=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Secure/, g.setCookie)
  // A sibling site (evil.example.com beside hub.example.com) can set `enclave_hub_login` for the parent
  // domain, and post the login form with its own account: the victim would work in the attacker's session.
  const planted = 'A'.repeat(43)
  const r = await postLogin(base, `enclave_hub_login=${planted}`, { _csrf: planted, username: 'alice', password: PW }, https)
  t.equal(r.status, 403, 'a login CSRF token from a plain (settable by a sibling) cookie is refused')
  const ok = await postLogin(base, g.cookie, { _csrf: g.csrf, username: 'alice', password: PW }, https)
  t.equal(ok.status, 303, 'the real form logs in')
  t.ok(
    ok.headers.getSetCookie().some((c) => c.startsWith('__Host-enclave_hub=')),
    'with the __Host- session cookie',
  )
})

t.test('remote CLI: revoking a whole token sends its id, never its secret, in the URL', async (t) => {
  const urls: string[] = []
  const fakeFetch = (async (url: string) => {
    urls.push(String(url))
    return new Response(JSON.stringify({ token: { tokenId: '0123456789' } }), { status: 200 })
  }) as unknown as typeof fetch
  const secret = 'S'.repeat(27)
  const r = new RemoteAdmin({ url: 'http://127.0.0.1:8444', token: `ehub_aaaaaaaaaa_${'b'.repeat(27)}`, fetch: fakeFetch })
  await r.revokeToken(`ehub_0123456789_${secret}`)
  t.equal(urls.length, 1)
  t.notMatch(urls[0], secret, urls[0])
  t.equal(urls[0], 'http://127.0.0.1:8444/api/v1/tokens/0123456789/revoke')
})

t.test('TrustProxy: an X-Forwarded-For hop that is not an IP address is not a limiter key', async (t) => {
  const { hub, base, auth } = await startHub({ TrustProxy: true })
  t.teardown(() => hub.stop())
  const keys = () => [...(auth.tokenFails as unknown as { fails: Map<string, number[]> }).fails.keys()]
  const bad = (xff: string) =>
    fetch(`${base}/api/v1/whoami`, { headers: { authorization: 'Bearer nope', 'x-forwarded-for': xff } }).then((r) => r.status)
  t.equal(await bad(`192.0.2.1, ${'x'.repeat(8000)}`), 401)
  t.ok(Math.max(...keys().map((k) => k.length)) <= 64, `keys stay short (${keys().map((k) => k.length)})`)
  t.equal(await bad('192.0.2.1, 198.51.100.7:4711'), 401)
  t.equal(await bad('[2001:db8:1:2::5]:4711'), 401)
  t.equal(await bad('2001:db8:1:2::6'), 401)
  t.same(keys().sort(), ['t:127.0.0.1', 't:198.51.100.7', 't:2001:db8:1:2::/64'], 'the last hop, its port dropped; IPv6 per /64')
})

/** One raw request on a fresh connection from `from`: the status line, or 'closed' when the portal hangs up first. */
function rawGet(port: number, from: string, hold: net.Socket[]): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from }, () => {
      s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
    })
    let got = ''
    s.on('data', (d) => {
      got += d
    })
    s.on('error', () => undefined)
    s.on('close', () => resolve(got ? got.split('\r\n')[0] : 'closed'))
    hold.push(s)
  })
}

t.test('connections: one address holding 64 idle connections cannot take the 65th (slowloris)', async (t) => {
  const { hub } = await startHub()
  const port = hub.portal?.port ?? 0
  const idle: net.Socket[] = []
  t.teardown(async () => {
    for (const s of idle) s.destroy()
    await hub.stop()
  })
  for (let i = 0; i < MAX_CONNECTIONS_PER_SOURCE; i++)
    await new Promise<void>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.1' }, () => resolve())
      s.on('error', () => undefined)
      idle.push(s)
    })
  t.equal(await rawGet(port, '127.0.0.1', idle), 'closed', 'the next connection from the same address is closed at once')
  t.equal(await rawGet(port, '127.0.0.2', idle), 'HTTP/1.1 200 OK', 'another address still gets in')
})
