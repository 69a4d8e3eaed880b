import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { keyPair } from '../helpers/keys.js'
import { identityFromPublicKey } from '../../src/config/identity.js'

const BIN = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/run.js')

function cli(
  args: string[],
  env: Record<string, string> = {},
  as?: { uid: number; gid: number },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, DEBUG: '', ...env }, ...as }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-'))
const run = path.join(dir, 'run')
const env = { ENCLAVE_RUN_DIR: run }
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
const file = path.join(dir, 'profiles', 'Universe.profile')

t.test('init creates a profile and refuses to overwrite it', async (t) => {
  const r = await cli(['init', '--config-dir', dir, '--json'], env)
  t.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  t.match(out.identity, /^[0-9A-Z]{5}$/)
  t.match(out.virtualAddress, /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\./)
  t.equal(fs.statSync(file).mode & 0o777, 0o600)
  const again = await cli(['init', '--config-dir', dir], env)
  t.not(again.code, 0)
  t.match(again.stderr, /a profile already exists; `enclave rotate-key` gives it a new key and keeps the rest/)
  t.notMatch(again.stderr, /\n\s+at /, 'no stack trace')
})

t.test('ENCLAVE_CONFIG_DIR works like --config-dir', async (t) => {
  const r = await cli(['status', '--offline', '--json'], { ...env, ENCLAVE_CONFIG_DIR: dir })
  t.equal(r.code, 0, r.stderr)
  t.equal(JSON.parse(r.stdout).profileLocation, file)
})

t.test('add and remove edit Peers in place, keeping unknown keys', async (t) => {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8'))
  raw.Custom = { note: 'kept' }
  fs.writeFileSync(file, JSON.stringify(raw))
  const peer = keyPair()
  const id = identityFromPublicKey(peer.pk)
  const r = await cli(['add', peer.pkB64, '--endpoint', '198.18.0.2:51820', '-d', 'office', '--keepalive', '25', '--config-dir', dir], env)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, new RegExp(`Added peer ${id} \\(office\\)`))
  const dup = await cli(['add', peer.pkB64, '--config-dir', dir], env)
  t.match(dup.stderr, new RegExp(`peer ${id} is already in`))
  const bad = await cli(['add', 'AAAA', '--config-dir', dir], env)
  t.match(bad.stderr, /<public key>: "AAAA" decodes to 3 bytes; a key is 32 bytes/)
  t.equal(bad.code, 2)
  const badEp = await cli(['add', keyPair().pkB64, '--endpoint', 'nohost', '--config-dir', dir], env)
  t.equal(badEp.stderr, 'Error: --endpoint: "nohost" is not host:port, e.g. 203.0.113.7:51820 or vpn.example.com:51820\n', 'names the flag')
  t.equal(badEp.code, 2)
  const port0 = await cli(['add', keyPair().pkB64, '--endpoint', '203.0.113.8:0', '--config-dir', dir], env)
  t.match(port0.stderr, /--endpoint: "203\.0\.113\.8:0": port 0 is out of range \(1-65535\)/)
  const own = JSON.parse((await cli(['status', '--offline', '--json', '--config-dir', dir], env)).stdout).publicKey
  const self = await cli(['add', own, '--config-dir', dir], env)
  t.equal(self.stderr.trim().split('\n').length, 1, 'one mistake, one line')
  t.match(self.stderr, /<public key>: is this system's own public key/)
  t.equal(self.code, 2)
  const ident = await cli(['add', 'G982V', '--config-dir', dir], env)
  t.match(ident.stderr, /looks like an identity: peers are added by their public key \(run `enclave pubkey` on that machine\)/)
  const after = JSON.parse(fs.readFileSync(file, 'utf8'))
  t.equal(after.Peers.length, 1, 'the failed add changed nothing')
  t.same(after.Custom, { note: 'kept' })
  t.same(after.Peers[0], {
    PublicKey: peer.pkB64,
    Identity: id,
    Description: 'office',
    Endpoint: '198.18.0.2:51820',
    PersistentKeepalive: 25,
  })

  after.ExitNode = { AvailableRoutes: { [id]: ['172.26.0.0/20'] } }
  fs.writeFileSync(file, JSON.stringify(after))
  const st = await cli(['status', '--offline', '--config-dir', dir], env)
  t.match(st.stdout, new RegExp(`Peer: ${id} \\(office\\)`))
  t.match(st.stdout, / {4}Exit node for \. \. \. : 172\.26\.0\.0\/20/)
  t.match(st.stdout, / {2}Virtual address \. \. : 100\./)
  const rm = await cli(['remove', id.toLowerCase(), '--config-dir', dir], env)
  t.equal(rm.code, 0, rm.stderr)
  t.match(rm.stdout, /and its AvailableRoutes entry/)
  t.match(rm.stdout, /Saved: the agent is not running/)
  const final = JSON.parse(fs.readFileSync(file, 'utf8'))
  t.same(final.Peers, [])
  t.same(final.ExitNode.AvailableRoutes, {})
  const missing = await cli(['remove', 'ZZZZZ', '--config-dir', dir], env)
  t.match(missing.stderr, /no peer ZZZZZ in/)
})

t.test('status without a running agent says so, with the offline view', async (t) => {
  const r = await cli(['status', '--config-dir', dir], env)
  t.equal(r.code, 3)
  t.match(r.stdout, /Agent state \. \. \. \. : Not running/)
  t.match(r.stderr, new RegExp(`agent is not running \\(no socket at ${run}/enclave.sock\\)`))
  const j = await cli(['status', '--json', '--config-dir', dir], env)
  t.equal(JSON.parse(j.stdout).running, false)
})

t.test('a broken profile gives one clear line per problem and no stack', async (t) => {
  fs.writeFileSync(file, '{\n  "PrivateKey": "x",\n}\n')
  const r = await cli(['status', '--offline', '--config-dir', dir], env)
  t.not(r.code, 0)
  t.match(r.stderr, new RegExp(`Error: ${file.replace(/[.]/g, '\\.')}: not valid JSON at line 3, column 1`))
  t.notMatch(r.stderr, /\n\s+at /)
  fs.writeFileSync(file, JSON.stringify({ PrivateKey: keyPair().skB64, ExitNode: { ProvidesRoutes: ['172.26.0.1/20'] } }))
  const r2 = await cli(['status', '--offline', '--config-dir', dir], env)
  t.match(r2.stderr, /ExitNode\.ProvidesRoutes\[0\]: "172\.26\.0\.1\/20" has host bits set; did you mean 172\.26\.0\.0\/20\?/)
})

t.test('run refuses without root, with exit code 4', async (t) => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-home-'))
  t.teardown(() => fs.rmSync(home, { recursive: true, force: true }))
  fs.chmodSync(dir, 0o755)
  fs.chmodSync(home, 0o777)
  // As root, run the CLI as nobody; otherwise this process already is unprivileged.
  const nobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined
  // env -u NODE_OPTIONS: tap's process-info hook would write into .tap/ as nobody and fail.
  const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(
      '/usr/bin/env',
      ['-u', 'NODE_OPTIONS', process.execPath, BIN, 'run', '--config-dir', dir],
      { env: { ...process.env, ...env, HOME: home, DEBUG: '' }, cwd: home, ...nobody },
      (err, _out, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr: String(stderr) }),
    )
  })
  t.equal(r.code, 4, r.stderr)
  t.match(r.stderr, /enclave run needs root \(CAP_NET_ADMIN\)/)
  t.notMatch(r.stderr, /\n\s+at /)
})

t.test('version and help work', async (t) => {
  const v = await cli(['version', '--json'])
  t.equal(v.code, 0)
  t.match(JSON.parse(v.stdout).protocol, /Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s/)
  const h = await cli(['--help'])
  for (const c of [
    'init',
    'add',
    'remove',
    'status',
    'run',
    'demo',
    'reload',
    'loglevel',
    'start',
    'stop',
    'restart',
    'doctor',
    'waitfor',
    'install-service',
    'explain',
  ])
    t.match(h.stdout, new RegExp(`\\n  ${c}\\s`), `help lists ${c}`)
})

t.test('--json errors: {"error": {code, message, problems}} on stdout, with the exit code', async (t) => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-empty-'))
  t.teardown(() => fs.rmSync(empty, { recursive: true, force: true }))
  const noAgent = { ENCLAVE_RUN_DIR: path.join(empty, 'run') }
  const cases: Array<[string[], number, string, RegExp]> = [
    [['add', 'notakey'], 2, 'EUSAGE', /<public key>: "notakey" is not valid base64/],
    [['add', keyPair().pkB64, '--endpoint', 'x'], 2, 'EUSAGE', /--endpoint/],
    [['remove', 'ZZZZZ'], 2, 'EPROFILE', /no profile here; create one with `enclave init`/],
    [['status'], 2, 'EPROFILE', /no profile here/],
    [['status', '--offline'], 2, 'EPROFILE', /no profile here/],
    [['explain', '10.0.0.1'], 3, 'ENOTRUNNING', /agent is not running/],
    [['explain'], 2, 'EUSAGE', /Missing 1 required arg/],
    [['explain', '10.0.0.300'], 2, 'EUSAGE', /<address>: .*10\.0\.0\.300/],
    [['reload'], 3, 'ENOTRUNNING', /agent is not running/],
    [['rekey'], 3, 'ENOTRUNNING', /agent is not running/],
    [['loglevel', 'debug'], 3, 'ENOTRUNNING', /agent is not running/],
    [['loglevel', 'loud'], 2, 'EUSAGE', /"loud" is not a log level/],
    [['exit-node', 'provide', '10.0.0.1/8'], 2, 'EUSAGE', /<cidr>: "10\.0\.0\.1\/8" has host bits set/],
    [['exit-node', 'unprovide', '10.0.0.0/8'], 2, 'EPROFILE', /no profile here/],
    [['route', 'add', 'G982V', '10.0.0.0/8'], 2, 'EPROFILE', /no profile here/],
    [['route', 'remove', 'G982V', '10.0.0.0/8'], 2, 'EPROFILE', /no profile here/],
    [['doctor', '--probe', '8.8.8.8; reboot'], 2, 'EUSAGE', /--probe: .*not an IPv4 address/],
    [['doctor', '--probe=-f'], 2, 'EUSAGE', /--probe: "-f" is not an IPv4 address/],
    [['peers'], 2, 'EPROFILE', /no profile here/],
    [['export', 'wireguard', 'G982V'], 2, 'EPROFILE', /no profile here/],
  ]
  for (const [args, code, errCode, re] of cases) {
    const socketOnly = ['explain', 'reload', 'rekey', 'loglevel'].includes(args[0])
    const r = await cli([...args, '--json', ...(socketOnly ? [] : ['--config-dir', empty])], noAgent)
    const what = args.join(' ')
    t.equal(r.code, code, `${what}: exit code`)
    let out: { error?: { code: string; message: string; problems: unknown[] } } = {}
    try {
      out = JSON.parse(r.stdout)
    } catch {
      t.fail(`${what}: stdout is JSON: ${r.stdout.slice(0, 200)}`)
    }
    t.equal(out.error?.code, errCode, `${what}: code`)
    t.match(out.error?.message, re, `${what}: message`)
    t.ok(Array.isArray(out.error?.problems), `${what}: problems is a list`)
    t.ok(r.stdout.split('\n').length < 40, `${what}: short`)
  }
  const gone = await cli(['reload', '--config-dir', empty], noAgent)
  t.equal(gone.code, 3, 'reload --config-dir names the profile the agent must be running; here no agent runs')
  t.match(gone.stderr, /agent is not running/)
  const st = JSON.parse((await cli(['status', '--json', '--config-dir', empty], noAgent)).stdout)
  t.same(st.error.problems, [
    { file: path.join(empty, 'profiles', 'Universe.profile'), path: '', reason: 'no profile here; create one with `enclave init`' },
  ])
})

t.test('one value for scripts, peers, help details and suggestions', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-one-'))
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  const e = { ENCLAVE_RUN_DIR: path.join(d, 'run'), ENCLAVE_CONFIG_DIR: d }
  const init = await cli(['init'], e)
  t.match(init.stdout, /^Local identity\. \. \. : [0-9A-Z]{5}\nPublic key\. \. \. \. \. : /, 'aligned fields')
  t.match(init.stdout, /Next steps:/)
  const j = JSON.parse((await cli(['status', '--offline', '--json'], e)).stdout)
  t.equal((await cli(['pubkey'], e)).stdout, `${j.publicKey}\n`)
  t.equal((await cli(['identity'], e)).stdout, `${j.localIdentity}\n`)
  t.equal((await cli(['address'], e)).stdout, `${j.virtualAddress}\n`)
  const peer = keyPair()
  await cli(['add', peer.pkB64, '-d', 'office', '--endpoint', '198.18.0.2:51820'], e)
  const id = identityFromPublicKey(peer.pk)
  await cli(['route', 'add', id, '172.26.0.0/20'], e)
  const peers = await cli(['peers'], e)
  t.equal(peers.code, 0, peers.stderr)
  t.match(peers.stdout, /^IDENTITY +DESCRIPTION +STATE +ENDPOINT +HANDSHAKE +TRANSFER \(rx\/tx\) +ROUTES\n/)
  t.match(peers.stdout, new RegExp(`\\n${id} +office +Configured +198\\.18\\.0\\.2:51820 +- +- +172\\.26\\.0\\.0/20\\n$`))

  const raw = JSON.parse(fs.readFileSync(path.join(d, 'profiles', 'Universe.profile'), 'utf8'))
  raw.MyNote = 'x'
  fs.writeFileSync(path.join(d, 'profiles', 'Universe.profile'), JSON.stringify(raw))
  const st = await cli(['status', '--offline'], e)
  t.equal(st.code, 0)
  t.match(st.stderr, /Warning: profile key MyNote is not known to this version/)
  raw.ExitNode.providesRoutes = ['10.0.0.0/8']
  fs.writeFileSync(path.join(d, 'profiles', 'Universe.profile'), JSON.stringify(raw))
  const typo = await cli(['status', '--offline'], e)
  t.equal(typo.code, 2)
  t.match(typo.stderr, /ExitNode\.providesRoutes: unknown key "providesRoutes"; did you mean ProvidesRoutes\?/)

  const h = await cli(['remove', '-h'], e)
  t.equal(h.code, 0)
  t.match(h.stdout, /\$ sudo enclave remove G982V/, 'examples keep their $ sudo prompt')
  t.match(h.stdout, /Exit codes: 0 success, 1 failure, 2 bad flag, argument or profile, 3 agent not running, 4 permission denied/)
  const s = await cli(['status', '--help'], e)
  t.equal(s.stdout.split('Show identity, virtual address, peers and exit-node routes').length - 1, 1, 'the summary appears once')
  const miss = await cli(['stauts'], e)
  t.equal(miss.code, 2)
  t.match(miss.stderr, /did you mean `enclave status`\?/)
  const lv = await cli(['loglevel', 'DEBUG'], e)
  t.equal(lv.code, 3, 'a level name parses; then the agent is not running')

  const unitDir = path.join(d, 'units')
  fs.mkdirSync(unitDir)
  const rel = path.relative(process.cwd(), path.join(d, 'site-a'))
  const hidden = await cli(['install-service', '--unit-dir', unitDir, '--config-dir', rel], e)
  t.equal(hidden.code, 2, 'a profile under /tmp is refused: the unit could not see it')
  t.match(
    hidden.stderr,
    /the profile directory \/\S+: \/tmp is private to the service \(PrivateTmp=true\); keep the profile in \/etc\/enclave/,
  )
  t.notOk(fs.existsSync(path.join(unitDir, 'enclave.service')), 'and no unit is written')
  const noDir = await cli(['install-service', '--unit-dir', path.join(d, 'nonexistent'), '--config-dir', '/etc/enclave'], e)
  t.equal(noDir.code, 2, 'a unit directory that does not exist is refused')
  t.notOk(fs.existsSync(path.join(d, 'nonexistent')), 'not created')
})

t.test('tags and peer settings from the CLI; a peer no policy names is flagged', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-tags-'))
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  const f = path.join(d, 'profiles', 'Universe.profile')
  t.equal((await cli(['init', '--config-dir', d], env)).code, 0)
  const raw = JSON.parse(fs.readFileSync(f, 'utf8'))
  raw.Tags = ['servers']
  raw.Policies = [{ SenderTags: ['laptops'], ReceiverTags: ['servers'], Acls: [{ Protocol: 'Icmp' }] }]
  fs.writeFileSync(f, JSON.stringify(raw))
  const phone = keyPair()
  const phoneId = identityFromPublicKey(phone.pk)
  const add = await cli(['add', phone.pkB64, '-d', 'phone', '--config-dir', d, '--json'], env)
  t.equal(add.code, 0, add.stderr)
  t.equal(JSON.parse(add.stdout).warning, 'no tag any policy names', 'add --json flags the missing tag')
  const other = keyPair()
  const add3 = await cli(['add', other.pkB64, '--config-dir', d], env)
  t.match(add3.stderr, /Warning: Policies exist and \w{5} carries no tag any policy names.*peer set \w{5} --tag/, 'add warns about it')
  t.equal((await cli(['remove', identityFromPublicKey(other.pk), '--config-dir', d], env)).code, 0)
  const doctor = await cli(['doctor', '--config-dir', d, '--json'], env)
  const checks = JSON.parse(doctor.stdout).checks as Array<{ name: string; result: string; fix?: string }>
  t.match(
    checks.find((c) => c.name === `peer ${phoneId} tags`),
    { result: 'fail', fix: /peer set .* --tag <tag>.*laptops, servers/ },
    'doctor fails it, with the fix',
  )
  const set = await cli(['peer', 'set', 'phone', '--tag', 'laptops', '--endpoint', '198.18.0.9:51820', '--config-dir', d], env)
  t.equal(set.code, 0, set.stderr)
  t.match(set.stdout, new RegExp(`Peer ${phoneId}: changed Endpoint, Tags`), 'found by its description')
  let p = JSON.parse(fs.readFileSync(f, 'utf8')).Peers[0]
  t.same([p.Tags, p.Endpoint, p.Description], [['laptops'], '198.18.0.9:51820', 'phone'])
  const list = await cli(['policy', 'list', '--config-dir', d, '--json'], env)
  t.equal(list.code, 0, list.stderr)
  t.same(JSON.parse(list.stdout).untaggedPeers, [], 'now every peer carries a tag a policy names')
  t.match(JSON.parse(list.stdout).policy.policies[0].rule, /laptops -> servers/)
  const clear = await cli(['peer', 'set', phoneId, '--no-tags', '--no-endpoint', '--description', '', '--config-dir', d], env)
  t.equal(clear.code, 0, clear.stderr)
  p = JSON.parse(fs.readFileSync(f, 'utf8')).Peers[0]
  t.same([p.Tags, p.Endpoint, p.Description], [undefined, undefined, undefined], 'tags, endpoint and description removed')
  const nothing = await cli(['peer', 'set', phoneId, '--config-dir', d], env)
  t.equal(nothing.code, 2, 'no change asked: a usage error')
  const tagged = keyPair()
  const add2 = await cli(['add', tagged.pkB64, '--tag', 'laptops', '--tag', 'admins', '--config-dir', d], env)
  t.equal(add2.code, 0, add2.stderr)
  t.notMatch(add2.stderr, /Warning/, 'a tagged peer gets no warning')
  t.same(JSON.parse(fs.readFileSync(f, 'utf8')).Peers[1].Tags, ['laptops', 'admins'])
  const dup = await cli(['add', tagged.pkB64, '--config-dir', d], env)
  t.match(dup.stderr, /already in .*enclave peer set/, 'adding a known key points at peer set')
})

t.test('rotate-key keeps the profile, writes a backup and says what peers must change', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-rotate-'))
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  const f = path.join(d, 'profiles', 'Universe.profile')
  t.equal((await cli(['init', '--config-dir', d], env)).code, 0)
  const raw = JSON.parse(fs.readFileSync(f, 'utf8'))
  raw.Tags = ['exit-node']
  raw.ControlGroup = 'root'
  raw.Peers = [{ PublicKey: keyPair().pkB64, Tags: ['laptops'] }]
  raw.ExitNode = { ProvidesRoutes: ['172.26.0.0/20'] }
  fs.writeFileSync(f, JSON.stringify(raw))
  const r = await cli(['rotate-key', '--config-dir', d, '--json'], env)
  t.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  const now = JSON.parse(fs.readFileSync(f, 'utf8'))
  t.not(now.PrivateKey, raw.PrivateKey, 'a new private key')
  t.same([now.Tags, now.ControlGroup, now.Peers, now.ExitNode], [raw.Tags, raw.ControlGroup, raw.Peers, raw.ExitNode], 'the rest kept')
  t.equal(JSON.parse(fs.readFileSync(out.backup, 'utf8')).PrivateKey, raw.PrivateKey, 'the backup holds the old key')
  t.equal(fs.statSync(out.backup).mode & 0o777, 0o600, 'readable by root only')
  const text = await cli(['rotate-key', '--config-dir', d], env)
  t.match(text.stdout, /sudo enclave remove \w{5}\n\s+sudo enclave add \S+ -d "<this machine>" --tag exit-node/)
  t.match(text.stdout, /sudo enclave route add \w{5} 172\.26\.0\.0\/20/)
  t.match(text.stdout, /restart the agent here/)
})

t.test('install-service --install-to copies the program where the hardened unit can run it', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('writes under /opt and /etc: needs root')
  const dest = `/opt/enclave-test-${process.pid}`
  const unitDir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-units-'))
  t.teardown(() => {
    fs.rmSync(dest, { recursive: true, force: true })
    fs.rmSync(unitDir, { recursive: true, force: true })
  })
  const r = await cli(['install-service', '--unit-dir', unitDir, '--config-dir', '/etc/enclave', '--install-to', dest, '--json'], env)
  t.equal(r.code, 0, r.stderr)
  const unit = fs.readFileSync(path.join(unitDir, 'enclave.service'), 'utf8')
  t.match(unit, new RegExp(`ExecStart=\\S+ ${dest}/bin/run\\.js run --config-dir /etc/enclave\\n`), 'the unit runs the copy')
  t.match(unit, /Type=notify\n/, 'and waits for READY=1')
  const v = await new Promise<{ code: number; out: string }>((res) =>
    execFile(process.execPath, [`${dest}/bin/run.js`, 'version'], (e, so) => res({ code: e ? 1 : 0, out: String(so) })),
  )
  t.equal(v.code, 0, 'the copy runs on its own')
  t.match(v.out, /^enclave \d/)
  t.notOk(fs.existsSync(`${dest}/node_modules/tap`), 'without the development dependencies')
})

t.test('one error contract: one line, the README exit codes, --json with a version everywhere', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-errors-'))
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  const e = { ENCLAVE_RUN_DIR: path.join(d, 'run'), ENCLAVE_NO_SYSTEMD: '1', ENCLAVE_LOG_DIR: path.join(d, 'log') }
  t.equal((await cli(['init', '--config-dir', d], e)).code, 0)
  for (const [args, flag] of [
    [['explain', '1.2.3.4', '--port', 'abc'], '--port'],
    [['status', '--bogus'], '--bogus'],
    [['run', '-v', 'loud'], '-v'],
    [['peers', '--watch'], ''],
  ] as Array<[string[], string]>) {
    const r = await cli(args, e)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    const lines = r.stderr.trim().split('\n')
    t.equal(lines.length, 1, `${args.join(' ')}: one line (${r.stderr.trim()})`)
    t.match(
      lines[0],
      new RegExp(`^Error: .*${flag.replace(/-/g, '\\-')}.*; see \`enclave ${args[0]} --help\`$`),
      'names the flag and the help',
    )
    t.notMatch(r.stderr, /USAGE|›/, 'no usage dump, no wrapping')
  }
  const f = path.join(d, 'profiles', 'Universe.profile')
  const good = fs.readFileSync(f, 'utf8')
  fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(good), Mtu: 'big' }))
  const start = await cli(['start', '--config-dir', d], e)
  t.equal(start.code, 2, 'start with a bad profile: exit 2, the profile error')
  t.match(start.stderr, /Mtu: must be a number/)
  t.notMatch(start.stderr, /exited during start/, 'found before anything is started')
  fs.writeFileSync(f, good)
  for (const cmd of ['pubkey', 'identity', 'address']) {
    const r = await cli([cmd, '--config-dir', d, '--json'], e)
    t.equal(r.code, 0, `${cmd} --json`)
    t.equal(JSON.parse(r.stdout).version, 1, `${cmd} --json carries the version`)
  }
  const bad = await cli(['status', '--bogus', '--json'], e)
  t.match(JSON.parse(bad.stdout), { version: 1, error: { code: 'EUSAGE' } }, 'errors in JSON carry it too')
  const stop = await cli(['stop', '--json'], e)
  t.match(JSON.parse(stop.stdout), { version: 1, stopped: false }, 'stop --json')
  if (process.getuid?.() === 0) {
    fs.chmodSync(d, 0o755) // nobody may enter the directory; the profile (0600) stays root's
    // env -u NODE_OPTIONS: tap's process-info hook would write into .tap/ as nobody and fail.
    const denied = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        '/usr/bin/env',
        ['-u', 'NODE_OPTIONS', process.execPath, BIN, 'pubkey', '--config-dir', d],
        { env: { ...process.env, ...e, HOME: d, DEBUG: '' }, cwd: d, uid: 65534, gid: 65534 },
        (err, _out, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr: String(stderr) }),
      )
    })
    t.equal(denied.code, 4, `permission denied reading the profile: exit 4 (${denied.stderr.trim()})`)
    t.match(denied.stderr, /permission denied reading the profile/)
  }
})

t.test('free text cannot inject a [Peer] into an exported config; export -o writes 0600', async (t) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-cli-export-'))
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  t.equal((await cli(['init', '--config-dir', d], env)).code, 0)
  const phone = keyPair()
  const evil = await cli(['add', phone.pkB64, '-d', 'phone\n[Peer]\nAllowedIPs = 0.0.0.0/0', '--config-dir', d], env)
  t.equal(evil.code, 2, 'a Description with a newline is refused')
  t.match(evil.stderr, /Description: must not contain control characters/)
  const f = path.join(d, 'profiles', 'Universe.profile')
  const raw = JSON.parse(fs.readFileSync(f, 'utf8'))
  raw.Peers = [{ PublicKey: phone.pkB64, Description: 'phone\r\n[Peer]' }]
  fs.writeFileSync(f, JSON.stringify(raw))
  const hand = await cli(['status', '--offline', '--config-dir', d], env)
  t.equal(hand.code, 2, 'also when written into the profile by hand')
  t.match(hand.stderr, /Peers\[0\]\.Description: must not contain control characters/)
  raw.Peers = [{ PublicKey: phone.pkB64, Description: 'phone' }]
  fs.writeFileSync(f, JSON.stringify(raw))
  const keyFile = path.join(d, 'phone.key')
  fs.writeFileSync(keyFile, `${phone.skB64}\n`, { mode: 0o600 })
  const out = path.join(d, 'phone.conf')
  const ex = await cli(
    ['export', 'wireguard', 'phone', '--endpoint', '198.18.0.1:51820', '--private-key-file', keyFile, '-o', out, '--config-dir', d],
    env,
  )
  t.equal(ex.code, 0, ex.stderr)
  t.equal(fs.statSync(out).mode & 0o777, 0o600, 'the config with a private key is readable by its owner only')
  t.equal((fs.readFileSync(out, 'utf8').match(/\[Peer\]/g) ?? []).length, 1, 'one [Peer]')
})
