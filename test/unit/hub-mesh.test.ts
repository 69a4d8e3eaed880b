/**
 * A hub and whole agents in one process: the real HubServer on loopback (SQLite in a temporary
 * directory), real Agents on a memory network (test/helpers/mesh.ts), enrolled with `enrol()` as the
 * CLI does. Admin changes go to the database through HubAdmin, as `enclave hub …` on the hub host does.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { createLogger } from '../../src/log/logger.js'
import { enrol } from '../../src/ops/enrol.js'
import { Mesh, type MeshNode, icmpEcho } from '../helpers/mesh.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hub-${process.pid}-`))
const hubLog: string[] = []
const log = createLogger(4, 'logfmt', { out: { write: (l: string) => void hubLog.push(l) } })
let hub: HubServer
let store: HubStore
let admin: HubAdmin
let hubKey: string
const mesh = new Mesh('hub')
const sent: Array<{ identity: string; type: string; bytes: number }> = []

t.before(async () => {
  hubKey = (await initHub(dir, '127.0.0.1:0')).publicKey
  hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: 'off', log })
  await hub.start()
  hub.on('sent', (identity: string, type: string, bytes: number) => sent.push({ identity, type, bytes }))
  store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  admin = new HubAdmin(store, 'test-admin')
})
t.teardown(async () => {
  await mesh.close()
  await hub.stop()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

const url = () => `http://127.0.0.1:${hub.port}`

async function join(n: MeshNode, key: string, extra: { allowGateway?: boolean } = {}) {
  const r = await enrol({
    file: n.profileFile,
    key,
    urls: [url()],
    hubKey,
    allowGateway: extra.allowGateway ?? false,
    acceptDefaultRoute: false,
    advertiseEndpoints: [mesh.endpoint(n)],
  })
  n.va = r.virtualAddress
  return r
}

/** An echo request from `from` to `to`; resolves with whether `to`'s TUN got it. */
async function ping(from: MeshNode, to: MeshNode, seq: number): Promise<boolean> {
  from.dev?.sendToTun(icmpEcho(from.va, to.va, 8, 4242, seq))
  const got = await to.dev?.nextFromTun((p) => p[9] === 1 && p[20] === 8 && p[26] === seq >> 8 && p[27] === (seq & 255), 2000)
  return !!got
}

/** Resolves once every connected agent acknowledged the hub's current revision. */
async function enforcedEverywhere(): Promise<void> {
  const rev = (await store.revision()) as number
  await mesh.until(
    `every agent to acknowledge rev ${rev}`,
    () => hub.revision >= rev && hub.connected().every((c) => c.ackRev >= rev || c.sentRev < rev),
  )
}

t.test('an auto-approve key with tags: three agents enrol, get each other as peers and exchange packets', async (t) => {
  const key = await admin.createKey('office laptops', { autoApprove: true, tags: ['laptops'] })
  t.match(key.key, /^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$/, 'the key has Enclave form')
  await admin.putPolicy(
    'laptops talk',
    { SenderTags: ['laptops'], ReceiverTags: ['laptops'], Acls: [{ Protocol: 'Any' }] },
    { create: true },
  )
  const [a, b, c] = ['a', 'b', 'c'].map((x) => mesh.node(x))
  for (const n of [a, b, c]) {
    const r = await join(n, key.key)
    t.equal(r.state, 'approved')
    t.equal(r.identity, n.identity, 'the identity is derived from the key')
  }
  const saved = fs.readFileSync(a.profileFile, 'utf8')
  t.notMatch(saved, key.key.slice(6), 'the enrolment key is never written to the profile')
  t.match(JSON.parse(saved).Hub, { Urls: [url()], PublicKey: hubKey, AllowGateway: false })
  for (const n of [a, b, c]) await mesh.start(n)
  await mesh.until('every agent has two hub peers', () =>
    [a, b, c].every((n) => mesh.status(n).peers.filter((p) => p.source === 'hub').length === 2),
  )
  await enforcedEverywhere()
  t.ok(await mesh.udp(a, b), 'a reaches b')
  const ca = await mesh.udp(c, a)
  if (!ca) console.error(c.log.slice(-30).join('\n'), '\n----\n', a.log.slice(-30).join('\n'))
  t.ok(ca, 'c reaches a')
  t.equal(mesh.status(a).hub?.state, 'up')
  t.equal(mesh.status(a).hub?.systemState, 'approved')
  t.ok(fs.statSync(path.join(a.dir, 'state', 'hub-map.json')).mode & 0o600, 'the map is cached')
  t.equal(fs.statSync(path.join(a.dir, 'state', 'hub-map.json')).mode & 0o077, 0, 'the cache is private')
  await enforcedEverywhere()
  t.ok(hub.connected().length >= 3)

  t.test('a manual key: pending, no peers; approved, it reaches the others', async (t) => {
    const manual = await admin.createKey('needs approval', { tags: ['laptops'] })
    const d = mesh.node('d')
    t.equal((await join(d, manual.key)).state, 'pending')
    await mesh.start(d)
    await mesh.until('d connected', () => mesh.status(d).hub?.systemState === 'pending')
    t.equal(mesh.status(d).peers.length, 0, 'a pending system gets no peers')
    t.notOk(
      mesh.status(a).peers.some((p) => p.identity === d.identity),
      'nobody gets a pending system',
    )
    t.same(
      (await admin.listSystems({ pending: true })).map((s) => s.identity),
      [d.identity],
    )
    await admin.setState('approve', [d.identity])
    await mesh.until('d has three peers', () => mesh.status(d).peers.length === 3)
    await enforcedEverywhere()
    t.ok(await mesh.udp(d, a), 'd reaches a after approval')

    t.test('a policy change cuts a flow once every agent acknowledged it', async (t) => {
      t.ok(await mesh.udp(a, b, { dport: 5000 }), 'udp 5000 passes before')
      const dry = await admin.putPolicy(
        'laptops talk',
        { SenderTags: ['laptops'], ReceiverTags: ['laptops'], Acls: [{ Protocol: 'Icmp' }] },
        { dryRun: true },
      )
      t.ok(dry.closed.length > 0 && dry.opened.length > 0, 'the dry run lists the pairs it changes')
      t.ok(
        dry.closed.some((p) => p.startsWith(`${a.identity} -> ${b.identity} (any)`)),
        'a -> b (any) would close',
      )
      t.ok(await mesh.udp(a, b, { dport: 5000 }), 'a dry run changes nothing')
      await admin.putPolicy('laptops talk', { SenderTags: ['laptops'], ReceiverTags: ['laptops'], Acls: [{ Protocol: 'Icmp' }] }, {})
      await enforcedEverywhere()
      t.notOk(await mesh.udp(a, b, { dport: 5000, timeoutMs: 500 }), 'udp is dropped once acknowledged')
      const deltas = sent.filter((s) => s.type === 'delta')
      t.ok(deltas.length > 0, 'changes go as deltas')
    })

    t.test('disable and remove drop a system from every peer', async (t) => {
      await admin.setState('disable', [d.identity])
      await mesh.until('d dropped everywhere', () => [a, b, c].every((n) => !mesh.status(n).peers.some((p) => p.identity === d.identity)))
      await mesh.until('d told it is disabled', () => mesh.status(d).hub?.systemState === 'disabled')
      t.equal(mesh.status(d).peers.filter((p) => p.source === 'hub').length, 0, 'the disabled system drops its hub peers')
      await admin.setState('remove', [c.identity])
      await mesh.until('c dropped everywhere', () => [a, b].every((n) => !mesh.status(n).peers.some((p) => p.identity === c.identity)))
      await mesh.until('c refused', () => mesh.status(c).hub?.systemState === 'removed')
      const audit = await admin.auditLog()
      t.ok(
        audit.some((e) => e.action === 'system.disable' && e.actor === 'test-admin' && e.target === d.identity),
        'the audit log names who did what',
      )
    })

    t.test(
      'the hub down: tunnels keep working, a restarted agent comes back from the cache, the hub back resumes without a full map',
      async (t) => {
        await hub.stop()
        await mesh.until('a sees the hub gone', () => mesh.status(a).hub?.state === 'unreachable')
        let lost = 0
        for (let i = 0; i < 40; i++) if (!(await ping(a, b, i))) lost++
        t.equal(lost, 0, '40 pings with the hub down: none lost')
        t.notOk(await mesh.udp(a, b, { dport: 5000, timeoutMs: 500 }), 'udp stays denied by the policy in force (icmp only)')
        await a.agent?.stop('restart')
        a.agent = undefined
        await mesh.start(a)
        t.equal(mesh.status(a).peers.filter((p) => p.source === 'hub').length, 1, 'the restarted agent has its hub peer from the cache')
        t.ok(mesh.status(a).policy?.mode === 'enforce', 'and its policies')
        t.ok(await ping(a, b, 1000), 'and its tunnel, with the hub still down')
        const before = sent.length
        hub = new HubServer({ dataDir: dir, listen: `127.0.0.1:${hub.port}`, portal: 'off', log })
        hub.on('sent', (identity: string, type: string, bytes: number) => sent.push({ identity, type, bytes }))
        await hub.start()
        await mesh.until('a and b reconnected', () => [a, b].every((n) => mesh.status(n).hub?.state === 'up'), 15_000)
        await mesh.until('both acknowledged', () => hub.connected().filter((c) => c.ackRev > 0).length >= 2, 15_000)
        const after = sent.slice(before).filter((s) => s.identity === a.identity || s.identity === b.identity)
        t.equal(after.filter((s) => s.type === 'map').length, 0, 'no full map on resume')
        t.ok(
          after.every((s) => s.bytes <= 200),
          `resume messages are small (${after.map((s) => s.bytes).join(', ')} bytes)`,
        )
      },
    )
  })
})
