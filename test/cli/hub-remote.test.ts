/**
 * `enclave hub … --hub-api <url>` (issue 21): the built CLI against a hub running in this process with
 * its portal on a loopback port. The token comes from $ENCLAVE_HUB_TOKEN or stdin (--token-stdin);
 * changes land in the hub's database with the token as actor; a missing or revoked token, an API
 * error and an unreachable hub are each one line with the CLI's exit code.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { createLogger } from '../../src/log/logger.js'

const BIN = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/run.js')

function cli(args: string[], env: Record<string, string> = {}, input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const e: NodeJS.ProcessEnv = { ...process.env, DEBUG: '' }
    delete e.ENCLAVE_HUB_API
    delete e.ENCLAVE_HUB_TOKEN
    delete e.ENCLAVE_HUB_DIR
    const child = execFile(process.execPath, [BIN, ...args], { env: { ...e, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) })
    })
    child.stdin?.end(input)
  })
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hubremote-${process.pid}-`))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const dir = path.join(tmp, 'hub')

let hub: HubServer
let url = ''
let admin: HubAdmin

t.before(async () => {
  await initHub(dir, '127.0.0.1:0')
  hub = new HubServer({
    dataDir: dir,
    listen: '127.0.0.1:0',
    portal: '127.0.0.1:0',
    reflectPorts: [],
    log: createLogger(0, 'logfmt', { out: { write: () => {} } }),
  })
  await hub.start()
  url = `http://127.0.0.1:${hub.portal?.port}`
  admin = new HubAdmin((hub.portal as NonNullable<typeof hub.portal>).auth.store, 'test')
})
t.teardown(() => hub?.stop())

/** One line, no stack trace. */
const oneLine = (s: string) => s.trim().split('\n').length === 1 && !/\n\s+at /.test(s)

let token = ''
let tokenId = ''

t.test('hub token create --json on the hub host, then hub key create --hub-api with ENCLAVE_HUB_TOKEN', async (t) => {
  const c = await cli(['hub', 'token', 'create', 'laptop of alice', '--for', '90d', '--json', '--data-dir', dir])
  t.equal(c.code, 0, c.stderr)
  const out = JSON.parse(c.stdout).token
  token = out.token
  tokenId = out.tokenId
  t.match(token, /^ehub_[0-9a-f]{10}_[A-Za-z0-9_-]{27}$/)
  t.equal(out.role, 'admin')
  t.ok(Date.parse(out.expiresAt) > Date.now() + 89 * 86400_000, 'expires in 90 days')

  const plain = await cli(['hub', 'token', 'create', 'another', '--viewer', '--data-dir', dir])
  t.equal(plain.code, 0, plain.stderr)
  t.match(plain.stdout, /^ehub_[0-9a-f]{10}_\S{27}\n/, 'the token first')
  t.match(plain.stdout, /Shown once: the hub keeps only its hash/)
  t.match(plain.stdout, /export ENCLAVE_HUB_TOKEN=ehub_/)
  t.match(plain.stdout, /--hub-api http:\/\/127\.0\.0\.1:8444/, 'how to use it (hub.json has the default portal address)')

  const k = await cli(['hub', 'key', 'create', 'office laptops', '--tags', 'laptops', '--uses', '2', '--hub-api', url], {
    ENCLAVE_HUB_TOKEN: token,
  })
  t.equal(k.code, 0, k.stderr)
  t.equal(k.stderr, '', 'loopback: no plain-HTTP warning')
  const keys = await admin.listKeys()
  const made = keys.find((x) => x.description === 'office laptops')
  t.ok(made, 'the key is in the hub database')
  t.same(made?.tags, ['laptops'])
  t.equal(made?.usesRemaining, 2)
  t.equal(k.stdout.split('\n')[0].slice(0, 5), made?.keyId, 'the key printed is the one stored')
  const log = await admin.auditLog(10, { actor: `token:${tokenId}` })
  t.same(
    log.map((e) => [e.action, e.target]),
    [['key.create', made?.keyId]],
    'its audit row names the token',
  )
})

t.test('the same commands remotely and locally give the same results and errors', async (t) => {
  const env = { ENCLAVE_HUB_TOKEN: token }
  const remote = await cli(['hub', 'key', 'list', '--json', '--hub-api', url], env)
  const local = await cli(['hub', 'key', 'list', '--json', '--data-dir', dir])
  t.equal(remote.code, 0, remote.stderr)
  t.same(JSON.parse(remote.stdout), JSON.parse(local.stdout), 'hub key list --json')

  const pol = [
    'hub',
    'policy',
    'create',
    'laptops to servers',
    '--senders',
    'laptops',
    '--receivers',
    'servers',
    '--acl',
    'icmp',
    '--acl',
    'tcp:22',
  ]
  const p = await cli([...pol, '--hub-api', url], env)
  t.equal(p.code, 0, p.stderr)
  t.match(p.stdout, /Created policy "laptops to servers"/)
  t.same(
    (await admin.listPolicies()).map((x) => x.body),
    [{ SenderTags: ['laptops'], ReceiverTags: ['servers'], Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '22' }] }],
    'the policy arrived as the CLI would write it',
  )
  const again = await cli([...pol, '--hub-api', url], env)
  const againLocal = await cli([...pol, '--data-dir', dir])
  t.equal(again.code, againLocal.code, `exit ${again.code} either way`)
  t.equal(again.stderr, againLocal.stderr, 'the same message either way')
  t.ok(oneLine(again.stderr), `one line, no stack: ${again.stderr}`)

  const dis = await cli(['hub', 'policy', 'update', 'laptops to servers', '--disabled', '--hub-api', url], env)
  t.equal(dis.code, 0, dis.stderr)
  t.equal((await admin.listPolicies())[0].enabled, false, 'policy update --disabled')

  const nf = await cli(['hub', 'key', 'revoke', 'no such key', '--hub-api', url], env)
  const nfLocal = await cli(['hub', 'key', 'revoke', 'no such key', '--data-dir', dir])
  t.equal(nf.code, 5, 'not found: exit 5')
  t.equal(nf.stderr, nfLocal.stderr)
  t.ok(oneLine(nf.stderr), `one line, no stack: ${nf.stderr}`)

  const sys = await cli(['hub', 'system', 'approve', 'G982V', '--hub-api', url, '--json'], env)
  t.equal(sys.code, 5)
  t.equal(JSON.parse(sys.stdout).error.code, 'ENOTFOUND', '--json keeps the API error code')

  const viaEnv = await cli(['hub', 'policy', 'list'], { ...env, ENCLAVE_HUB_API: url })
  t.equal(viaEnv.code, 0, viaEnv.stderr)
  t.match(viaEnv.stdout, /laptops to servers: laptops -> servers {2}icmp tcp:22 {2}\(disabled\)/, '$ENCLAVE_HUB_API works like --hub-api')

  const both = await cli(['hub', 'key', 'list', '--hub-api', url, '--data-dir', dir], env)
  t.equal(both.code, 2, '--hub-api and --data-dir exclude each other')
})

t.test('--token-stdin reads the token from the first line of stdin', async (t) => {
  const r = await cli(['hub', 'route', 'list', '--hub-api', url, '--token-stdin', '--json'], {}, `${token}\nsomething else\n`)
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout).routes, [])
  const wrong = await cli(['hub', 'route', 'list', '--hub-api', url, '--token-stdin'], { ENCLAVE_HUB_TOKEN: token }, 'not-the-token\n')
  t.equal(wrong.code, 3, 'with --token-stdin stdin wins over $ENCLAVE_HUB_TOKEN')
  const noApi = await cli(['hub', 'route', 'list', '--token-stdin', '--data-dir', dir], {}, `${token}\n`)
  t.equal(noApi.code, 2, '--token-stdin without --hub-api is a usage error')
})

t.test('no token: one line, exit 3; a viewer token: one line, exit 3', async (t) => {
  const r = await cli(['hub', 'key', 'create', 'x', '--hub-api', url])
  t.equal(r.code, 3)
  t.equal(
    r.stderr,
    'Error: no API token: set $ENCLAVE_HUB_TOKEN or pipe it with --token-stdin (create one on the hub host with `enclave hub token create`)\n',
  )
  const empty = await cli(['hub', 'key', 'list', '--hub-api', url, '--token-stdin'])
  t.equal(empty.code, 3, 'an empty stdin is no token either')

  const v = await cli(['hub', 'token', 'create', 'read only', '--viewer', '--json', '--data-dir', dir])
  const viewer = JSON.parse(v.stdout).token.token
  const list = await cli(['hub', 'system', 'list', '--hub-api', url], { ENCLAVE_HUB_TOKEN: viewer })
  t.equal(list.code, 0, 'a viewer lists')
  const change = await cli(['hub', 'key', 'create', 'x', '--hub-api', url], { ENCLAVE_HUB_TOKEN: viewer })
  t.equal(change.code, 3)
  t.equal(change.stderr, 'Error: a viewer changes nothing: this needs an admin token\n')
  const tok = await cli(['hub', 'token', 'list', '--hub-api', url], { ENCLAVE_HUB_TOKEN: viewer })
  t.equal(tok.code, 3, 'a viewer cannot list tokens')
})

t.test('hub token revoke, then the same command fails with exit 3', async (t) => {
  const env = { ENCLAVE_HUB_TOKEN: token }
  const list = await cli(['hub', 'token', 'list', '--json', '--hub-api', url], env)
  t.equal(list.code, 0, list.stderr)
  t.ok(
    JSON.parse(list.stdout).tokens.some((x: { tokenId: string; state: string }) => x.tokenId === tokenId && x.state === 'active'),
    'hub token list --hub-api',
  )
  t.equal((await cli(['hub', 'key', 'list', '--hub-api', url], env)).code, 0, 'works before')
  const rv = await cli(['hub', 'token', 'revoke', 'laptop', 'of', 'alice', '--data-dir', dir])
  t.equal(rv.code, 0, rv.stderr)
  t.equal(rv.stdout, `Revoked API token ${tokenId} (laptop of alice)\n`, 'by its description, in several words')
  const after = await cli(['hub', 'key', 'list', '--hub-api', url], env)
  t.equal(after.code, 3)
  t.equal(after.stderr, 'Error: the API token is unknown, revoked or expired\n')
})

t.test('an unreachable hub: one line naming the URL and the reason', async (t) => {
  // A loopback port that was free a moment ago.
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
  const r = await cli(['hub', 'key', 'list', '--hub-api', `http://127.0.0.1:${port}`], { ENCLAVE_HUB_TOKEN: 'ehub_0123456789_x' })
  t.equal(r.code, 1)
  t.equal(r.stderr, `Error: cannot reach the hub API at http://127.0.0.1:${port}/api/v1: connect ECONNREFUSED 127.0.0.1:${port}\n`)
  const bad = await cli(['hub', 'key', 'list', '--hub-api', 'ftp://127.0.0.1'], { ENCLAVE_HUB_TOKEN: 'x' })
  t.equal(bad.code, 2)
  t.ok(oneLine(bad.stderr), `one line, no stack: ${bad.stderr}`)
})

t.test('hub admin add reads the password from stdin; hub init names the portal', async (t) => {
  const a = await cli(['hub', 'admin', 'add', 'alice', '--data-dir', dir], {}, 'correct horse battery\n')
  t.equal(a.code, 0, a.stderr)
  t.match(a.stdout, /Added admin account alice/)
  const l = await cli(['hub', 'admin', 'list', '--json', '--data-dir', dir])
  t.same(
    JSON.parse(l.stdout).admins.map((x: { username: string; role: string }) => [x.username, x.role]),
    [['alice', 'admin']],
  )
  const none = await cli(['hub', 'admin', 'add', 'bob', '--data-dir', dir])
  t.equal(none.code, 2, 'no password on stdin')
  t.ok(oneLine(none.stderr), `one line, no stack: ${none.stderr}`)
  const rm = await cli(['hub', 'admin', 'remove', 'alice', '--data-dir', dir])
  t.equal(rm.code, 0, rm.stderr)
  const log = await admin.auditLog(3)
  t.same(log.map((e) => e.action).slice(-2), ['admin.add', 'admin.remove'])
  const init = await cli(['hub', 'init', '--data-dir', path.join(tmp, 'other'), '--listen', '127.0.0.1:0'])
  t.equal(init.code, 0, init.stderr)
  t.match(init.stdout, /\nPortal and admin API: http:\/\/127\.0\.0\.1:8444 \(create an account: enclave hub admin add <user>\)\n/)
})
