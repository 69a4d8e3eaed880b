/**
 * The hub's socket layer against unauthenticated and misbehaving clients (review 19, F3, F6, F9, F10):
 * the real HubServer on loopback, raw TCP and hand-made agents (a real Noise_IK handshake with any hello).
 * Every packet stays on 127.0.0.0/8.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import net from 'node:net'
import t from 'tap'
import WebSocket from 'ws'
import { identityFromPublicKey } from '../../src/config/identity.js'
import { decodeKey } from '../../src/config/keys.js'
import { HubAdmin } from '../../src/hub/admin.js'
import { HandshakeLimiter, HubServer, initHub, sourceKey } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { initiate, type Transport } from '../../src/hubproto/noise-ik.js'
import { HUB_PATH, T_MSG1, T_MSG2, T_TRANSPORT, helloTimestamp, sealMessage } from '../../src/hubproto/wire.js'
import { createLogger } from '../../src/log/logger.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-preauth-${process.pid}-`))
const hubLog: string[] = []
const log = createLogger(4, 'logfmt', { out: { write: (l: string) => void hubLog.push(l) } })
let hub: HubServer
let store: HubStore
let admin: HubAdmin
let hubKey: string

t.before(async () => {
  hubKey = (await initHub(dir, '127.0.0.1:0')).publicKey
  hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: 'off', log, reflectPorts: [] })
  await hub.start()
  store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  admin = new HubAdmin(store, 'preauth-test')
})
t.teardown(async () => {
  await hub.stop()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const UPGRADE = `GET ${HUB_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`

/** A hand-made agent: any hello, a real handshake; the first payload, the transport, and how it closed. */
async function rawAgent(hello: Record<string, unknown>, kp = generateKeyPair(), localAddress?: string) {
  const full = {
    t: 'hello',
    v: 1,
    ts: helloTimestamp(Date.now()),
    hostname: 'raw',
    listenPort: 51820,
    allowGateway: false,
    acceptDefaultRoute: false,
    advertise: [],
    ...hello,
  }
  const hs = initiate(kp, decodeKey(hubKey) as Buffer, Buffer.from(JSON.stringify(full)))
  const ws = new WebSocket(`ws://127.0.0.1:${hub.port}${HUB_PATH}`, { localAddress, maxPayload: 64 * 1024 * 1024 })
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
  )
  const first = await new Promise<{ payload: Record<string, unknown>; transport: Transport }>((resolve, reject) => {
    let done = false
    ws.on('open', () => ws.send(Buffer.concat([Buffer.of(T_MSG1), hs.message1])))
    ws.on('error', (e) => reject(e))
    ws.on('close', (code: number) => reject(new Error(`closed ${code} before the handshake answer`)))
    ws.on('message', (data: Buffer) => {
      if (done) return
      done = true
      if (data[0] !== T_MSG2) return reject(new Error('no msg2'))
      const got = hs.readMessage2(data.subarray(1))
      if (!got) return reject(new Error('msg2 failed'))
      resolve({ payload: JSON.parse(Buffer.from(got.payload).toString('utf8')), transport: got.transport })
    })
  })
  const send = (m: unknown) => {
    for (const f of sealMessage(first.transport.send, m)) ws.send(f)
  }
  return { ...first, ws, kp, send, closed }
}

async function pendingAgent(t: { equal: (a: unknown, b: unknown, m: string) => unknown }) {
  const key = await admin.createKey(`preauth ${Math.random()}`, { uses: 1 })
  const c = await rawAgent({ enrol: { key: key.key } })
  t.equal((c.payload as { state?: string }).state, 'pending', 'a pending system is connected')
  return c
}

const removeAgent = async (kp: { publicKey: Buffer }) => admin.setState('remove', [identityFromPublicKey(kp.publicKey)])

t.test('F3: before the handshake the hub takes no more than a small message (ws maxPayload), then closes', async (t) => {
  const sock = net.connect(hub.port, '127.0.0.1')
  sock.on('error', () => undefined)
  await new Promise<void>((r) => sock.once('connect', () => r()))
  sock.write(UPGRADE)
  await new Promise<void>((r) => sock.once('data', () => r()))
  let closed = false
  sock.on('close', () => {
    closed = true
  })
  // One binary frame announcing 15 MiB, masked as a client must.
  const head = Buffer.alloc(14)
  head[0] = 0x82
  head[1] = 0x80 | 127
  head.writeBigUInt64BE(BigInt(15 * 1024 * 1024), 2)
  sock.write(head)
  const chunk = Buffer.alloc(1024 * 1024, 0x41)
  let sent = 0
  for (let i = 0; i < 12 && !closed; i++) {
    await new Promise<void>((r) => sock.write(chunk, () => r()))
    sent += chunk.length
    await sleep(20)
  }
  await sleep(200)
  t.comment(`sent ${sent >> 20} MiB of one pre-handshake frame announcing 15 MiB; closed by the hub: ${closed}`)
  t.ok(closed, 'the hub closed the connection instead of taking megabytes of an unauthenticated frame')
  t.ok(sent <= 2 * 1024 * 1024, `it closed at the frame header, not after buffering (${sent >> 20} MiB written)`)
  sock.destroy()
})

t.test('F3: the largest hello the schema admits (1,024 routes, 16 endpoints) still connects', async (t) => {
  const key = await admin.createKey('preauth big hello', { uses: 1 })
  const advertise = Array.from({ length: 1024 }, (_, i) => `203.113.${100 + (i >> 5)}.${100 + (i & 31)}/32`)
  const endpoints = Array.from({ length: 16 }, (_, i) => `198.51.100.${i + 101}:${51820 + i}`)
  const hello = { enrol: { key: key.key }, hostname: 'h'.repeat(253), advertise, endpoints, resume: { hash: 'a'.repeat(64) } }
  t.comment(`hello payload ${JSON.stringify(hello).length} bytes`)
  const c = await rawAgent(hello).catch((e: Error) => e)
  t.notOk(c instanceof Error, `the hub answers a schema-maximal hello (${c instanceof Error ? c.message : 'answered'})`)
  if (!(c instanceof Error)) {
    c.ws.terminate()
    await removeAgent(c.kp)
  }
})

t.test('F10: after the handshake, a message far larger than any agent sends closes the connection (1009, logged)', async (t) => {
  const c = await pendingAgent(t)
  const mark = hubLog.length
  c.send({ t: 'ack', rev: 1, pad: 'x'.repeat(15 * 1024 * 1024) })
  const how = await Promise.race([c.closed, sleep(3000).then(() => null)])
  t.comment(`a 15 MiB ack from a pending system: ${how ? `closed ${how.code} ${how.reason}` : 'still open after 3 s'}`)
  t.equal(how?.code, 1009, 'closed with 1009 (message too big)')
  t.ok(
    hubLog.slice(mark).some((l) => /too large/.test(l)),
    'the hub logs why it closed the connection',
  )
  c.ws.terminate()
  await removeAgent(c.kp)
})

t.test('F10: a message reassembled from many small transport frames is capped too', async (t) => {
  const c = await pendingAgent(t)
  // Frames of 16 KiB each flagged MORE (the agent never sends a message in parts): 1 MiB in all.
  const part = Buffer.alloc(16 * 1024, 0x20)
  for (let i = 0; i < 64 && c.ws.readyState === WebSocket.OPEN; i++) {
    const plain = Buffer.concat([Buffer.of(0x01), part])
    c.ws.send(Buffer.concat([Buffer.of(T_TRANSPORT), c.transport.send.encrypt(plain)]))
  }
  const how = await Promise.race([c.closed, sleep(3000).then(() => null)])
  t.comment(`1 MiB in 64 continued frames: ${how ? `closed ${how.code} ${how.reason}` : 'still open after 3 s'}`)
  t.equal(how?.code, 1009, 'closed with 1009 (message too big)')
  c.ws.terminate()
  await removeAgent(c.kp)
})

t.test('F6: slow pre-auth HTTP connections are closed within the 10 s promised, and few are open per source', async (t) => {
  const socks: net.Socket[] = []
  // The sockets the hub kept are answered 408 when their time is up; those it refused at once get nothing.
  const answered = new Set<net.Socket>()
  for (let i = 0; i < 60; i++) {
    const s = net.connect(hub.port, '127.0.0.1')
    s.on('error', () => undefined)
    s.on('data', (d) => d.toString().startsWith('HTTP/1.1 408') && answered.add(s))
    s.write(`GET ${HUB_PATH} HTTP/1.1\r\nHost: x\r\n`)
    socks.push(s)
  }
  // And one that sends nothing at all.
  const silent = net.connect(hub.port, '127.0.0.1')
  silent.on('error', () => undefined)
  silent.on('data', (d) => d.toString().startsWith('HTTP/1.1 408') && answered.add(silent))
  socks.push(silent)
  // Slowloris: one header byte every 2 s, never finishing the request.
  const drip = setInterval(() => {
    for (const s of socks) if (!s.destroyed && s !== silent) s.write('X')
  }, 2000)
  await sleep(12_000)
  clearInterval(drip)
  const open = socks.filter((s) => !s.destroyed).length
  const kept = socks.filter((s) => !s.destroyed || answered.has(s)).length
  t.comment(`61 unfinished requests from one source: ${open} still open after 12 s; ${kept} kept (open or timed out with 408)`)
  t.equal(open, 0, 'every unfinished pre-auth request was closed within 12 s')
  t.ok(kept <= 32, `at most 32 unauthenticated sockets per source are kept (${kept} were)`)
  for (const s of socks) s.destroy()
})

t.test('F9: IPv6 sources share a bucket per /64; IPv4-mapped addresses are their IPv4 source', async (t) => {
  const l = new HandshakeLimiter()
  let v6 = 0
  for (let i = 1; i <= 60; i++) if (l.allow(`2001:db8:1:2::${i.toString(16)}`)) v6++
  let v4 = 0
  for (let i = 0; i < 60; i++) if (l.allow(i % 2 ? '192.0.2.7' : '::ffff:192.0.2.7')) v4++
  t.comment(`60 handshakes from 60 addresses of one /64: ${v6} allowed; 60 from one IPv4 address, half IPv4-mapped: ${v4}`)
  t.equal(v6, 40, 'one /64 gets one source burst (40)')
  t.equal(v4, 40, 'an IPv4 address and its IPv4-mapped form are one source')
  t.equal(sourceKey('2001:0db8:0001:0002::1'), sourceKey('2001:db8:1:2:a:b:c:d'), 'written any way, one /64 is one key')
  t.equal(sourceKey('2001:db8:1:2::1%eth0'), sourceKey('2001:db8:1:2::'), 'a zone index does not matter')
  t.not(sourceKey('2001:db8:1:3::1'), sourceKey('2001:db8:1:2::1'), 'the next /64 is another source')
  t.not(sourceKey('::1'), sourceKey('::2:0:0:0:1'), '::1 and ::2:0:0:0:1 differ in their /64')
})

t.test('F9: a source kept refused is not forgotten when 100,001 other sources come (the oldest go first)', async (t) => {
  const t0 = Date.now()
  const l = new HandshakeLimiter(t0)
  let first = 0
  for (let i = 0; i < 60; i++) if (l.allow('192.0.2.9', t0)) first++
  // 100,001 other sources at the same instant; the refused source keeps trying among them.
  let during = 0
  for (let i = 0; i <= 100_000; i++) {
    l.allow(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, t0)
    if (i % 1000 === 0 && l.allow('192.0.2.9', t0)) during++
  }
  // 10 ms later its own bucket holds 0.2 tokens: still refused, unless it was forgotten.
  const after = l.allow('192.0.2.9', t0 + 10)
  t.comment(`a source: ${first} of 60 allowed, then ${during} while 100,001 others came, then allowed 10 ms later: ${after}`)
  t.equal(first, 40, 'its burst')
  t.equal(during, 0, 'refused while the others come')
  t.equal(after, false, 'still refused after the map filled: its bucket was kept')
})

t.test('F9: a handshake flood from 80 other sources does not lock a known system out', async (t) => {
  const key = await admin.createKey('preauth known', { autoApprove: true, uses: 1 })
  const kp = generateKeyPair()
  ;(await rawAgent({ enrol: { key: key.key } }, kp)).ws.terminate()
  let upgraded = 0
  let refused = 0
  let stop = false
  const flood = async (src: string) => {
    while (!stop) {
      await new Promise<void>((resolve) => {
        const s = net.connect({ port: hub.port, host: '127.0.0.1', localAddress: src })
        s.on('error', () => resolve())
        s.on('close', () => resolve())
        s.on('data', (d) => {
          if (d.toString().startsWith('HTTP/1.1 101')) upgraded++
          else refused++
          s.destroy()
        })
        s.write(UPGRADE)
      })
    }
  }
  const floods = Array.from({ length: 80 }, (_, i) => flood(`127.0.0.${i + 2}`))
  await sleep(500)
  let ok = 0
  const errors: string[] = []
  for (let i = 1; i <= 10; i++) {
    const c = await rawAgent({ ts: helloTimestamp(Date.now() + i) }, kp).catch((e: Error) => {
      errors.push(e.message)
      return null
    })
    if (c) {
      ok++
      c.ws.terminate()
    }
    await sleep(150)
  }
  stop = true
  await Promise.all(floods)
  t.comment(
    `flood: ${upgraded} upgrades accepted, ${refused} refused; the known system connected ${ok}/10 (${[...new Set(errors)].join('; ')})`,
  )
  t.equal(ok, 10, 'the known system connects every time from its own address')
  await removeAgent(kp)
})

t.test('F9: more unauthenticated sockets than the hub keeps in all: a known system still gets in', async (t) => {
  const key = await admin.createKey('preauth known 2', { autoApprove: true, uses: 1 })
  const kp = generateKeyPair()
  ;(await rawAgent({ enrol: { key: key.key } }, kp, '127.0.1.1')).ws.terminate()
  // 40 sources x 20 idle sockets (upgraded, no handshake): 800, more than the 512 kept in all.
  const socks: net.Socket[] = []
  for (let s = 0; s < 40; s++)
    for (let i = 0; i < 20; i++) {
      const c = net.connect({ port: hub.port, host: '127.0.0.1', localAddress: `127.0.2.${s + 1}` })
      c.on('error', () => undefined)
      c.write(UPGRADE)
      socks.push(c)
    }
  await sleep(1500)
  const open = socks.filter((s) => !s.destroyed).length
  const c = await rawAgent({ ts: helloTimestamp(Date.now() + 50) }, kp, '127.0.1.1').catch((e: Error) => e)
  t.comment(
    `800 idle unauthenticated sockets from 40 sources: ${open} kept open; known system: ${c instanceof Error ? c.message : 'connected'}`,
  )
  t.ok(open <= 512, `the hub keeps at most 512 unauthenticated sockets (${open})`)
  t.notOk(c instanceof Error, 'a known system connects meanwhile')
  if (!(c instanceof Error)) c.ws.terminate()
  for (const s of socks) s.destroy()
  await removeAgent(kp)
})
