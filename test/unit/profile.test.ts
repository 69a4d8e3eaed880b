import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseProfileText, validateProfile, writeProfile, loadProfile } from '../../src/config/profile.js'
import {
  identityFromPublicKey,
  virtualAddressFromPublicKey,
  isIdentity,
  CROCKFORD_ALPHABET,
  overlayAddressFromWord,
  OVERLAY_SIZE,
} from '../../src/config/identity.js'
import { parseCidr, intToIp } from '../../src/common/ipv4.js'
import { ProfileError } from '../../src/errors.js'
import { keyPair } from '../helpers/keys.js'

const F = '/etc/enclave/profiles/Universe.profile'

function problems(raw: unknown): string[] {
  try {
    validateProfile(F, raw as Record<string, unknown>)
  } catch (e) {
    if (e instanceof ProfileError) return e.message.split('\n')
    throw e
  }
  return []
}

t.test('identity is 5 Crockford characters and stable for a key', async (t) => {
  const a = keyPair()
  const id = identityFromPublicKey(a.pk)
  t.equal(id.length, 5)
  t.ok(isIdentity(id))
  t.equal(identityFromPublicKey(Buffer.from(a.pk)), id, 'same key, same identity')
  t.notOk(/[ILOU]/.test(CROCKFORD_ALPHABET))
  const ids = new Set<string>()
  for (let i = 0; i < 200; i++) ids.add(identityFromPublicKey(keyPair().pk))
  t.ok(ids.size >= 199, 'identities spread over the space')
})

t.test('virtual address derives inside 100.64.0.0/10, never network or broadcast', async (t) => {
  for (let i = 0; i < 500; i++) {
    const va = virtualAddressFromPublicKey(keyPair().pk)
    t.equal(va >>> 22, 0x64400000 >>> 22)
    if (va === 0x64400000 || va === 0x647fffff) t.fail('network or broadcast address derived')
  }
  const k = keyPair().pk
  t.equal(virtualAddressFromPublicKey(k), virtualAddressFromPublicKey(Buffer.from(k)))
})

t.test('the address mapping skips network and broadcast at its edges', async (t) => {
  // The words that would land on the edges if the mapping were a plain modulo of the overlay size.
  t.equal(intToIp(overlayAddressFromWord(0)), '100.64.0.1', 'word 0: first host, not the network address')
  t.equal(intToIp(overlayAddressFromWord(OVERLAY_SIZE - 3)), '100.127.255.254', 'last host')
  t.equal(intToIp(overlayAddressFromWord(OVERLAY_SIZE - 2)), '100.64.0.1', 'wraps before broadcast')
  t.equal(intToIp(overlayAddressFromWord(OVERLAY_SIZE - 1)), '100.64.0.2')
  t.equal(intToIp(overlayAddressFromWord(OVERLAY_SIZE)), '100.64.0.3')
  for (const w of [0xffffffff, 0xfffffffe, 0x80000000, 0x7fffffff]) {
    const a = overlayAddressFromWord(w)
    t.ok(a > 0x64400000 && a < 0x647fffff, `word ${w.toString(16)} maps strictly inside the overlay: ${intToIp(a)}`)
  }
})

t.test('CIDR parsing accepts /0 to /32 and explains rejections', async (t) => {
  t.same(parseCidr('172.26.0.0/20'), { addr: 0xac1a0000, len: 20, text: '172.26.0.0/20' })
  t.same((parseCidr('0.0.0.0/0') as { len: number }).len, 0)
  t.same((parseCidr('172.26.0.250/32') as { len: number }).len, 32)
  t.match(parseCidr('172.26.0.1/20'), /host bits set; did you mean 172\.26\.0\.0\/20/)
  t.match(parseCidr('10.0.0.0/33'), /\/33; IPv4 allows \/0 to \/32/)
  t.match(parseCidr('fd00::/64'), /IPv6/)
  t.match(parseCidr('10.0.0.0'), /no prefix length/)
  t.match(parseCidr('10.0.0/8'), /not an IPv4 network in CIDR form/)
  t.equal(intToIp(0xac1a00fa), '172.26.0.250')
})

t.test('a full profile round-trips and keeps unknown keys', async (t) => {
  const me = keyPair()
  const exit = keyPair()
  const exitId = identityFromPublicKey(exit.pk)
  const raw = {
    PrivateKey: me.skB64,
    SomethingNew: { keep: [1, 2, 3] },
    Peers: [{ PublicKey: exit.pkB64, Identity: exitId, Endpoint: '198.18.0.2:51820', Description: 'office', Future: true }],
    ExitNode: { AvailableRoutes: { [exitId]: ['172.26.0.0/20', '10.1.2.3/32'] } },
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-profile-'))
  const file = path.join(dir, 'profiles', 'Universe.profile')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  writeProfile(file, raw)
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'written with mode 0600')
  const p = loadProfile(file)
  t.equal(p.identity, identityFromPublicKey(me.pk))
  t.equal(p.localPort, 51820)
  t.equal(p.interface, 'enclave0')
  t.equal(p.mtu, 1420)
  t.equal(p.peers[0].identity, exitId)
  t.same(p.peers[0].endpoint, { host: '198.18.0.2', port: 51820 })
  t.same(
    p.exitNode.availableRoutes.get(exitId)!.map((c) => c.text),
    ['172.26.0.0/20', '10.1.2.3/32'],
  )
  const back = JSON.parse(fs.readFileSync(file, 'utf8'))
  t.same(back.SomethingNew, { keep: [1, 2, 3] }, 'unknown top-level key kept')
  t.equal(back.Peers[0].Future, true, 'unknown peer key kept')
})

t.test('every bad input names the file, the JSON path and the reason', async (t) => {
  const me = keyPair()
  const a = keyPair()
  const aId = identityFromPublicKey(a.pk)
  const other = identityFromPublicKey(keyPair().pk)
  const cases: Array<[string, unknown, RegExp]> = [
    ['bad base64 key', { PrivateKey: 'not*base64' }, /Universe\.profile: PrivateKey: is not valid base64/],
    ['short key', { PrivateKey: Buffer.alloc(16).toString('base64') }, /PrivateKey: decodes to 16 bytes; a key is 32 bytes/],
    [
      'peer key length',
      { PrivateKey: me.skB64, Peers: [{ PublicKey: Buffer.alloc(31).toString('base64') }] },
      /Peers\[0\]\.PublicKey: "A+==" decodes to 31 bytes/,
    ],
    [
      'IPv6 route',
      { PrivateKey: me.skB64, ExitNode: { ProvidesRoutes: ['fd00::/64'] } },
      /ExitNode\.ProvidesRoutes\[0\]: "fd00::\/64" is IPv6/,
    ],
    [
      'out of range',
      { PrivateKey: me.skB64, ExitNode: { ProvidesRoutes: ['10.0.0.0/8', '10.0.0.0/33'] } },
      /ExitNode\.ProvidesRoutes\[1\]: .*\/33/,
    ],
    [
      'host bits',
      {
        PrivateKey: me.skB64,
        Peers: [{ PublicKey: a.pkB64 }],
        ExitNode: { AvailableRoutes: { [aId]: ['172.26.0.0/20', '172.26.0.3/20'] } },
      },
      new RegExp(`ExitNode\\.AvailableRoutes\\.${aId}\\[1\\]: "172\\.26\\.0\\.3/20" has host bits set`),
    ],
    [
      'unknown AvailableRoutes key',
      { PrivateKey: me.skB64, Peers: [{ PublicKey: a.pkB64 }], ExitNode: { AvailableRoutes: { [other]: ['10.0.0.0/8'] } } },
      new RegExp(`ExitNode\\.AvailableRoutes\\.${other}: ${other} is not a known peer \\(known peers: ${aId}\\)`),
    ],
    [
      'identity mismatch',
      { PrivateKey: me.skB64, Peers: [{ PublicKey: a.pkB64, Identity: other, Description: 'printer gw' }] },
      new RegExp(`Peers\\[0\\]\\.Identity: peer "printer gw" gives identity ${other}, but its PublicKey derives identity ${aId}`),
    ],
    [
      'duplicate peers',
      { PrivateKey: me.skB64, Peers: [{ PublicKey: a.pkB64 }, { PublicKey: a.pkB64 }] },
      /Peers\[1\]\.PublicKey: identity \w{5} is already used by Peers\[0\]/,
    ],
    [
      'duplicate virtual address',
      { PrivateKey: me.skB64, VirtualAddress: '100.64.1.1', Peers: [{ PublicKey: a.pkB64, VirtualAddress: '100.64.1.1' }] },
      /Peers\[0\]\.VirtualAddress: virtual address 100\.64\.1\.1 is already used by this system/,
    ],
    [
      'address outside overlay',
      { PrivateKey: me.skB64, VirtualAddress: '10.0.0.1' },
      /VirtualAddress: "10\.0\.0\.1" is outside the overlay network 100\.64\.0\.0\/10/,
    ],
    ['wrong type', { PrivateKey: me.skB64, LocalPort: '51820' }, /LocalPort: must be a number \(got string\)/],
    ['missing key', {}, /PrivateKey: is required/],
  ]
  for (const [name, raw, re] of cases) {
    const msgs = problems(raw)
    t.ok(msgs.length > 0, `${name}: rejected`)
    t.ok(
      msgs.some((m) => re.test(m)),
      `${name}: ${msgs.join(' | ')}`,
    )
    t.ok(
      msgs.every((m) => m.startsWith(F + ': ')),
      `${name}: every line names the file`,
    )
  }
})

t.test('non-JSON is reported with line and column', async (t) => {
  const text = '{\n  "PrivateKey": "x",\n  "Peers": [}\n'
  t.throws(() => parseProfileText(F, text), { message: /Universe\.profile: not valid JSON at line 3, column 13/ })
  t.throws(() => parseProfileText(F, '{"a": tru}'), { message: /line 1, column 7: unexpected character/ })
  t.throws(() => parseProfileText(F, '[1]'), { message: /must be a JSON object/ })
})

t.test('a failed write leaves the original profile untouched', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-atomic-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'Universe.profile')
  const good = { PrivateKey: keyPair().skB64 }
  writeProfile(file, good)
  const before = fs.readFileSync(file, 'utf8')
  t.throws(() => writeProfile(file, { PrivateKey: 'broken' }), ProfileError, 'invalid content is refused before writing')
  t.equal(fs.readFileSync(file, 'utf8'), before)
  // A write that fails midway (the directory refuses new files) must not touch the original either.
  if (process.getuid?.() !== 0) {
    fs.chmodSync(dir, 0o500)
    t.throws(() => writeProfile(file, { PrivateKey: keyPair().skB64 }), /EACCES/)
    fs.chmodSync(dir, 0o700)
  } else {
    const blocker = path.join(dir, 'sub')
    fs.writeFileSync(blocker, 'not a directory')
    t.throws(() => writeProfile(path.join(blocker, 'Universe.profile'), { PrivateKey: keyPair().skB64 }))
  }
  t.equal(fs.readFileSync(file, 'utf8'), before)
  t.same(
    fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
    [],
    'no temp files left behind',
  )
})

t.test('a malformed PrivateKey or PresharedKey is never quoted in the error', async (t) => {
  const me = keyPair()
  const peer = keyPair()
  // A real key with one character damaged: the message must not carry any of it.
  const damaged = `${me.skB64.slice(0, 20)}*${me.skB64.slice(21)}`
  const psk = `${peer.skB64.slice(0, 43)}`
  const msgs = problems({ PrivateKey: damaged, Peers: [{ PublicKey: peer.pkB64, PresharedKey: psk }] })
  t.equal(msgs.length, 2, msgs.join(' | '))
  t.match(msgs[0], /PrivateKey: is not valid base64/)
  t.match(msgs[1], /Peers\[0\]\.PresharedKey: is not valid base64/)
  for (const m of msgs)
    for (const secret of [damaged, psk])
      for (let i = 0; i + 6 <= secret.length; i++) t.notOk(m.includes(secret.slice(i, i + 6)), `no 6 characters of key material in: ${m}`)
})

t.test('wrong-case and misspelt keys are errors with "did you mean"; other unknown keys are kept as warnings', async (t) => {
  const me = keyPair()
  const a = keyPair()
  const cases: Array<[unknown, RegExp]> = [
    [
      { PrivateKey: me.skB64, ExitNode: { providesRoutes: ['10.0.0.0/8'] } },
      /ExitNode\.providesRoutes: unknown key "providesRoutes"; did you mean ProvidesRoutes\?/,
    ],
    [{ PrivateKey: me.skB64, exitnode: {} }, /exitnode: unknown key "exitnode"; did you mean ExitNode\?/],
    [{ PrivateKey: me.skB64, Peers: [{ PublicKey: a.pkB64, Endpiont: '1.2.3.4:5' }] }, /Peers\[0\]\.Endpiont: .*did you mean Endpoint\?/],
    [{ PrivateKey: me.skB64, ExitNode: { ManageNAT: true } }, /ExitNode\.ManageNAT: .*did you mean ManageNat\?/],
    [{ PrivateKey: me.skB64, MetricListen: '127.0.0.1:9586' }, /did you mean MetricsListen\?/],
    [{ PrivateKey: me.skB64, Policies: [{ SenderTag: ['x'] }] }, /Policies\[0\]\.SenderTag: .*did you mean SenderTags\?/],
    [{ PrivateKey: me.skB64, Policies: [{ Acls: [{ Protcol: 'Tcp' }] }] }, /Policies\[0\]\.Acls\[0\]\.Protcol: .*did you mean Protocol\?/],
  ]
  for (const [raw, re] of cases) {
    const msgs = problems(raw)
    t.ok(
      msgs.some((m) => re.test(m)),
      msgs.join(' | ') || 'accepted',
    )
  }
  const p = validateProfile(F, { PrivateKey: me.skB64, Custom: 1, Peers: [{ PublicKey: a.pkB64, Future: true }] })
  t.same(p.unknownKeys, ['Custom', 'Peers[0].Future'])
  t.equal(validateProfile(F, { PrivateKey: me.skB64, MetricsListen: '127.0.0.1:9586' }).metricsListen, '127.0.0.1:9586')
  t.match(problems({ PrivateKey: me.skB64, MetricsListen: '0.0.0.0:0' }), [/MetricsListen: "0\.0\.0\.0:0": port 0 is out of range/])
})

t.test('shape and cross-field problems are reported in one round', async (t) => {
  const me = keyPair()
  const a = keyPair()
  const other = identityFromPublicKey(keyPair().pk)
  const msgs = problems({
    PrivateKey: me.skB64,
    LocalPort: 'x',
    Peers: [{ PublicKey: a.pkB64, Endpoint: 'nohost' }],
    ExitNode: { AvailableRoutes: { [other]: ['10.0.0.0/8'] } },
  })
  t.equal(msgs.length, 3, msgs.join(' | '))
  t.match(msgs.join('\n'), /LocalPort: must be a number/)
  t.match(msgs.join('\n'), /Peers\[0\]\.Endpoint: "nohost" is not host:port/)
  t.match(msgs.join('\n'), new RegExp(`AvailableRoutes\\.${other}: ${other} is not a known peer`))
})

t.test("this system's own key as a peer gives one line", async (t) => {
  const me = keyPair()
  const msgs = problems({ PrivateKey: me.skB64, Peers: [{ PublicKey: me.pkB64 }] })
  t.same(msgs, [`${F}: Peers[0].PublicKey: is this system's own public key; a system is not its own peer`])
})

t.test('an identity given where a public key belongs says what to do', async (t) => {
  const me = keyPair()
  t.match(problems({ PrivateKey: me.skB64, Peers: [{ PublicKey: 'G982V' }] }), [
    /looks like an identity: peers are added by their public key/,
  ])
})
