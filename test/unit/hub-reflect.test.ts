/**
 * Endpoint discovery (issue 20, src/hubproto/reflect.ts): the agent's hub link sends reflect datagrams
 * from its WireGuard socket (here a real UDP socket on loopback) to the hub's two reflect ports; a real
 * HubServer answers over the authenticated connection with the source it saw; the link judges the NAT
 * class and reports it, and the hub makes the reflexive address the system's endpoint (none, easy).
 */
import dgram from 'node:dgram'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubLink } from '../../src/agent/hub-link.js'
import { generatePrivateKey } from '../../src/config/keys.js'
import { loadProfile, writeProfile } from '../../src/config/profile.js'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { natClass, parseReflect, reflectDatagram } from '../../src/hubproto/reflect.js'
import { createLogger } from '../../src/log/logger.js'
import { enrol } from '../../src/ops/enrol.js'

t.test('natClass: the four classes from what two ports saw', async (t) => {
  t.equal(natClass([undefined, undefined], ['10.0.0.2']), 'blocked', 'no answer: blocked')
  t.equal(natClass(['10.0.0.2:51820', '10.0.0.2:51820'], ['10.0.0.2']), 'none', 'our own address: none')
  t.equal(natClass(['198.51.100.1:51820', '198.51.100.1:51820'], ['10.0.0.2']), 'easy', 'one mapping: easy')
  t.equal(natClass(['198.51.100.1:40000', '198.51.100.1:40001'], ['10.0.0.2']), 'hard', 'a mapping per destination: hard')
  t.equal(natClass(['198.51.100.1:40000', undefined], ['10.0.0.2']), 'unknown', 'one answer: unknown')
  const d = reflectDatagram(Buffer.alloc(16, 7), 9)
  t.same(parseReflect(d), { token: '07'.repeat(16), seq: 9 }, 'a datagram parses back')
  t.equal(parseReflect(d.subarray(0, 23)), null, 'a short one does not')
  const bad = Buffer.from(d)
  bad[0] = 0xe1
  t.equal(parseReflect(bad), null, 'nor one without the magic')
})

t.test('a hub and a hub link on loopback: discovery, the endpoint, and what strangers get', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-reflect-${process.pid}-`))
  const log = createLogger(4, 'logfmt', { out: { write: () => undefined } })
  const hubKey = (await initHub(path.join(dir, 'hub'), '127.0.0.1:0')).publicKey
  const hub = new HubServer({ dataDir: path.join(dir, 'hub'), listen: '127.0.0.1:0', portal: 'off', log, reflectPorts: [0, 0] })
  await hub.start()
  const store = await HubStore.open({ file: path.join(dir, 'hub', 'hub.db') })
  const admin = new HubAdmin(store, 'test')
  const sock = dgram.createSocket('udp4') // the agent's "WireGuard socket"
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
  const wgPort = sock.address().port
  let link: HubLink | undefined
  t.teardown(async () => {
    link?.stop()
    sock.close()
    await hub.stop()
    await store.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })
  t.equal(hub.reflectPorts.length, 2, `the hub listens on two reflect ports (${hub.reflectPorts.join(', ')})`)
  const reflected: number[] = []
  hub.on('sent', (_id: string, type: string) => type === 'reflected' && reflected.push(1))

  const file = path.join(dir, 'agent', 'Universe.profile')
  fs.mkdirSync(path.dirname(file), { recursive: true })
  writeProfile(file, { PrivateKey: generatePrivateKey().toString('base64'), LocalPort: wgPort, Peers: [], ExitNode: {} })
  const key = await admin.createKey('laptops', { autoApprove: true, tags: ['laptops'] })
  const r = await enrol({
    file,
    key: key.key,
    urls: [`http://127.0.0.1:${hub.port}`],
    hubKey,
    allowGateway: false,
    acceptDefaultRoute: false,
    advertiseEndpoints: [],
  })
  const lines: string[] = []
  const start = (local: string[]) => {
    link?.stop()
    link = new HubLink({
      profile: loadProfile(file),
      cacheFile: path.join(dir, 'agent', 'hub-map.json'),
      log: createLogger(3, 'logfmt', { out: { write: (l: string) => void lines.push(l) } }),
      apply: async () => true,
      sendUdp: (buf, ip, port) => sock.send(buf, port, `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`),
      localAddresses: async () => local,
      reflectEveryMs: 60_000,
    })
    link.start()
    return link
  }
  const until = async (cond: () => boolean | Promise<boolean>, ms = 8000) => {
    const end = Date.now() + ms
    while (!(await cond()) && Date.now() < end) await new Promise((res) => setTimeout(res, 50))
  }
  const endpoint = async () =>
    (await store.db.selectFrom('systems').select('endpoint').where('identity', '=', r.identity).executeTakeFirst())?.endpoint

  // Seen from loopback, with 127.0.0.1 among this system's addresses: no NAT.
  let l = start(['127.0.0.1'])
  await until(() => l.status().nat !== undefined)
  t.equal(l.status().nat, 'none', 'no NAT: the hub saw one of our addresses')
  t.equal(l.status().reflexive, `127.0.0.1:${wgPort}`, 'at the WireGuard port itself')
  await until(async () => (await endpoint()) === `127.0.0.1:${wgPort}`)
  t.equal(await endpoint(), `127.0.0.1:${wgPort}`, "the hub made the reflexive address the system's endpoint")
  t.match(lines.join(''), /NAT discovery.*nat=none/, 'the agent logs the result')

  // The same answers, with 127.0.0.1 not ours: a NAT that maps every destination alike (easy).
  l = start(['10.9.9.9'])
  await until(() => l.status().nat !== undefined)
  t.equal(l.status().nat, 'easy', 'both reflect ports saw one address: easy')

  // A stranger's datagram (a token no connection has) gets nothing; one connection gets at most 20 per 10 s.
  const before = reflected.length
  const stranger = dgram.createSocket('udp4')
  await new Promise<void>((res) => stranger.bind(0, '127.0.0.1', () => res()))
  for (let i = 0; i < 30; i++) stranger.send(reflectDatagram(Buffer.alloc(16, i), i), hub.reflectPorts[0], '127.0.0.1')
  await new Promise((res) => setTimeout(res, 300))
  stranger.close()
  t.equal(reflected.length, before, 'datagrams with unknown tokens are never answered')
})
