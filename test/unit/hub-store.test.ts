/**
 * The hub's store and rules without the network: migrations, enrolment keys (hashed, uses counted
 * atomically under concurrent enrolments), replayed hellos, identity and address collisions, the map's
 * whitelist, the agent-side merge with local consent, and the delta engine (who gets what, how big).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubAuth } from '../../src/hub/auth.js'
import { HubServer, initHub, openHubStore, readHubConfig, replicaTimersOf } from '../../src/hub/hub.js'
import { HubModel, type SystemRow } from '../../src/hub/model.js'
import { intToIp } from '../../src/common/ipv4.js'
import { identityFromPublicKey, virtualAddressFromPublicKey } from '../../src/config/identity.js'
import { mergeHubLayer } from '../../src/config/hub-layer.js'
import { gatewayRanges } from '../../src/config/policies.js'
import { validateProfile, writeProfile, loadProfile } from '../../src/config/profile.js'
import { type HubMap, diffMaps, hubMapSchema, mapHash, applyDelta } from '../../src/hubproto/map.js'
import { helloTimestamp } from '../../src/hubproto/wire.js'
import { createLogger } from '../../src/log/logger.js'
import { enrol } from '../../src/ops/enrol.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'
import { sha256Hex } from '../../src/hubproto/enrolment-key.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hubstore-${process.pid}-`))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
let n = 0
/**
 * Every test here runs on SQLite, and again on a real PostgreSQL from hub-store-postgres.test.ts, which
 * sets ENCLAVE_TEST_HUB_DB to a function making a fresh database and imports this file.
 */
const freshDatabase = (globalThis as { ENCLAVE_TEST_HUB_DB?: (name: string) => Promise<string> }).ENCLAVE_TEST_HUB_DB
const engine = freshDatabase ? 'postgres' : 'sqlite'
async function freshHub() {
  const dir = path.join(tmp, `hub${n++}`)
  const postgresUrl = freshDatabase ? await freshDatabase(`hub${n}`) : undefined
  const { publicKey } = await initHub(dir, '127.0.0.1:0', { postgresUrl })
  const store = await openHubStore(dir)
  return { dir, publicKey, store, admin: new HubAdmin(store, 'tester') }
}
/** A quiet HubServer on loopback for `dir` (no portal), stopped at the test's end. */
async function serveHub(t: { teardown: (fn: () => Promise<void>) => void }, dir: string): Promise<HubServer> {
  const hub = new HubServer({
    dataDir: dir,
    listen: '127.0.0.1:0',
    portal: 'off',
    log: createLogger(0, 'logfmt', { out: { write: () => {} } }),
  })
  await hub.start()
  t.teardown(() => hub.stop())
  return hub
}
const req = (publicKey: string, key: string | undefined, ts = helloTimestamp(Date.now())) => ({
  publicKey,
  key,
  hostname: 'h',
  listenPort: 51820,
  endpoint: null,
  helloTs: ts,
  allowGateway: false,
  acceptDefaultRoute: false,
  advertised: [],
})

t.test('store: files private, migrations recorded once, a second open migrates nothing', async (t) => {
  const h = await freshHub()
  t.equal(fs.statSync(h.dir).mode & 0o777, 0o700)
  if (engine === 'sqlite') {
    t.equal(fs.statSync(path.join(h.dir, 'hub.key')).mode & 0o777, 0o600)
    t.equal(fs.statSync(path.join(h.dir, 'hub.db')).mode & 0o777, 0o600)
  } else {
    // PostgreSQL: the private key is only in the database, sealed with hub.kek.
    t.equal(fs.statSync(path.join(h.dir, 'hub.kek')).mode & 0o777, 0o600)
    t.notOk(fs.existsSync(path.join(h.dir, 'hub.key')), 'no hub.key file')
    t.equal(h.store.engine, 'postgres', 'the store is PostgreSQL')
  }
  t.same(await h.store.migrate(), [], 'nothing left to migrate')
  await h.store.close()
  await t.rejects(initHub(h.dir, '127.0.0.1:1'), /already exists/, 'init never overwrites a hub')
})

t.test('enrolment keys: shown once, stored hashed, uses counted, revoked and expired refused', async (t) => {
  const h = await freshHub()
  const k = await h.admin.createKey('two uses', { autoApprove: true, uses: 2, tags: ['a'] })
  const row = await h.store.db.selectFrom('enrolment_keys').selectAll().executeTakeFirstOrThrow()
  t.equal(row.secret_sha256, sha256Hex(k.key), 'only the hash is stored')
  t.notOk(JSON.stringify(row).includes(k.key.slice(6)), 'no part of the secret groups is stored')
  const keys = [0, 1, 2].map(() => generateKeyPair().publicKey.toString('base64'))
  t.match(await h.admin.enrol(req(keys[0], k.key)), { ok: true })
  t.match(await h.admin.enrol(req(keys[1], k.key.toLowerCase())), { ok: true }, 'lower case is the same key')
  t.match(await h.admin.enrol(req(keys[2], k.key)), { ok: false, code: 'KEY_EXHAUSTED' })
  t.match(await h.admin.enrol(req(keys[2], 'AAAAA-AAAAA-AAAAA-AAAAA-AAAAA')), { ok: false, code: 'KEY_INVALID' })
  const r = await h.admin.createKey('revoked', { autoApprove: true })
  await h.admin.revokeKey(r.keyId)
  t.match(await h.admin.enrol(req(keys[2], r.key)), { ok: false, code: 'KEY_REVOKED' })
  const e = await h.admin.createKey('expired', { autoApprove: true, forMs: 1 })
  await new Promise((res) => setTimeout(res, 5))
  t.match(await h.admin.enrol(req(keys[2], e.key)), { ok: false, code: 'KEY_EXPIRED' })
  t.same(
    (await h.admin.listKeys()).map((x) => x.state),
    ['no-uses', 'revoked', 'expired'],
  )
  await h.store.close()
})

t.test('hub.json Replicas timers: checked, with the file and the JSON path in the error', async (t) => {
  const h = await freshHub()
  const file = path.join(h.dir, 'hub.json')
  const cfg = JSON.parse(fs.readFileSync(file, 'utf8'))
  fs.writeFileSync(file, JSON.stringify({ ...cfg, Replicas: { HeartbeatMs: 1000, DeadAfterMs: 2000 } }))
  t.throws(() => readHubConfig(h.dir), { message: /hub\.json: \$\.Replicas\.DeadAfterMs: at least three heartbeats \(3000 ms\)/ })
  fs.writeFileSync(file, JSON.stringify({ ...cfg, Replicas: { HeartbeatMs: 50 } }))
  t.throws(() => readHubConfig(h.dir), { message: /\$\.Replicas\.HeartbeatMs/ })
  fs.writeFileSync(file, JSON.stringify({ ...cfg, Replicas: { HeartbeatMs: 1000, DeadAfterMs: 3000 } }))
  t.same(replicaTimersOf(readHubConfig(h.dir)), { heartbeatMs: 1000, deadAfterMs: 3000, leaderTryMs: 1000 })
  await h.store.close()
})

t.test("the leader's periodic work: an ephemeral system offline for 30 min goes, others stay; idle sessions go", async (t) => {
  const h = await freshHub()
  const hub = await serveHub(t, h.dir)
  t.ok(hub.leader, 'the only hub leads')
  const eph = await h.admin.createKey('ci runners', { ephemeral: true })
  const keep = await h.admin.createKey('laptops', { autoApprove: true })
  const [e, l] = [generateKeyPair(), generateKeyPair()].map((kp) => kp.publicKey.toString('base64'))
  t.match(await h.admin.enrol(req(e, eph.key)), { ok: true })
  t.match(await h.admin.enrol(req(l, keep.key)), { ok: true })
  const auth = new HubAuth(h.store)
  await auth.addAdmin('test', 'alice', 'correct horse battery', 'admin')
  const login = await auth.login('127.0.0.1', 'alice', 'correct horse battery')
  t.ok(login.ok)
  await hub.leaderWork(Date.now() + 29 * 60_000)
  t.equal((await h.admin.listSystems()).length, 2, 'after 29 min both stay')
  await hub.leaderWork(Date.now() + 31 * 60_000)
  const left = await h.admin.listSystems()
  t.same(
    left.map((s) => s.identity),
    [identityFromPublicKey(Buffer.from(l, 'base64'))],
    'after 31 min offline the ephemeral system is removed, the other stays',
  )
  t.match((await h.admin.auditLog(5)).at(-1), { action: 'system.remove', actor: 'hub (ephemeral clean-up)' }, 'and the audit log says who')
  await hub.leaderWork(Date.now() + 13 * 3600_000)
  t.equal(await auth.session(login.ok ? login.cookie : ''), null, 'a session idle for 13 h is gone')
  await h.store.close()
})

t.test('concurrent enrolments over the network never over-use a key', async (t) => {
  const h = await freshHub()
  const hub = await serveHub(t, h.dir)
  const k = await h.admin.createKey('five', { autoApprove: true, uses: 5 })
  const profiles = Array.from({ length: 12 }, (_, i) => {
    const f = path.join(h.dir, `agent${i}`, 'Universe.profile')
    writeProfile(f, { PrivateKey: generateKeyPair().privateKey.toString('base64') })
    return f
  })
  const results = await Promise.allSettled(
    profiles.map((file) =>
      enrol({
        file,
        key: k.key,
        urls: [`http://127.0.0.1:${hub.port}`],
        hubKey: h.publicKey,
        allowGateway: false,
        acceptDefaultRoute: false,
      }),
    ),
  )
  const ok = results.filter((r) => r.status === 'fulfilled').length
  const exhausted = results.filter((r) => r.status === 'rejected' && /KEY_EXHAUSTED|no uses left/.test(String(r.reason))).length
  t.equal(ok, 5, '5 of 12 concurrent enrolments succeed')
  t.equal(exhausted, 7, 'the other 7 are told the key is used up')
  t.equal((await h.admin.listSystems()).length, 5)
  t.equal((await h.admin.listKeys())[0].usedCount, 5)
  const refused = profiles.filter((_, i) => results[i].status === 'rejected')
  t.notOk(loadProfile(refused[0]).hub, 'a refused enrolment writes nothing to the profile')
  const wrongKey = generateKeyPair().publicKey.toString('base64')
  await t.rejects(
    enrol({
      file: refused[0],
      key: k.key,
      urls: [`http://127.0.0.1:${hub.port}`],
      hubKey: wrongKey,
      allowGateway: false,
      acceptDefaultRoute: false,
    }),
    /did not prove|closed the connection/,
    'a hub that does not hold the pinned key is not believed',
  )
  await h.store.close()
})

t.test('replayed hellos are refused, also after the system was removed', async (t) => {
  const h = await freshHub()
  const k = await h.admin.createKey('k', { autoApprove: true })
  const pk = generateKeyPair().publicKey.toString('base64')
  const ts = helloTimestamp(Date.now())
  t.match(await h.admin.enrol(req(pk, k.key, ts)), { ok: true, enrolled: true })
  t.match(await h.admin.enrol(req(pk, k.key, ts)), { ok: false, code: 'REPLAYED' }, 'the same hello again')
  const later = helloTimestamp(Date.now() + 1000)
  t.match(await h.admin.enrol(req(pk, undefined, later)), { ok: true, enrolled: false }, 'a newer hello reconnects without using the key')
  t.equal((await h.admin.listKeys())[0].usedCount, 1, 'a reconnection consumes no use')
  await h.admin.setState('remove', [identityFromPublicKey(Buffer.from(pk, 'base64'))])
  t.match(
    await h.admin.enrol(req(pk, k.key, ts)),
    { ok: false, code: 'REPLAYED' },
    'the recorded enrolment cannot bring a removed system back',
  )
  t.match(
    await h.admin.enrol(req(pk, undefined, helloTimestamp(Date.now() + 2000))),
    { ok: false, code: 'UNKNOWN_SYSTEM' },
    'a removed system cannot connect',
  )
  await h.store.close()
})

t.test('identity taken is refused; a taken address makes the hub allocate the next free one', async (t) => {
  const h = await freshHub()
  const k = await h.admin.createKey('k', { autoApprove: true })
  const a = generateKeyPair().publicKey
  const b = generateKeyPair().publicKey
  const insert = (publicKey: string, identity: string, address: number) =>
    h.store.db
      .insertInto('systems')
      .values({
        public_key: publicKey,
        identity,
        virtual_address: address,
        hostname: 'squatter',
        state: 'approved',
        tags: '[]',
        ephemeral: 0,
        enrolment_key_id: null,
        enrolled_at: new Date().toISOString(),
        approved_at: null,
        approved_by: null,
        last_seen_at: null,
        allow_gateway: 0,
        accept_default_route: 0,
        last_hello_ts: '0',
        listen_port: 1,
        endpoint: null,
        advertised_routes: '[]',
      })
      .execute()
  await insert('other-key-1', identityFromPublicKey(a), 0x64400005)
  t.match(await h.admin.enrol(req(a.toString('base64'), k.key)), { ok: false, code: 'IDENTITY_TAKEN' })
  const derived = virtualAddressFromPublicKey(b)
  await insert('other-key-2', 'ZZZZZ', derived)
  const r = await h.admin.enrol(req(b.toString('base64'), k.key))
  if (!r.ok) throw new Error(r.message)
  t.not(r.system.address, derived, 'not the taken address')
  t.equal(r.system.address, derived + 1, 'the next free one')
  t.equal((await h.admin.listKeys())[0].usedCount, 1, 'the refused enrolment used nothing')
  await h.store.close()
})

const sys = (id: number, tags: string[], state: SystemRow['state'] = 'approved'): SystemRow => {
  const pk = generateKeyPair().publicKey
  return {
    id,
    publicKey: pk.toString('base64'),
    identity: identityFromPublicKey(pk),
    address: virtualAddressFromPublicKey(pk),
    hostname: `s${id}`,
    state,
    tags,
    listenPort: 51820,
    endpoint: `198.18.0.${id}:51820`,
    allowGateway: false,
    acceptDefaultRoute: false,
    advertised: [],
  }
}

t.test('delta engine: a change reaches only the systems that see the changed one, in small deltas', async (t) => {
  const systems = [
    ...Array.from({ length: 50 }, (_, i) => sys(i + 1, ['laptops'])),
    ...Array.from({ length: 50 }, (_, i) => sys(i + 51, ['servers'])),
    sys(101, ['isolated']),
  ]
  const policies = [
    {
      id: 1,
      description: 'l->s',
      enabled: true,
      body: { SenderTags: ['laptops'], ReceiverTags: ['servers'], Acls: [{ Protocol: 'Tcp', Ports: '22' }] },
    },
  ]
  const before = new HubModel(systems, policies, [])
  const mapsBefore = new Map(systems.map((s) => [s.id, before.mapFor(s.id)]))
  t.equal(mapsBefore.get(1)?.Peers.length, 50, 'a laptop sees the 50 servers')
  t.equal(mapsBefore.get(1)?.Policies.length, 0, 'a laptop enforces no policy (it is no receiver)')
  t.equal(mapsBefore.get(51)?.Policies.length, 1, 'a server enforces the policy')
  t.equal(mapsBefore.get(101)?.Peers.length, 0, 'an untagged-by-policy system sees nobody')
  t.same(mapsBefore.get(51)?.Peers[0].Tags, ['laptops'], 'peer tags are only those the recipient policies name')
  // One server moves: its endpoint changes.
  const moved = systems.map((s) => (s.id === 60 ? { ...s, endpoint: '203.0.113.9:51820' } : s))
  const after = new HubModel(moved, policies, [])
  let recipients = 0
  let maxBytes = 0
  for (const s of systems) {
    const d = diffMaps(mapsBefore.get(s.id) as HubMap, after.mapFor(s.id))
    if (!d) continue
    recipients++
    maxBytes = Math.max(maxBytes, Buffer.byteLength(JSON.stringify({ t: 'delta', rev: 123456, hash: 'x'.repeat(44), delta: d })))
    t.equal(
      applyDelta(mapsBefore.get(s.id) as HubMap, d) && mapHash(applyDelta(mapsBefore.get(s.id) as HubMap, d)),
      mapHash(after.mapFor(s.id)),
    )
  }
  t.equal(recipients, 50, 'only the 50 laptops that see the server get a delta')
  t.ok(maxBytes + 18 <= 200, `an endpoint change is ${maxBytes} bytes of JSON per recipient, ${maxBytes + 18} on the wire`)
  // Tags of a laptop change to isolated: the servers drop it, it drops the servers.
  const retagged = new HubModel(
    systems.map((s) => (s.id === 1 ? { ...s, tags: ['isolated'] } : s)),
    policies,
    [],
  )
  t.same(
    systems
      .filter((s) => diffMaps(mapsBefore.get(s.id) as HubMap, retagged.mapFor(s.id)))
      .map((s) => s.id)
      .sort((a, b) => a - b),
    [1, ...Array.from({ length: 50 }, (_, i) => i + 51)],
    'a tag change reaches the system and the 50 servers, nobody else',
  )
})

t.test('the map is a whitelist: a host setting anywhere refuses it whole', async (t) => {
  const ok: HubMap = {
    Self: { Identity: 'AAAAA', VirtualAddress: '100.64.0.9', Tags: [], State: 'approved', ProvidesRoutes: [] },
    Peers: [],
    Policies: [],
    AvailableRoutes: {},
  }
  t.ok(hubMapSchema.safeParse(ok).success)
  for (const bad of [
    { ...ok, LocalPort: 1 },
    { ...ok, PrivateKey: 'x' },
    { ...ok, Self: { ...ok.Self, Mtu: 1280 } },
    { ...ok, Self: { ...ok.Self, Interface: 'eth0' } },
    { ...ok, Peers: [{ PublicKey: 'k', Identity: 'I', VirtualAddress: '100.64.0.1', Tags: [], PresharedKey: 'x' }] },
    { ...ok, ControlGroup: 'wheel' },
    { ...ok, MetricsListen: '0.0.0.0:1' },
  ])
    t.notOk(hubMapSchema.safeParse(bad).success, `refused: ${JSON.stringify(bad).slice(0, 80)}`)
})

t.test('merge: gateway and public routes need local consent; local peers keep working; collisions skip the hub peer', async (t) => {
  const me = generateKeyPair()
  const exit = generateKeyPair()
  const localPeer = generateKeyPair()
  const hubPub = generateKeyPair().publicKey.toString('base64')
  const file = path.join(tmp, 'merge', 'Universe.profile')
  const local = (consent: { AllowGateway?: boolean; AcceptDefaultRoute?: boolean }) =>
    validateProfile(file, {
      PrivateKey: me.privateKey.toString('base64'),
      Peers: [{ PublicKey: localPeer.publicKey.toString('base64'), Endpoint: '192.0.2.1:51820', Description: 'phone' }],
      Hub: { Urls: ['http://192.0.2.10:8443'], PublicKey: hubPub, ...consent },
    })
  const exitId = identityFromPublicKey(exit.publicKey)
  const map: HubMap = {
    Self: {
      Identity: identityFromPublicKey(me.publicKey),
      VirtualAddress: '100.64.1.1',
      Tags: ['exit-node'],
      State: 'approved',
      ProvidesRoutes: ['172.26.0.0/20'],
    },
    Peers: [{ PublicKey: exit.publicKey.toString('base64'), Identity: exitId, VirtualAddress: '100.64.1.2', Tags: ['laptops'] }],
    Policies: [
      {
        Description: 'printer',
        SenderTags: ['laptops'],
        ReceiverTags: ['exit-node'],
        Acls: [{ Protocol: 'Icmp' }],
        GatewayRoutes: ['172.26.0.0/20'],
      },
    ],
    AvailableRoutes: { [exitId]: ['10.1.0.0/16', '0.0.0.0/0', '0.0.0.0/1', '128.0.0.0/1', '8.8.8.8/32'] },
  }
  const no = mergeHubLayer(local({}), map)
  t.same(no.profile.exitNode.providesRoutes, [], 'no exit node without --allow-gateway')
  t.same(
    no.profile.exitNode.availableRoutes.get(exitId)?.map((c) => c.text),
    ['10.1.0.0/16'],
    'only private routes without --accept-default-route (not 0/0, not two /1s, not a public /32)',
  )
  t.equal(no.notAccepted.length, 5, 'each refusal is listed for status')
  t.match(no.notAccepted.join('\n'), /gateway for 172\.26\.0\.0\/20.*--allow-gateway/)
  t.ok(
    no.profile.peers.some((p) => p.source === 'local' && p.description === 'phone'),
    'the local peer is kept',
  )
  t.ok(
    no.profile.peers.some((p) => p.source === 'hub' && p.identity === exitId),
    'beside the hub peer',
  )
  t.equal(no.profile.privateKey.toString('base64'), me.privateKey.toString('base64'), 'keys are the local ones')
  const yes = mergeHubLayer(local({ AllowGateway: true, AcceptDefaultRoute: true }), map)
  t.same(
    yes.profile.exitNode.providesRoutes.map((c) => c.text),
    ['172.26.0.0/20'],
    'with consent it provides the route',
  )
  t.equal(yes.profile.exitNode.availableRoutes.get(exitId)?.length, 5)
  t.same(yes.notAccepted, [])
  // The hub gives a peer the local peer's address (an enrolled agent that ground its key for it, review 19
  // F5: about 47 s on one core): the hand-configured peer wins, the hub peer is skipped and reported.
  // Before: "not ok - the hand-configured peer is kept" (the local peer was skipped instead).
  const squatter = generateKeyPair().publicKey
  const clash = mergeHubLayer(local({}), {
    ...map,
    Peers: [
      ...map.Peers,
      {
        PublicKey: squatter.toString('base64'),
        Identity: identityFromPublicKey(squatter),
        VirtualAddress: intToIp(virtualAddressFromPublicKey(localPeer.publicKey)),
        Tags: [],
      },
    ],
  })
  t.ok(
    clash.profile.peers.some((p) => p.description === 'phone'),
    'the hand-configured peer is kept',
  )
  t.notOk(
    clash.profile.peers.some((p) => p.publicKeyBase64 === squatter.toString('base64')),
    'the hub peer with its address is not',
  )
  t.equal(clash.skippedLocal.length, 0)
  t.match(clash.skippedHub.join('\n'), /hand-configured peer/, 'and status says so')
  const byIdentity = mergeHubLayer(local({}), {
    ...map,
    Peers: [
      ...map.Peers,
      {
        PublicKey: squatter.toString('base64'),
        Identity: identityFromPublicKey(localPeer.publicKey),
        VirtualAddress: '100.64.9.9',
        Tags: [],
      },
    ],
  })
  t.notOk(
    byIdentity.profile.peers.some((p) => p.publicKeyBase64 === squatter.toString('base64')),
    "nor one with the hand-configured peer's identity",
  )
  // A peer endpoint no agent can use (review 19 F1: an agent claimed "no-port-here"; F4: an IPv6 source
  // gave "::1:51820"): the endpoint is dropped, the rest of the map applies. Before: the whole map was
  // refused, so every viewer kept a stale map and asked for it again without end.
  for (const bad of ['no-port-here', '::1:51820', '[::1]:51820']) {
    const r = mergeHubLayer(local({}), { ...map, Peers: [{ ...map.Peers[0], Endpoint: bad }] })
    const exitPeer = r.profile.peers.find((p) => p.identity === exitId)
    t.ok(exitPeer, `a peer with endpoint ${bad} is kept`)
    t.equal(exitPeer?.endpoint, undefined, 'without that endpoint')
    t.match(r.skippedHub.join('\n'), /endpoint dropped/)
  }
  // A hub policy that grants gateway ranges with GatewayAllowedIpRanges (no GatewayRoutes) needs the same
  // consent (review 19 F8). Before: "not ok - no hub policy grants gateway ranges here without --allow-gateway".
  const exitByProfile = validateProfile(file, {
    PrivateKey: me.privateKey.toString('base64'),
    ExitNode: { ProvidesRoutes: ['192.168.50.0/24'] },
    Peers: [],
    Hub: { Urls: ['http://192.0.2.10:8443'], PublicKey: generateKeyPair().publicKey.toString('base64'), AllowGateway: false },
  })
  const ranges = mergeHubLayer(exitByProfile, {
    ...map,
    Self: { ...map.Self, ProvidesRoutes: [] },
    Policies: [
      {
        Description: 'through you',
        SenderTags: ['laptops'],
        ReceiverTags: ['exit-node'],
        Acls: [{ Protocol: 'Any' }],
        GatewayAllowedIpRanges: [{ IpRange: '192.168.50.0/24' }],
      },
    ],
  })
  const granting = (ranges.profile.policies ?? []).filter((p) => p.appliesHere && gatewayRanges(p))
  t.equal(granting.length, 0, 'no hub policy grants gateway ranges here without --allow-gateway')
  t.match(ranges.notAccepted.join('\n'), /gateway for 192\.168\.50\.0\/24 \(policy "through you"\)/, 'it is listed as not accepted')
  // A map whose content does not validate (a bad route) is refused whole.
  t.throws(
    () => mergeHubLayer(local({ AcceptDefaultRoute: true }), { ...map, AvailableRoutes: { [exitId]: ['10.1.0.0/33'] } }),
    /hub's layer/,
  )
})
