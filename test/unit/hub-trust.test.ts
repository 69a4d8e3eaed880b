/**
 * What an enrolled (or pending) agent can make the hub and the other agents do (issue 19, review 19),
 * whole agents in one process against a real hub on loopback. Each failed before its fix:
 * F1: an agent claiming an endpoint no agent accepts ("no-port-here") froze every viewer's map and made
 *     the hub send it full maps in a loop: "not ok - a removed system (c) is dropped by the other agents",
 *     "not ok - a is not sent full maps in a loop (1037 in 1.5 s)".
 * F2: 500 resync messages made the hub send 500 full maps: "not ok - the hub limits resyncs".
 * F4: an agent reaching the hub over IPv6 got the endpoint "::1:51820" (unbracketed), which agents refuse.
 * F7: a pending system's 10 reconnections added 1,500 route rows and bumped the revision 10 times.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { identityFromPublicKey } from '../../src/config/identity.js'
import { endpointProblem } from '../../src/config/schema.js'
import WebSocket from 'ws'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubServer, claimedEndpoint, initHub, sourceEndpoint } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { createLogger } from '../../src/log/logger.js'
import { enrol } from '../../src/ops/enrol.js'
import { decodeKey } from '../../src/config/keys.js'
import { initiate } from '../../src/hubproto/noise-ik.js'
import {
  HUB_PATH,
  MessageReader,
  T_MSG1,
  T_MSG2,
  helloTimestamp,
  sealDatagrams,
  sealMessage,
  welcomeSchema,
} from '../../src/hubproto/wire.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'
import { Mesh, type MeshNode } from '../helpers/mesh.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hubtrust-${process.pid}-`))
const hubLog: string[] = []
const log = createLogger(4, 'logfmt', { out: { write: (l: string) => void hubLog.push(l) } })
let hub: HubServer
let store: HubStore
let admin: HubAdmin
let hubKey: string
const mesh = new Mesh('htr')
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

async function join(n: MeshNode, key: string) {
  const r = await enrol({
    file: n.profileFile,
    key,
    urls: [url()],
    hubKey,
    allowGateway: false,
    acceptDefaultRoute: false,
    advertiseEndpoints: [mesh.endpoint(n)],
  })
  n.va = r.virtualAddress
  return r
}

/** A hand-made agent: any hello it likes, over a real Noise_IK handshake; returns the first payload and a sender. */
export async function rawAgent(hello: Record<string, unknown>, kp = generateKeyPair(), port = hub.port, host = '127.0.0.1') {
  const hk = decodeKey(hubKey) as Buffer
  const full = {
    t: 'hello',
    v: 1,
    ts: helloTimestamp(Date.now()),
    hostname: 'evil',
    listenPort: 51820,
    allowGateway: false,
    acceptDefaultRoute: false,
    advertise: [],
    ...hello,
  }
  const hs = initiate(kp, hk, Buffer.from(JSON.stringify(full)))
  const ws = new WebSocket(`ws://${host}:${port}${HUB_PATH}`)
  const received: unknown[] = []
  let bytesIn = 0
  const first = await new Promise<{
    payload: Record<string, unknown>
    send: (m: unknown) => void
    datagram: (to: string, d: Buffer) => void
  }>((resolve, reject) => {
    let reader: MessageReader | null = null
    ws.on('open', () => ws.send(Buffer.concat([Buffer.of(T_MSG1), hs.message1])))
    ws.on('error', reject)
    ws.on('close', (code: number) => reject(new Error(`closed ${code} before the handshake answer`)))
    ws.on('message', (data: Buffer) => {
      bytesIn += data.length
      if (!reader) {
        if (data[0] !== T_MSG2) return reject(new Error('no msg2'))
        const got = hs.readMessage2(data.subarray(1))
        if (!got) return reject(new Error('msg2 failed'))
        reader = new MessageReader(got.transport.recv)
        const send = (m: unknown) => {
          for (const f of sealMessage(got.transport.send, m)) ws.send(f)
        }
        const datagram = (to: string, d: Buffer) => ws.send(sealDatagrams(got.transport.send, to, [d]))
        resolve({ payload: JSON.parse(Buffer.from(got.payload).toString('utf8')), send, datagram })
        return
      }
      const m = reader.read(data)
      if (m !== undefined) received.push(m)
    })
  })
  return { ...first, ws, kp, received, bytesIn: () => bytesIn }
}

t.test('F1: an enrolled agent claiming an invalid endpoint must not freeze or loop other agents', async (t) => {
  const key = await admin.createKey('r19 fleet', { autoApprove: true, tags: ['fleet'], uses: 10 })
  await admin.putPolicy('fleet', { SenderTags: ['fleet'], ReceiverTags: ['fleet'], Acls: [{ Protocol: 'Any' }] }, { create: true })
  const [a, b, c] = ['a', 'b', 'c'].map((x) => mesh.node(x))
  for (const n of [a, b, c]) await join(n, key.key)
  for (const n of [a, b, c]) await mesh.start(n)
  await mesh.until('every agent has two hub peers', () =>
    [a, b, c].every((n) => mesh.status(n).peers.filter((p) => p.source === 'hub').length === 2),
  )
  // The attacker: one use of the fleet key, an endpoint the profile schema refuses.
  const evil = await rawAgent({ enrol: { key: key.key }, endpoints: ['no-port-here'] })
  t.equal(evil.payload.t, 'welcome', 'the hub accepts the hello with endpoint "no-port-here"')
  const mark = sent.length
  await new Promise((r) => setTimeout(r, 1500))
  const mapsToA = sent.slice(mark).filter((s) => s.identity === a.identity && s.type === 'map').length
  t.comment(`full maps sent to a in the 1.5 s after the evil enrolment: ${mapsToA}`)
  t.comment(`a's log: ${a.log.filter((l) => l.includes('refused')).slice(-1)[0] ?? '(nothing refused)'}`)
  // An admin now removes c: every other agent must drop it.
  await admin.setState('remove', [c.identity])
  let dropped = true
  try {
    await mesh.until('c dropped by a and b', () => [a, b].every((n) => !mesh.status(n).peers.some((p) => p.identity === c.identity)), 4000)
  } catch {
    dropped = false
  }
  t.ok(dropped, 'a removed system (c) is dropped by the other agents')
  t.ok(mapsToA <= 3, `a is not sent full maps in a loop (${mapsToA} in 1.5 s)`)
  evil.ws.terminate()
  // Clean up for the next tests: the evil system removed, c back is not needed.
  await admin.setState('remove', [identityFromPublicKey(evil.kp.publicKey)])
  await mesh
    .until('a and b agree with the hub again', () => hub.connected().every((x) => x.ackRev >= hub.revision - 0), 8000)
    .catch(() => undefined)
})

t.test('F2: an enrolled agent cannot make the hub send full maps without limit (resync flood)', async (t) => {
  const key = await admin.createKey('r19 flood', { autoApprove: true, tags: ['fleet'], uses: 1 })
  const evil = await rawAgent({ enrol: { key: key.key }, endpoints: ['127.0.0.1:9'] })
  t.equal(evil.payload.t, 'welcome')
  const id = identityFromPublicKey(evil.kp.publicKey)
  await new Promise((r) => setTimeout(r, 300))
  const mark = sent.length
  let out = 0
  for (let i = 0; i < 500; i++) {
    evil.send({ t: 'resync' })
    out += 1
  }
  await new Promise((r) => setTimeout(r, 1500))
  const maps = sent.slice(mark).filter((s) => s.identity === id && s.type === 'map')
  const bytes = maps.reduce((n, s) => n + s.bytes, 0)
  t.comment(`${out} resync messages (~${out * 40} bytes) -> ${maps.length} full maps, ${bytes} bytes from the hub`)
  t.ok(maps.length <= 10, `the hub limits resyncs (${maps.length} full maps for ${out} resyncs)`)
  evil.ws.terminate()
  await admin.setState('remove', [id])
})

t.test("F4: a benign agent reaching the hub over IPv6 must not poison other agents' maps", async (t) => {
  const hub6 = new HubServer({ dataDir: dir, listen: '[::1]:0', portal: 'off', log })
  try {
    await hub6.start()
  } catch (e) {
    t.skip(`no IPv6 loopback: ${(e as Error).message}`)
    return
  }
  try {
    const key = await admin.createKey('r19 v6', { autoApprove: true, tags: ['fleet'], uses: 1 })
    // No endpoints claimed: the hub takes the connection's source address and the listen port.
    const v6 = await rawAgent({ enrol: { key: key.key } }, generateKeyPair(), hub6.port, '[::1]')
    t.equal(v6.payload.t, 'welcome')
    const row = (await admin.listSystems()).find((s) => s.identity === identityFromPublicKey(v6.kp.publicKey))
    t.comment(`endpoint recorded for the IPv6 agent: ${row?.endpoint}`)
    t.ok(
      row?.endpoint === null || endpointProblem(row?.endpoint ?? '') === undefined,
      `the recorded endpoint (${row?.endpoint}) is one agents accept`,
    )
    v6.ws.terminate()
    await admin.setState('remove', [identityFromPublicKey(v6.kp.publicKey)])
  } finally {
    await hub6.stop()
  }
})

t.test('F7: a pending (unapproved) system cannot grow the hub database and revision without limit', async (t) => {
  const key = await admin.createKey('r19 pending', { tags: ['fleet'], uses: 1 })
  const kp = generateKeyPair()
  const first = await rawAgent({ enrol: { key: key.key }, ts: helloTimestamp(Date.now()) }, kp)
  t.equal((first.payload as { state?: string }).state, 'pending')
  first.ws.terminate()
  const id = identityFromPublicKey(kp.publicKey)
  const rev0 = (await store.revision()) as number
  const audit0 = (await admin.auditLog(100000)).length
  for (let i = 1; i <= 10; i++) {
    const routes = Array.from({ length: 150 }, (_, j) => `10.${i}.${j}.0/24`)
    const c = await rawAgent({ ts: helloTimestamp(Date.now() + i * 10), advertise: routes }, kp).catch((e: Error) => {
      t.comment(`reconnection ${i}: ${e.message}; hub log: ${hubLog.slice(-2).join(' | ').slice(0, 400)}`)
      return null
    })
    c?.ws.terminate()
  }
  const rows = (await admin.listRoutes()).filter((r) => r.identity === id).length
  const rev1 = (await store.revision()) as number
  const audits = await admin.auditLog(100000)
  const bytes = audits.slice(audit0).reduce((n, a) => n + JSON.stringify(a.details).length, 0)
  t.comment(
    `10 reconnections of a pending system: ${rows} route rows, revision +${rev1 - rev0}, ${audits.length - audit0} audit rows (${bytes} bytes of details)`,
  )
  t.ok(rows <= 150, `a pending system holds at most one hello's worth of routes (${rows})`)
  t.ok(rev1 - rev0 <= 1, `its reconnections do not bump the revision each time (+${rev1 - rev0})`)
  await admin.setState('remove', [id])
})

t.test('F11: claimed endpoints that would aim viewers at themselves or the overlay are not used', async (t) => {
  for (const bad of [
    '127.0.0.1:22',
    '0.0.0.0:51820',
    '100.64.0.7:51820',
    '224.0.0.1:51820',
    '255.255.255.255:9',
    'localhost:51820',
    '1.2.3:9',
    'x',
  ])
    t.equal(claimedEndpoint(bad), undefined, `${bad} is not used`)
  for (const good of ['203.0.113.7:51820', '192.168.1.10:51820', 'vpn.example.com:51820'])
    t.equal(claimedEndpoint(good), good, `${good} is used`)
  t.equal(sourceEndpoint('::ffff:198.51.100.4', 51820), '198.51.100.4:51820', 'an IPv4-mapped source is IPv4')
  t.equal(sourceEndpoint('2001:db8::1', 51820), undefined, 'an IPv6 source gives no endpoint (agents have no IPv6 underlay yet)')
  const key = await admin.createKey('claims', { autoApprove: true, tags: ['fleet'], uses: 1 })
  const evil = await rawAgent({ enrol: { key: key.key }, endpoints: ['127.0.0.1:22', '100.64.0.1:51820'] })
  const id = identityFromPublicKey(evil.kp.publicKey)
  const row = (await admin.listSystems()).find((s) => s.identity === id)
  t.equal(row?.endpoint, '127.0.0.1:51820', 'the connection source (loopback here) with its listen port is used instead')
  // A NAT report may only name an address the hub's reflect ports saw for this connection.
  evil.send({ t: 'nat', nat: 'easy', addr: '203.0.113.9:4000' })
  await new Promise((r) => setTimeout(r, 300))
  const after = (await admin.listSystems()).find((s) => s.identity === id)
  t.equal(after?.endpoint, '127.0.0.1:51820', 'a NAT report naming an address the hub never saw changes nothing')
  evil.ws.terminate()
  await admin.setState('remove', [id])
})

t.test('F12: the welcome is an identity and an address, never terminal text', async (t) => {
  const ok = { t: 'welcome', identity: 'G982V', address: '100.64.0.9', state: 'approved', enrolled: true }
  t.ok(welcomeSchema.safeParse(ok).success, 'a real welcome parses')
  t.notOk(welcomeSchema.safeParse({ ...ok, identity: '\u001b[2J\u001b[31mOWNED' }).success, 'escape sequences in the identity are refused')
  t.notOk(welcomeSchema.safeParse({ ...ok, address: '100.64.0.9\n\u001b[0m' }).success, 'and in the address')
})

t.test('F13: an agent that advertises a route twice still connects, every time', async (t) => {
  const key = await admin.createKey('dup routes', { autoApprove: true, tags: ['fleet'], uses: 1 })
  const kp = generateKeyPair()
  const first = await rawAgent({ enrol: { key: key.key }, advertise: ['10.9.0.0/24', '10.9.0.0/24'] }, kp)
  t.equal(first.payload.t, 'welcome')
  first.ws.terminate()
  for (let i = 1; i <= 2; i++) {
    const again = await rawAgent({ ts: helloTimestamp(Date.now() + i * 10), advertise: ['10.9.1.0/24', '10.9.1.0/24', '10.9.0.0/24'] }, kp)
    t.equal(again.payload.t, 'welcome', `reconnection ${i} with a duplicated new route is welcomed`)
    again.ws.terminate()
  }
  const id = identityFromPublicKey(kp.publicKey)
  const routes = (await admin.listRoutes()).filter((r) => r.identity === id).map((r) => r.cidr)
  t.same(routes.sort(), ['10.9.0.0/24', '10.9.1.0/24'], 'each route is recorded once')
  await admin.setState('remove', [id])
})

t.test('relay-tcp: the hub forwards a datagram only to a connected system that may see the sender', async (t) => {
  const ka = await admin.createKey('dgram a', { autoApprove: true, tags: ['dga'], uses: 2 })
  const kc = await admin.createKey('dgram c', { autoApprove: true, tags: ['dgc'], uses: 1 })
  await admin.putPolicy('dga', { SenderTags: ['dga'], ReceiverTags: ['dga'], Acls: [{ Protocol: 'Any' }] }, { create: true })
  const a = await rawAgent({ enrol: { key: ka.key } })
  const b = await rawAgent({ enrol: { key: ka.key } })
  const c = await rawAgent({ enrol: { key: kc.key } })
  const [ia, ib, ic] = [a, b, c].map((x) => identityFromPublicKey(x.kp.publicKey))
  const wg = Buffer.alloc(64)
  wg[0] = 4
  const got = (x: typeof a) =>
    (x.received.filter((m) => (m as { t?: string }).t === 'datagram') as Array<{ peer: string; data: Buffer[] }>).flatMap((m) =>
      m.data.map((data) => ({ peer: m.peer, data })),
    )
  await new Promise((r) => setTimeout(r, 300))
  a.datagram(ib, wg)
  a.datagram(ic, wg)
  await new Promise((r) => setTimeout(r, 300))
  t.equal(got(b).length, 1, 'b, which may see a, gets the datagram')
  t.equal(got(b)[0]?.peer, ia, 'named as from a')
  t.equal(Buffer.compare(got(b)[0]?.data ?? Buffer.alloc(0), wg), 0, 'unchanged')
  t.equal(got(c).length, 0, 'c, which may not see a, gets nothing')
  for (const x of [a, b, c]) x.ws.terminate()
  await admin.setState('remove', [ia, ib, ic])
})
