import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { keyPair } from '../helpers/keys.js'
import { identityFromPublicKey } from '../../src/control/identity.js'

const BIN = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../bin/run.js')

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, DEBUG: '', ...env } }, (err, stdout, stderr) => {
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
  t.match(again.stderr, /a profile already exists; use --force/)
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
  t.match(bad.stderr, /public key: decodes to 3 bytes; a key is 32 bytes/)
  const badEp = await cli(['add', keyPair().pkB64, '--endpoint', 'nohost', '--config-dir', dir], env)
  t.match(badEp.stderr, /Universe\.profile: Peers\[1\]\.Endpoint: "nohost" is not host:port/)
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

t.test('run refuses without root, version and help work', async (t) => {
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
