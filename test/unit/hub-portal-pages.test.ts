/**
 * The portal's pages over real HTTP against a real hub (issue 21): each page renders with its heading;
 * approving and declining pending systems, tags edited in place, routes, enrolment keys (shown once,
 * usable, revocable), policies (Preview saves nothing, Save does, a mistake keeps what was typed) change
 * the store; every string a system, a key or an admin supplied comes out escaped; a viewer gets no forms.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubAuth } from '../../src/hub/auth.js'
import { HubServer, initHub, openHubStore } from '../../src/hub/hub.js'
import type { HubStore } from '../../src/hub/store.js'
import { helloTimestamp } from '../../src/hubproto/wire.js'
import { createLogger } from '../../src/log/logger.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-portalpages-${process.pid}-`))
const log = createLogger(4, 'logfmt', { out: { write: () => {} } })
let hub: HubServer
let store: HubStore
let admin: HubAdmin
let hubKey: string

const EVIL_HOST = '<script>alert(1)</script>"host'
const EVIL_TAG = '<b>"x'
const EVIL_KEY_DESC = 'key "<i>one</i>'
const EVIL_POLICY = '<img src=x onerror=alert(1)>'

/** Also run on a real PostgreSQL by hub-portal-pages-postgres.test.ts (a fresh database, as hub-store's). */
const freshDatabase = (globalThis as { ENCLAVE_TEST_HUB_DB?: (name: string) => Promise<string> }).ENCLAVE_TEST_HUB_DB

t.before(async () => {
  const postgresUrl = freshDatabase ? await freshDatabase('portal') : undefined
  hubKey = (await initHub(dir, '127.0.0.1:0', { postgresUrl })).publicKey
  hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: '127.0.0.1:0', log })
  await hub.start()
  store = await openHubStore(dir)
  admin = new HubAdmin(store, 'test-admin')
  const auth = new HubAuth(store)
  await auth.addAdmin('test', 'alice', 'correct horse battery', 'admin')
  await auth.addAdmin('test', 'victor', 'correct horse battery', 'viewer')
})
t.teardown(async () => {
  await hub.stop()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

const base = () => `http://127.0.0.1:${hub.portal?.port}`

/** A system enrolling with `key` (what the hub does on an agent's first hello). */
async function enrolSystem(key: string, hostname: string): Promise<string> {
  const r = await admin.enrol({
    publicKey: generateKeyPair().publicKey.toString('base64'),
    key,
    hostname,
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

/** A browser without JavaScript: keeps cookies, never follows redirects, sends the Referer of the last page. */
class Browser {
  cookies = new Map<string, string>()
  csrf = ''
  last = '/'

  private cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }

  private keep(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';')
      const i = kv.indexOf('=')
      const k = kv.slice(0, i)
      const v = kv.slice(i + 1)
      if (v === '' || /Max-Age=0/.test(c)) this.cookies.delete(k)
      else this.cookies.set(k, v)
    }
  }

  async get(p: string): Promise<{ status: number; body: string; location: string | null }> {
    const res = await fetch(base() + p, { redirect: 'manual', headers: { cookie: this.cookieHeader() } })
    this.keep(res)
    const body = await res.text()
    const m = /name="_csrf" value="([^"]+)"/.exec(body)
    if (m) this.csrf = m[1]
    if (res.status === 200) this.last = p
    return { status: res.status, body, location: res.headers.get('location') }
  }

  async post(
    p: string,
    fields: Array<[string, string]> | Record<string, string>,
  ): Promise<{ status: number; body: string; location: string | null }> {
    const f = new URLSearchParams(Array.isArray(fields) ? fields : Object.entries(fields))
    if (!f.has('_csrf')) f.set('_csrf', this.csrf)
    const res = await fetch(base() + p, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        cookie: this.cookieHeader(),
        'content-type': 'application/x-www-form-urlencoded',
        referer: base() + this.last,
      },
      body: f.toString(),
    })
    this.keep(res)
    return { status: res.status, body: await res.text(), location: res.headers.get('location') }
  }

  async login(username: string): Promise<void> {
    const g = await this.get('/login')
    if (g.status !== 200 || !this.cookies.has('enclave_hub_login')) throw new Error('no login form')
    const r = await this.post('/login', { username, password: 'correct horse battery', next: '/' })
    if (r.status !== 303 || !this.cookies.has('enclave_hub')) throw new Error(`login failed: ${r.status} ${r.body}`)
  }
}

const h1 = (body: string) => /<h1>(.*?)<\/h1>/s.exec(body)?.[1]
const flashOf = (body: string) => /<p class="flash (ok|error)"[^>]*>(.*?)<\/p>/s.exec(body)
const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;')
/** No markup anyone supplied came through: the pages carry no script, img or b/i element of their own. */
const noInjected = (body: string) => !/<script|<img|<b>|<i>/i.test(body)
const stateOf = async (id: string) => (await admin.listSystems()).find((s) => s.identity === id)?.state

let pendA = ''
let pendB = ''
let web = ''
let laptop = ''

t.test('setup: two pending systems (one with markup in its host name and tag), two approved', async (t) => {
  const manual = await admin.createKey('manual key', { tags: [EVIL_TAG] })
  pendA = await enrolSystem(manual.key, EVIL_HOST)
  pendB = await enrolSystem(manual.key, 'bravo')
  const auto = await admin.createKey(EVIL_KEY_DESC, { autoApprove: true })
  web = await enrolSystem(auto.key, 'web-1')
  laptop = await enrolSystem(auto.key, 'laptop-1')
  await admin.setTags(web, ['web'])
  await admin.setTags(laptop, ['laptop'])
  t.equal(await stateOf(pendA), 'pending')
  t.equal(await stateOf(web), 'approved')
})

const alice = new Browser()

t.test('log in; / goes to the pending systems while any wait; every page renders with its heading', async (t) => {
  const anon = await new Browser().get('/systems')
  t.equal(anon.status, 303, 'without a session a page redirects')
  t.match(anon.location, /^\/login\?next=/)
  await alice.login('alice')
  const root = await alice.get('/')
  t.equal(root.status, 303)
  t.equal(root.location, '/systems/pending', 'pending systems first')
  const pages: Array<[string, string]> = [
    ['/systems/pending', 'Pending systems'],
    ['/systems', 'Systems'],
    [`/systems/${web}`, `System ${web}`],
    [`/systems/${pendA}`, `System ${pendA}`],
    ['/keys', 'Enrolment keys'],
    ['/tags', 'Tags'],
    ['/policies', 'Policies'],
    ['/policies/new', 'New policy'],
    ['/audit', 'Audit log'],
  ]
  for (const [p, want] of pages) {
    const r = await alice.get(p)
    t.equal(r.status, 200, `${p} answers 200`)
    t.equal(h1(r.body), want, `${p} has the heading "${want}"`)
    t.match(r.body, /<span class="badge">2<\/span>/, `${p} shows 2 pending systems in the navigation`)
    t.ok(noInjected(r.body), `${p} carries no injected markup`)
  }
  t.equal((await alice.get('/systems/NOSUCH')).status, 404, 'an unknown system is a 404')
  t.equal((await alice.get('/nowhere')).status, 404, 'an unknown page is a 404')
})

t.test('user-supplied strings come out escaped', async (t) => {
  const pending = await alice.get('/systems/pending')
  t.ok(pending.body.includes(esc(EVIL_HOST)), 'the host name is escaped on the pending page')
  t.notOk(pending.body.includes(EVIL_HOST), 'the raw host name is not there')
  t.ok(pending.body.includes(`<span class="tag">${esc(EVIL_TAG)}</span>`), 'the tag is escaped')
  t.ok(pending.body.includes(`aria-label="Select ${pendA}"`), 'a checkbox per pending system')
  const systems = await alice.get('/systems')
  t.ok(systems.body.includes(`value="${esc(EVIL_TAG)}"`), 'the tag is escaped inside the in-place input value')
  t.ok(systems.body.includes(esc(EVIL_HOST)))
  const detail = await alice.get(`/systems/${pendA}`)
  t.ok(detail.body.includes(esc(EVIL_HOST)), 'the detail page escapes the host name')
  const keys = await alice.get('/keys')
  t.ok(keys.body.includes(esc(EVIL_KEY_DESC)), 'the key description is escaped')
  t.notOk(keys.body.includes(EVIL_KEY_DESC))
  const tags = await alice.get('/tags')
  t.ok(tags.body.includes(esc(EVIL_TAG)), 'the tags page escapes the tag')
  for (const r of [pending, systems, detail, keys, tags]) t.ok(noInjected(r.body))
})

t.test('approve and decline pending systems', async (t) => {
  const none = await alice.post('/systems/pending', { action: 'approve' })
  t.equal(none.status, 303, 'approving nothing goes back with a message')
  const back = await alice.get(none.location as string)
  t.equal(flashOf(back.body)?.[1], 'error')
  t.match(flashOf(back.body)?.[2], /select at least one system/)

  const r = await alice.post('/systems/pending', [
    ['identity', pendA],
    ['action', 'approve'],
  ])
  t.equal(r.status, 303)
  t.equal(await stateOf(pendA), 'approved', 'the store says approved')
  t.equal(await stateOf(pendB), 'pending', 'the other stays pending')
  const next = await alice.get(r.location as string)
  t.equal(flashOf(next.body)?.[1], 'ok')
  t.match(flashOf(next.body)?.[2], new RegExp(`Approved 1 system: ${pendA}`))
  t.match(next.body, /<span class="badge">1<\/span>/, 'one pending left')
  const audit = (await admin.auditLog(5, { actor: 'alice' })).map((a) => `${a.actor} ${a.action} ${a.target}`)
  t.ok(audit.includes(`alice@portal system.approve ${pendA}`), 'the audit log names alice@portal')

  const d = await alice.post('/systems/pending', [
    ['identity', pendB],
    ['action', 'decline'],
  ])
  t.equal(d.status, 303)
  t.equal(await stateOf(pendB), undefined, 'declined: gone from the store')
  t.equal(d.location, '/systems', 'nothing pending: back to the systems')
  const root = await alice.get('/')
  t.equal(root.location, '/systems', 'with nothing pending / goes to the systems')
  t.notMatch((await alice.get('/systems')).body, /class="badge"/, 'no pending badge')
})

t.test('tags edited in place; a bad tag is refused and shown escaped', async (t) => {
  const sys = await alice.get('/systems')
  t.ok(sys.body.includes(`aria-label="Tags of ${web}"`) && sys.body.includes(`aria-label="Save tags of ${web}"`))
  const r = await alice.post(`/systems/${web}/tags`, { tags: 'web, db' })
  t.equal(r.status, 303)
  t.equal(r.location, '/systems')
  t.same((await admin.listSystems()).find((s) => s.identity === web)?.tags, ['web', 'db'], 'the store has the new tags')
  const after = await alice.get('/systems')
  t.ok(after.body.includes(`value="web, db"`), 'the list shows them')
  t.match(flashOf(after.body)?.[2], new RegExp(`Tags of ${web}: web, db`))

  const bad = await alice.post(`/systems/${web}/tags`, { tags: 'ok, <script>x' })
  t.equal(bad.status, 303, 'refused: back to the page with a message')
  t.same((await admin.listSystems()).find((s) => s.identity === web)?.tags, ['web', 'db'], 'unchanged')
  const shown = await alice.get(bad.location as string)
  t.equal(flashOf(shown.body)?.[1], 'error')
  t.ok(flashOf(shown.body)?.[2].includes('tag &quot;&lt;script&gt;x&quot;'), 'the reason names the tag, escaped')
  t.ok(noInjected(shown.body))

  const fromDetail = await alice.post(`/systems/${web}/tags`, { tags: 'web', from: 'detail' })
  t.equal(fromDetail.location, `/systems/${web}`, 'from the details page, back there')
  t.same((await admin.listSystems()).find((s) => s.identity === web)?.tags, ['web'])
})

t.test('routes and state from the system page', async (t) => {
  const add = await alice.post(`/systems/${web}/routes`, { action: 'add', cidr: '10.9.0.0/24' })
  t.equal(add.status, 303)
  t.same(await admin.listRoutes(), [{ identity: web, cidr: '10.9.0.0/24', source: 'admin', approved: true }])
  const page = await alice.get(`/systems/${web}`)
  t.ok(page.body.includes('10.9.0.0/24'), 'the route is listed')
  t.match(page.body, /Gateway consent<\/dt><dd>not allowed/)
  t.match(page.body, /route\.add/, 'the audit trail has the change')
  const rm = await alice.post(`/systems/${web}/routes`, { action: 'remove', cidr: '10.9.0.0/24' })
  t.equal(rm.status, 303)
  t.same(await admin.listRoutes(), [])
  const dis = await alice.post(`/systems/${pendA}/state`, { action: 'disable' })
  t.equal(dis.status, 303)
  t.equal(await stateOf(pendA), 'disabled')
  const en = await alice.post(`/systems/${pendA}/state`, { action: 'enable', from: 'detail' })
  t.equal(en.location, `/systems/${pendA}`)
  t.equal(await stateOf(pendA), 'approved')
})

t.test('enrolment keys: created and shown once, usable, revocable', async (t) => {
  const r = await alice.post('/keys', { description: 'servers', tags: 'web', uses: '2', for: '7d', approval: 'auto' })
  t.equal(r.status, 200, 'the answer is the page itself, not a redirect')
  t.equal(h1(r.body), 'Enrolment key created')
  t.match(r.body, /Shown once/)
  const key = /<code id="new-key">([^<]+)<\/code>/.exec(r.body)?.[1] as string
  t.ok(key, 'the key is in #new-key')
  const cmd = /<pre id="join-command">([^<]+)<\/pre>/.exec(r.body)?.[1]
  t.equal(cmd, `sudo enclave enrol ${key} --hub http://127.0.0.1:${hub.port} --hub-key ${hubKey}`, 'the join command')
  const info = (await admin.listKeys()).find((k) => k.keyId === key.slice(0, 5))
  t.ok(info, 'listKeys has it')
  t.equal(info?.description, 'servers')
  t.same(info?.tags, ['web'])
  t.equal(info?.usesRemaining, 2)
  t.equal(info?.autoApprove, true)
  const days = (Date.parse(info?.expiresAt as string) - Date.now()) / 86400_000
  t.ok(days > 6.9 && days <= 7, 'expires in 7 days')
  const id = await enrolSystem(key, 'server-1')
  t.equal(await stateOf(id), 'approved', 'the key enrols a system, approved automatically')
  t.same((await admin.listSystems()).find((s) => s.identity === id)?.tags, ['web'])

  const list = await alice.get('/keys')
  t.ok(list.body.includes(key.slice(0, 5)), 'the list shows the key id')
  t.notOk(list.body.includes(key), 'but never the key again')
  t.ok(list.body.includes(`aria-label="Revoke key ${key.slice(0, 5)}"`))

  const dup = await alice.post('/keys', { description: 'servers', approval: 'manual' })
  t.equal(dup.status, 303, 'a taken description: back with the reason')
  t.match(flashOf((await alice.get(dup.location as string)).body)?.[2], /named &quot;servers&quot; exists/)
  const badFor = await alice.post('/keys', { description: 'other', for: 'soon', approval: 'manual' })
  t.equal(badFor.status, 303)
  t.match(flashOf((await alice.get(badFor.location as string)).body)?.[2], /not a duration/)
  t.notOk(
    (await admin.listKeys()).some((k) => k.description === 'other'),
    'nothing created',
  )

  const rv = await alice.post(`/keys/${key.slice(0, 5)}/revoke`, {})
  t.equal(rv.status, 303)
  t.equal((await admin.listKeys()).find((k) => k.keyId === key.slice(0, 5))?.state, 'revoked', 'revoked in the store')
  const again = await admin.enrol({
    publicKey: generateKeyPair().publicKey.toString('base64'),
    key,
    hostname: 'late',
    listenPort: 51820,
    endpoint: null,
    helloTs: helloTimestamp(Date.now()),
    allowGateway: false,
    acceptDefaultRoute: false,
    advertised: [],
  })
  t.equal(again.ok ? 'ok' : again.code, 'KEY_REVOKED', 'a revoked key enrols nothing')
})

t.test('policies: Preview lists the pairs and saves nothing, Save saves, mistakes keep the form', async (t) => {
  const form = { original: '', description: EVIL_POLICY, senders: 'laptop', receivers: 'web', acl: 'icmp\r\ntcp:22', enabled: '1' }
  const pv = await alice.post('/policies', { ...form, action: 'preview' })
  t.equal(pv.status, 200)
  t.equal(h1(pv.body), 'New policy')
  const section = /<section id="preview"[^>]*>(.*?)<\/section>/s.exec(pv.body)?.[1] ?? ''
  const lines = [...section.matchAll(/<li[^>]*>(.*?)<\/li>/g)].map((m) => m[1])
  const servers = (await admin.listSystems()).filter((s) => s.tags.includes('web')).map((s) => s.identity)
  t.same(lines.sort(), servers.map((w) => `+ ${laptop} -&gt; ${w} (icmp,tcp:22)`).sort(), 'one line per pair it opens')
  t.ok(pv.body.includes(`value="${esc(EVIL_POLICY)}"`), 'the form keeps the name, escaped')
  t.match(pv.body, />icmp\r?\ntcp:22<\/textarea>/, 'and the ACLs')
  t.same(await admin.listPolicies(), [], 'Preview saved nothing')

  const bad = await alice.post('/policies', { ...form, senders: '', action: 'preview' })
  t.equal(bad.status, 400, 'a mistake: the form again with the reason')
  t.equal(flashOf(bad.body)?.[1], 'error')
  t.match(flashOf(bad.body)?.[2], /--senders: name at least one tag/)
  t.ok(bad.body.includes('value="web"'), 'what was typed is kept')
  t.notMatch(bad.body, /id="preview"/)
  const badAcl = await alice.post('/policies', { ...form, acl: 'tcp:99999', action: 'save' })
  t.equal(badAcl.status, 400)
  t.match(flashOf(badAcl.body)?.[2], /port 99999 is above 65535/)
  t.same(await admin.listPolicies(), [], 'nothing saved')

  const save = await alice.post('/policies', { ...form, action: 'save' })
  t.equal(save.status, 303)
  t.equal(save.location, '/policies')
  const [p] = await admin.listPolicies()
  t.equal(p?.description, EVIL_POLICY, 'saved under its name')
  t.same(p?.body, { SenderTags: ['laptop'], ReceiverTags: ['web'], Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '22' }] })
  t.equal(p?.enabled, true)
  const list = await alice.get('/policies')
  t.ok(list.body.includes(esc(EVIL_POLICY)), 'the list escapes the name')
  t.ok(noInjected(list.body), 'no <img> came through')
  t.ok(list.body.includes(`href="/policies/${p.id}/edit"`))
  t.match(flashOf(list.body)?.[2], /created: 2 pairs opened/)
  const tags = await alice.get('/tags')
  t.ok(tags.body.includes(`<a href="/policies/${p.id}/edit">${esc(EVIL_POLICY)}</a>`), 'the tags page names the policy')

  const edit = await alice.get(`/policies/${p.id}/edit`)
  t.equal(h1(edit.body), 'Edit policy')
  t.ok(edit.body.includes(`name="original" value="${esc(EVIL_POLICY)}"`))
  t.ok(edit.body.includes('value="laptop"') && / checked>/.test(edit.body), 'filled in, enabled')
  const off = { ...form, original: EVIL_POLICY }
  delete (off as Partial<typeof off>).enabled
  const pvOff = await alice.post('/policies', { ...off, action: 'preview' })
  t.equal(h1(pvOff.body), 'Edit policy')
  t.match(pvOff.body, new RegExp(`<li class="minus mono">- ${laptop} -&gt; ${web} \\(icmp,tcp:22\\)</li>`), 'disabling closes the pairs')
  t.equal((await admin.listPolicies())[0].enabled, true, 'still enabled')
  const same = await alice.post('/policies', { ...form, original: EVIL_POLICY, action: 'preview' })
  t.match(same.body, /No sender -> receiver pair changes/)
  const saveOff = await alice.post('/policies', { ...off, action: 'save' })
  t.equal(saveOff.status, 303)
  t.equal((await admin.listPolicies())[0].enabled, false, 'saved disabled')

  const renamed = await alice.post('/policies', { ...off, description: 'laptops to web', action: 'save' })
  t.equal(renamed.status, 303)
  t.same(
    (await admin.listPolicies()).map((x) => x.description),
    ['laptops to web'],
    'renamed',
  )

  const [q] = await admin.listPolicies()
  const del = await alice.post(`/policies/${q.id}/delete`, {})
  t.equal(del.status, 303)
  t.same(await admin.listPolicies(), [], 'deleted')
  t.equal((await alice.get(`/policies/${q.id}/edit`)).status, 404, 'its edit page is gone')
})

t.test('audit log filters', async (t) => {
  const all = await alice.get('/audit')
  t.match(all.body, /alice@portal/)
  t.match(all.body, /test-admin/)
  const mine = await alice.get('/audit?actor=alice&q=policy')
  t.equal(mine.status, 200)
  const rows = /<tbody>(.*?)<\/tbody>/s.exec(mine.body)?.[1] ?? ''
  t.match(rows, /policy\.create/)
  t.notMatch(rows, /test-admin/, 'other actors filtered out')
  t.notMatch(rows, /system\.approve/, 'other actions filtered out')
  t.ok(mine.body.includes('name="actor" value="alice"'), 'the filter is kept in the form')
  const one = await alice.get(`/audit?target=${web}`)
  const oneRows = [...(/<tbody>(.*?)<\/tbody>/s.exec(one.body)?.[1] ?? '').matchAll(/<tr>.*?<\/tr>/gs)].map((m) => m[0])
  t.ok(oneRows.length > 0, "a system's trail")
  t.ok(
    oneRows.every((r) => r.includes(web)),
    'every row names the system',
  )
})

t.test('a viewer sees the pages without change forms', async (t) => {
  const key = await admin.createKey('viewer test', {})
  const p = await enrolSystem(key.key, 'pending-for-viewer')
  const victor = new Browser()
  await victor.login('victor')
  const pend = await victor.get('/systems/pending')
  t.equal(pend.status, 200)
  t.ok(pend.body.includes(p), 'the pending system is listed')
  t.notMatch(pend.body, /name="identity"|value="approve"/, 'no checkbox, no Approve')
  const sys = await victor.get('/systems')
  t.notMatch(sys.body, /name="tags"|value="disable"|value="remove"/, 'no tag inputs, no state buttons')
  t.notMatch((await victor.get('/keys')).body, /Create key|Revoke/, 'no key forms')
  t.notMatch((await victor.get('/policies')).body, /New policy|Delete/, 'no policy forms')
  t.notMatch((await victor.get('/policies/new')).body, /Save policy|Preview/, 'no policy buttons')
  t.notMatch((await victor.get(`/systems/${web}`)).body, /Add route/, 'no route forms')
  const refused = await victor.post('/systems/pending', [
    ['identity', p],
    ['action', 'approve'],
  ])
  t.equal(refused.status, 403, 'the server refuses a viewer anyway')
  t.equal(await stateOf(p), 'pending')
})
