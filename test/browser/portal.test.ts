/**
 * The hub's portal in a real browser (issue 21): Debian's chromium through playwright-core against an
 * in-process hub (its agent listener and its portal on loopback), with simulated agents speaking the
 * real hub protocol (test/helpers/hub-agent.ts). Logging in and its limit, a manual key created in the
 * browser and an agent approved with it (its map arrives within a second of the click), tags edited in
 * place and a policy previewed then saved (both agents' maps change), a key revoked (enrolment refused),
 * and the refusals: a form without its CSRF token, a logged-out session, a viewer's forged approve.
 * Every page is screenshotted into test-results/portal/. No root needed; every packet stays on loopback.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { type APIRequestContext, type BrowserContext, type Locator, type Page, request } from 'playwright-core'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubAuth } from '../../src/hub/auth.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { createLogger } from '../../src/log/logger.js'
import { BrowserHarness, browserMissing, logIn, shot } from '../helpers/browser.js'
import { type HubMessage, type SimAgent, mapHeld, simAgent } from '../helpers/hub-agent.js'

const ADMIN = { user: 'alice', password: 'correct horse battery' }
const VIEWER = { user: 'victor', password: 'viewer horse battery' }

interface Hub {
  dir: string
  hub: HubServer
  store: HubStore
  admin: HubAdmin
  hubKey: string
  /** The agents' listener. */
  port: number
  log: string[]
  base: string
}

/** A hub in a temp dir with its portal on 127.0.0.1, an admin and a viewer account. */
async function startHub(name: string): Promise<Hub> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-portal-${name}-${process.pid}-`))
  const lines: string[] = []
  const log = createLogger(4, 'logfmt', { out: { write: (l: string) => void lines.push(l) } })
  const hubKey = (await initHub(dir, '127.0.0.1:0')).publicKey
  const store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  const auth = new HubAuth(store)
  await auth.addAdmin('test', ADMIN.user, ADMIN.password, 'admin')
  await auth.addAdmin('test', VIEWER.user, VIEWER.password, 'viewer')
  const hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: '127.0.0.1:0', log, reflectPorts: [] })
  await hub.start()
  if (!hub.portal) throw new Error('the hub started without its portal')
  return {
    dir,
    hub,
    store,
    admin: new HubAdmin(store, 'test'),
    hubKey,
    port: hub.port,
    log: lines,
    base: `http://127.0.0.1:${hub.portal.port}`,
  }
}

async function stopHub(h: Hub): Promise<void> {
  await h.hub.stop()
  await h.store.close()
  fs.rmSync(h.dir, { recursive: true, force: true })
}

/** A node's text (trimmed; empty when absent). */
const textOf = async (l: Locator) => ((await l.textContent()) ?? '').trim()
const h1 = (page: Page) => textOf(page.locator('h1'))
const csrfOf = (page: Page) => page.locator('input[name="_csrf"]').first().inputValue()
const approvedMap = (m: HubMessage) =>
  (m.t === 'map' && (m.map as { Self: { State: string } }).Self.State === 'approved') ||
  (m.t === 'delta' && (m.delta as { Self?: { State: string } }).Self?.State === 'approved')

function flows() {
  const hubs: Hub[] = []
  const agents: SimAgent[] = []
  const requests: APIRequestContext[] = []
  let main: Hub
  let browser: BrowserHarness
  let adminCtx: BrowserContext
  let page: Page
  /** Shared by the flows, in order. */
  let key = ''
  let keyId = ''
  let a: SimAgent
  let b: SimAgent

  t.before(async () => {
    main = await startHub('main')
    hubs.push(main)
    browser = await BrowserHarness.launch(t)
    adminCtx = await browser.context(main.base)
    page = await adminCtx.newPage()
  })
  t.teardown(async () => {
    for (const x of agents) x.close()
    for (const r of requests) await r.dispose().catch(() => {})
    await browser?.close()
    for (const h of hubs) await stopHub(h)
  })

  t.test('1. log in: a wrong password is refused, 5 failures a minute limit the 6th, then the right one lands', async (t) => {
    // The limit is per address (all of loopback here): its own hub, so that the other flows can log in.
    const lim = await startHub('limit')
    hubs.push(lim)
    const ctx = await browser.context(lim.base)
    const p = await ctx.newPage()
    await p.goto('/systems')
    t.match(new URL(p.url()).pathname, '/login', 'a page without a session sends the browser to /login')
    t.equal(await h1(p), 'Log in', 'its heading')
    await shot(p, 'login')
    for (let i = 1; i <= 5; i++) {
      const r = await logIn(p, { user: ADMIN.user, password: `wrong password ${i}` })
      t.equal(r.status(), 401, `wrong password ${i}: 401`)
      t.match(await textOf(p.locator('main')), 'Wrong user name or password.', `wrong password ${i}: the page says so`)
    }
    await shot(p, 'login-refused')
    const sixth = await logIn(p, ADMIN)
    t.equal(sixth.status(), 429, 'the 6th attempt within the minute, with the right password: 429')
    t.match(await textOf(p.locator('main')), /Too many attempts: try again in \d+ s\./, 'the page says how long to wait')
    t.ok(Number(sixth.headers()['retry-after']) > 0, 'with a Retry-After')
    t.match(new URL(p.url()).pathname, '/login', 'still on the login page')
    await shot(p, 'login-limited')
    t.notOk(
      (await ctx.cookies()).some((c) => c.name === 'enclave_hub'),
      'no session cookie was given while limited',
    )

    // The main hub: one wrong password (under the limit), then the right one lands on a page.
    await page.goto('/login')
    const wrong = await logIn(page, { user: ADMIN.user, password: 'not the password' })
    t.equal(wrong.status(), 401, 'main hub: a wrong password is refused with 401')
    const ok = await logIn(page, ADMIN)
    t.equal(ok.status(), 303, 'the right password: 303 to the portal')
    t.not(new URL(page.url()).pathname, '/login', `landed on ${new URL(page.url()).pathname}`)
    t.equal(await h1(page), 'Systems', 'nothing pending: / lands on Systems')
    t.ok((await adminCtx.cookies()).find((c) => c.name === 'enclave_hub')?.httpOnly, 'the session cookie is HttpOnly')
    await shot(page, 'systems-empty')
  })

  t.test('2. a manual key made in the browser; two agents enrol, wait, and get their maps within 1 s of Approve', async (t) => {
    await page.goto('/keys')
    t.equal(await h1(page), 'Enrolment keys', 'its heading')
    await page.locator('[name="description"]').fill('browser fleet')
    await page.locator('[name="tags"]').fill('fleet')
    await page.locator('[name="uses"]').fill('3')
    await page.locator('[name="for"]').fill('7d')
    await page.locator('select[name="approval"]').selectOption('manual')
    await shot(page, 'keys')
    const [created] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/keys' && r.request().method() === 'POST'),
      page.getByRole('button', { name: 'Create key', exact: true }).click(),
    ])
    await page.waitForLoadState()
    t.equal(created.status(), 200, 'the key is shown on the answer to the POST (no redirect)')
    t.equal(await h1(page), 'Enrolment key created', 'its heading')
    key = await textOf(page.locator('#new-key'))
    t.match(key, /^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$/, 'the key is in #new-key')
    keyId = key.slice(0, 5)
    const join = await textOf(page.locator('#join-command'))
    t.match(join, `enclave enrol ${key}`, 'the join command carries the key')
    t.match(join, `--hub http://127.0.0.1:${main.hub.port}`, "and the hub's agent listener")
    t.match(join, `--hub-key ${main.hubKey}`, "and the hub's public key")
    t.match(await textOf(page.locator('main')), 'Shown once', 'saying it is shown once')
    await shot(page, 'key-created')
    const stored = (await main.admin.listKeys()).find((k) => k.keyId === keyId)
    t.ok(stored, 'the store has the key')
    t.same(
      stored && { tags: stored.tags, autoApprove: stored.autoApprove, state: stored.state },
      { tags: ['fleet'], autoApprove: false, state: 'enabled' },
      'with its tags, manual approval, enabled',
    )

    a = await simAgent(main, { enrol: { key }, hostname: 'alpha' })
    b = await simAgent(main, { enrol: { key }, hostname: 'beta' })
    agents.push(a, b)
    for (const x of [a, b]) {
      t.equal(x.payload.t, 'welcome', `${x.identity}: welcomed`)
      t.equal(x.payload.state, 'pending', `${x.identity}: pending (a manual key)`)
      t.notOk(
        x.received.some((r) => approvedMap(r.m)),
        `${x.identity}: no approved map yet`,
      )
    }

    await page.goto('/systems/pending')
    t.equal(await h1(page), 'Pending systems', 'its heading')
    const rows = await textOf(page.locator('main'))
    for (const x of [a, b]) t.match(rows, x.identity, `${x.identity} is listed as pending`)
    t.match(rows, 'alpha', 'with its host name')
    await page.getByLabel(`Select ${a.identity}`, { exact: true }).check()
    await page.getByLabel(`Select ${b.identity}`, { exact: true }).check()
    await shot(page, 'pending')
    const since = [a.received.length, b.received.length]
    const clickStart = performance.now()
    await page.getByRole('button', { name: 'Approve', exact: true }).click()
    const clicked = performance.now()
    const got = await Promise.all(
      [a, b].map(async (x, i) => {
        const state = await x.next((m) => m.t === 'state' && m.state === 'approved', 3000, since[i])
        const map = await x.next(approvedMap, 3000, since[i])
        return { state, map }
      }),
    )
    await page.waitForLoadState()
    for (const [i, x] of [a, b].entries()) {
      const ms = Math.max(got[i].state.at, got[i].map.at) - clicked
      const fromStart = Math.max(got[i].state.at, got[i].map.at) - clickStart
      t.comment(
        `${x.identity}: state approved and its map ${fromStart.toFixed(0)} ms after the click started, ${ms.toFixed(0)} ms from its completion (the click, with the POST and the page it loads, took ${(clicked - clickStart).toFixed(0)} ms)`,
      )
      t.ok(got[i].map.at >= clickStart, `${x.identity}: the approved map came after the click started`)
      t.ok(ms < 1000, `${x.identity}: state approved and its map within 1 s of Approve (${ms.toFixed(0)} ms)`)
    }
    const pendingNow = await main.admin.listSystems({ pending: true })
    t.same(
      pendingNow.map((s) => s.identity),
      [],
      'nothing is pending in the store',
    )
    t.equal(await h1(page), 'Systems', 'after Approve, nothing is pending: the portal shows Systems')
    await shot(page, 'approved')
  })

  t.test('3. tags edited in place; a policy previewed then saved: both maps now hold the other', async (t) => {
    if (!a || !b) return t.fail('flow 2 did not enrol two agents')
    await page.goto('/systems')
    t.equal(await h1(page), 'Systems', 'its heading')
    await shot(page, 'systems')
    const tags = page.getByLabel(`Tags of ${b.identity}`, { exact: true })
    t.equal((await tags.inputValue()).replace(/\s/g, ''), 'fleet', "the input holds b's tags")
    await tags.fill('fleet, db')
    await page.getByRole('button', { name: `Save tags of ${b.identity}`, exact: true }).click()
    await page.waitForLoadState()
    const bRow = (await main.admin.listSystems()).find((s) => s.identity === b.identity)
    t.same(bRow?.tags, ['fleet', 'db'], 'the store has the new tags')
    t.equal(
      (await page.getByLabel(`Tags of ${b.identity}`, { exact: true }).inputValue()).replace(/\s/g, ''),
      'fleet,db',
      'the page shows them',
    )

    await page.goto(`/systems/${a.identity}`)
    t.equal(await h1(page), `System ${a.identity}`, 'its heading')
    t.match(await textOf(page.locator('main')), 'alpha', 'with its host name')
    await shot(page, 'system')

    await page.goto('/tags')
    t.equal(await h1(page), 'Tags', 'its heading')
    t.ok(await page.locator(`a[href="/systems/${b.identity}"]`).count(), 'the tags page links the systems carrying them')
    await shot(page, 'tags')

    await page.goto('/policies')
    t.equal(await h1(page), 'Policies', 'its heading')
    await page.getByRole('link', { name: 'New policy', exact: true }).click()
    await page.waitForLoadState()
    t.equal(new URL(page.url()).pathname, '/policies/new', 'New policy links to /policies/new')
    t.equal(await h1(page), 'New policy', 'its heading')
    await page.locator('[name="description"]').fill('fleet to db')
    await page.locator('[name="senders"]').fill('fleet')
    await page.locator('[name="receivers"]').fill('db')
    await page.locator('[name="acl"]').fill('icmp')
    const enabled = page.locator('input[name="enabled"]')
    if (!(await enabled.isChecked())) await enabled.check()
    const mapsBefore = [a.received.length, b.received.length]
    await page.getByRole('button', { name: 'Preview', exact: true }).click()
    await page.waitForLoadState()
    const preview = await textOf(page.locator('#preview'))
    t.match(preview, `+ ${a.identity} -> ${b.identity}`, 'the preview lists the pair it opens')
    t.notMatch(preview, `${b.identity} -> ${a.identity}`, 'and not the other way (a is not a receiver)')
    t.equal(await page.locator('[name="senders"]').inputValue(), 'fleet', 'the form is still filled in')
    t.same(
      (await main.admin.listPolicies()).map((p) => p.description),
      [],
      'a preview saves nothing',
    )
    await shot(page, 'policy-preview')
    await page.getByRole('button', { name: 'Save policy', exact: true }).click()
    await page.waitForLoadState()
    t.same(
      (await main.admin.listPolicies()).map((p) => p.description),
      ['fleet to db'],
      'saved',
    )
    t.match(await textOf(page.locator('main')), 'fleet to db', 'the policies page lists it')
    await shot(page, 'policies')

    const holds = (x: SimAgent, other: SimAgent) => !!mapHeld(x.received)?.Peers.some((p) => p.Identity === other.identity)
    await a.next(() => holds(a, b), 3000, mapsBefore[0])
    await b.next(() => holds(b, a), 3000, mapsBefore[1])
    t.ok(holds(a, b), `${a.identity}'s map now holds ${b.identity}`)
    t.ok(holds(b, a), `${b.identity}'s map now holds ${a.identity}`)
  })

  t.test('4. a key revoked in the browser enrols nobody', async (t) => {
    if (!key) return t.fail('flow 2 made no key')
    await page.goto('/keys')
    await page.getByRole('button', { name: `Revoke key ${keyId}`, exact: true }).click()
    await page.waitForLoadState()
    t.equal((await main.admin.listKeys()).find((k) => k.keyId === keyId)?.state, 'revoked', 'the store says revoked')
    await shot(page, 'keys-revoked')
    const c = await simAgent(main, { enrol: { key }, hostname: 'gamma' })
    agents.push(c)
    t.equal(c.payload.t, 'error', 'the hub refuses the enrolment')
    t.equal(c.payload.code, 'KEY_REVOKED', `with KEY_REVOKED: ${c.payload.message}`)
    t.equal((await c.closed).code, 4000 + 'KEY_REVOKED'.length, 'and closes the connection')
    t.notOk(
      (await main.admin.listSystems()).some((s) => s.identity === c.identity),
      'no system was recorded',
    )

    await page.goto('/audit')
    t.equal(await h1(page), 'Audit log', 'its heading')
    const audit = await textOf(page.locator('main'))
    for (const action of ['key.create', 'system.tags', 'policy.create', 'key.revoke'])
      t.match(audit, action, `the audit log shows ${action}`)
    t.match(audit, `${ADMIN.user}@portal`, 'done by <user>@portal')
    await shot(page, 'audit')
  })

  t.test('5. refused: a form without its CSRF token, a logged-out session, a viewer approving', async (t) => {
    if (!a) return t.fail('flow 2 did not enrol an agent')
    const tagsOf = async (id: string) => (await main.admin.listSystems()).find((s) => s.identity === id)?.tags
    const auditCount = async () => (await main.admin.auditLog(1000)).length
    const tagsBefore = await tagsOf(a.identity)
    const auditBefore = await auditCount()

    // The session cookie rides along (the context's), the hidden _csrf field does not.
    const noCsrf = await adminCtx.request.post(`/systems/${a.identity}/tags`, { form: { tags: 'stolen' }, maxRedirects: 0 })
    t.equal(noCsrf.status(), 403, 'a POST without _csrf: 403')
    t.match(await noCsrf.text(), 'CSRF', 'saying why')
    const wrongCsrf = await adminCtx.request.post(`/systems/${a.identity}/tags`, {
      form: { tags: 'stolen', _csrf: 'x'.repeat(43) },
      maxRedirects: 0,
    })
    t.equal(wrongCsrf.status(), 403, 'with a wrong _csrf: 403')
    // The same through the page: the hidden field removed from the form (evaluate goes through CDP, not the page's scripts the CSP forbids).
    await page.goto('/systems')
    const hidden = page.locator(`form[action="/systems/${a.identity}/tags"] input[name="_csrf"]`)
    t.equal(await hidden.count(), 1, 'the form carries its hidden _csrf field')
    await hidden.evaluate((el) => el.remove())
    t.equal(await hidden.count(), 0, 'removed')
    await page.getByLabel(`Tags of ${a.identity}`, { exact: true }).fill('stolen')
    const [formRes] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST'),
      page.getByRole('button', { name: `Save tags of ${a.identity}`, exact: true }).click(),
    ])
    t.equal(formRes.status(), 403, 'the form without its hidden field: 403')
    t.same(await tagsOf(a.identity), tagsBefore, 'the tags did not change')
    t.equal(await auditCount(), auditBefore, 'nothing was written')

    // Log out: the old cookie is dead, with or without its old CSRF token.
    await page.goto('/systems')
    const oldCsrf = await csrfOf(page)
    const oldCookie = (await adminCtx.cookies()).find((c) => c.name === 'enclave_hub')?.value
    t.ok(oldCookie, 'a session cookie before logging out')
    await page.getByRole('button', { name: 'Log out', exact: true }).click()
    await page.waitForLoadState()
    t.equal(new URL(page.url()).pathname, '/login', 'Log out lands on /login')
    const replay = await request.newContext({ baseURL: main.base, extraHTTPHeaders: { cookie: `enclave_hub=${oldCookie}` } })
    requests.push(replay)
    const get = await replay.get('/systems', { maxRedirects: 0 })
    t.equal(get.status(), 303, 'the old cookie: a GET is redirected')
    t.match(get.headers().location ?? '', /^\/login/, 'to /login')
    const post = await replay.post(`/systems/${a.identity}/tags`, { form: { tags: 'stolen', _csrf: oldCsrf }, maxRedirects: 0 })
    t.equal(post.status(), 403, 'the old cookie and its old CSRF token: a POST is refused')
    t.same(await tagsOf(a.identity), tagsBefore, 'the tags did not change')

    // A viewer sees what is pending but cannot approve it, not even with a forged POST.
    const k = await main.admin.createKey('viewer test', { uses: 1 })
    const d = await simAgent(main, { enrol: { key: k.key }, hostname: 'delta' })
    agents.push(d)
    t.equal(d.payload.state, 'pending', 'a new system waits')
    const viewerCtx = await browser.context(main.base)
    const vp = await viewerCtx.newPage()
    await vp.goto('/login')
    t.equal((await logIn(vp, VIEWER)).status(), 303, 'the viewer logs in')
    await vp.goto('/systems/pending')
    t.equal(await h1(vp), 'Pending systems', 'its heading')
    t.match(await textOf(vp.locator('main')), d.identity, 'the viewer sees the pending system')
    t.equal(await vp.getByRole('button', { name: 'Approve', exact: true }).count(), 0, 'but no Approve button')
    t.equal(await vp.getByRole('button', { name: 'Decline', exact: true }).count(), 0, 'and no Decline button')
    await shot(vp, 'pending-viewer')
    const vCsrf = await csrfOf(vp)
    const forged = await viewerCtx.request.post('/systems/pending', {
      form: { _csrf: vCsrf, identity: d.identity, action: 'approve' },
      maxRedirects: 0,
    })
    t.equal(forged.status(), 403, "the viewer's forged approve (with its valid CSRF token): 403")
    t.match(await forged.text(), 'viewer', 'saying a viewer changes nothing')
    t.equal((await main.admin.listSystems()).find((s) => s.identity === d.identity)?.state, 'pending', 'the system stays pending')
    t.notOk(
      d.received.some((r) => approvedMap(r.m)),
      'and its agent got no approved map',
    )
  })
}

const missing = browserMissing()
if (missing) t.skip(`the portal in a browser: ${missing}`)
else flows()
