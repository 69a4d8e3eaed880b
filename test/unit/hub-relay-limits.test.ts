/**
 * The batched UDP relay and relay-tcp against their review (issue 20, review 20b). Each failed on 6b94c45:
 * F1: the batched relay had no packets-per-second limit: "not ok - 300 of 300 minimum-size datagrams went
 * through at 40 packets/s" (relay.ts let 10 through). It now has relay.ts's per-pair and relay-wide ones.
 * F2: a relayed datagram over the message format's limit made the hub close the agent's connection: "not
 * ok - the hub reads what the agent sends without an error". The limit is now 9,216 bytes (WireGuard at
 * MTU 9,000) and the agent drops anything larger.
 * F3: epollWait's bounds check wrapped for a max of 2^62 and wrote past the array. max must be 1-256.
 * Real UDP on 127.0.0.1 only.
 */
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubLink } from '../../src/agent/hub-link.js'
import type { Profile } from '../../src/config/profile.js'
import { FastRelay, type FastRelayOptions } from '../../src/hub/fast-relay.js'
import { UdpRelay, parseRelayBound, parseRelayChallenge, relayBindDatagram, relayConfirmDatagram } from '../../src/hub/relay.js'
import { CipherState } from '../../src/hubproto/noise-ik.js'
import { MessageReader } from '../../src/hubproto/wire.js'
import { createLogger } from '../../src/log/logger.js'

const log = createLogger(0, 'logfmt', { out: { write: () => undefined } })

async function until(what: string, f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

class Agent {
  readonly sock = dgram.createSocket('udp4')
  readonly got: Buffer[] = []
  bound = 0
  static async make(): Promise<Agent> {
    const a = new Agent()
    await new Promise<void>((r) => a.sock.bind(0, '127.0.0.1', () => r()))
    a.sock.on('message', (m, from) => {
      const c = parseRelayChallenge(m)
      if (c) a.sock.send(relayConfirmDatagram(c.token, c.cookie), from.port, from.address)
      else if (parseRelayBound(m)) a.bound++
      else a.got.push(m)
    })
    return a
  }
  send(b: Buffer, port: number): void {
    this.sock.send(b, port, '127.0.0.1')
  }
}

const wg = (n: number) => {
  const b = Buffer.alloc(n, 0x55)
  b[0] = 4
  b[1] = b[2] = b[3] = 0
  return b
}

/**
 * F1: relay.ts limits each pair (and the relay) in packets/s as well as bytes/s (its doc comment:
 * "token buckets per pair (bytes/s and packets/s …)"; default 200,000/s a pair); the batched relay, which
 * claims the same limits, has only the byte buckets: a token holder sending minimum-size (32 B) transport
 * datagrams gets 125 MB/s / 32 B = 3.9 M packets/s through one pair (and 15.6 M/s hub-wide), about 20x
 * relay.ts's per-pair packet limit. Shown with the same options given to both relays.
 */
for (const [name, make] of [
  ['relay.ts (reference)', (o: FastRelayOptions) => new UdpRelay(o as ConstructorParameters<typeof UdpRelay>[0])],
  ['fast relay', (o: FastRelayOptions) => new FastRelay(o)],
] as const) {
  t.test(`F1 ${name}: the per-pair packets/s limit holds for minimum-size datagrams`, async (t) => {
    const relay = make({ log, host: '127.0.0.1', pairPacketsPerSec: 40 } as FastRelayOptions)
    const [a, b] = await Promise.all([Agent.make(), Agent.make()])
    t.teardown(async () => {
      a.sock.close()
      b.sock.close()
      await relay.close()
    })
    const g = await relay.allocate('A-B', 'A', 'B')
    a.send(relayBindDatagram(g.A.token), g.A.port)
    b.send(relayBindDatagram(g.B.token), g.B.port)
    await until('both bound', () => a.bound === 1 && b.bound === 1)
    // 300 x 32 B within a few ms: 9,600 bytes, far under any byte bucket; 40 packets/s with a 0.25 s
    // burst lets about 10 through (plus 40 a second while this runs).
    for (let i = 0; i < 300; i++) a.send(wg(32), g.A.port)
    await new Promise((r) => setTimeout(r, 400))
    t.ok(b.got.length < 60, `${b.got.length} of 300 minimum-size datagrams went through at 40 packets/s`)
  })
}

/**
 * F2: relay-tcp with a jumbo MTU (config allows Mtu up to 9000): a transport datagram of more than
 * MAX_RELAY_DATAGRAM (2048) bytes from the agent's own WireGuard port is queued by HubLink.sendDatagram
 * as is, and the hub's MessageReader rejects the whole message as malformed, which makes the hub
 * terminate the agent's connection (src/hub/hub.ts: any read error -> ws.terminate()). Any packet the
 * agent sends to a relay-tcp peer above ~2000 bytes (for instance a large ping reply the peer asks for)
 * thus cuts this system's hub connection, every time. Either the agent should not send what the hub
 * refuses, or the hub should drop the datagram, not the connection.
 */
t.test('F2 relay-tcp: a datagram above MAX_RELAY_DATAGRAM does not cost the agent its hub connection', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-review20b-${process.pid}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const profile = {
    privateKey: Buffer.alloc(32, 1),
    publicKey: Buffer.alloc(32, 2),
    localPort: 51820,
    exitNode: { providesRoutes: [] },
    hub: {
      urls: ['http://127.0.0.1:9'],
      publicKey: Buffer.alloc(32, 9),
      allowGateway: false,
      acceptDefaultRoute: false,
      advertiseEndpoints: [],
    },
  } as unknown as Profile
  const link = new HubLink({ profile, cacheFile: path.join(dir, 'hub-map.json'), log, apply: async () => true })
  // The link as it is once connected (the connection itself is not what is under test).
  const key = crypto.randomBytes(32)
  const frames: Buffer[] = []
  const l = link as unknown as { state: string; transportSend: CipherState; sendRaw: (f: Buffer) => void }
  l.state = 'up'
  l.transportSend = new CipherState(key)
  l.sendRaw = (f) => frames.push(f)
  link.sendDatagram('bbbbb', wg(100))
  link.sendDatagram('bbbbb', wg(9032)) // a full 9000-byte packet as WireGuard transport data
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  const hub = new MessageReader(new CipherState(key))
  let err = ''
  let delivered = 0
  for (const f of frames) {
    try {
      const m = hub.read(f) as { data?: Buffer[] }
      delivered += m?.data?.length ?? 0
    } catch (e) {
      err = (e as Error).message
    }
  }
  t.equal(err, '', 'the hub reads what the agent sends without an error (an error closes the connection)')
  t.ok(delivered >= 1, `the ordinary datagram queued with it still arrives (${delivered})`)
})

/**
 * F3 (native bounds): epollWait checks `max` against the fds array with CheckArray, whose
 * `(uint64_t)entries * 4` wraps for entries of 2^62 (a JS number I64 reads exactly): the check passes for
 * any array, then max is clamped to 256 and epoll_wait's results are written past the array's end (heap
 * memory after the view). Every other caller of CheckArray bounds its count to 0..kMaxBatch first; this
 * one does not. Shown safely: the Int32Array is a 1-entry view of a larger buffer, and two ready sockets
 * make epoll_wait return 2, so the unfixed code writes the second fd into the entry after the view.
 */
t.test('F3 epollWait: a max that wraps the bounds check is refused, nothing is written past the array', async (t) => {
  const { native } = await import('../../src/native/io.js')
  const ep = native.epollCreate()
  const fds = [
    native.udpOpen(0x7f000001, 0, false, 1 << 16, 1 << 16, 0, false),
    native.udpOpen(0x7f000001, 0, false, 1 << 16, 1 << 16, 0, false),
  ]
  const s = dgram.createSocket('udp4')
  t.teardown(() => {
    s.close()
    for (const fd of fds) native.close(fd)
    native.close(ep)
  })
  for (const fd of fds) native.epollCtl(ep, true, fd)
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  for (const fd of fds) await new Promise((r) => s.send(Buffer.alloc(8), native.udpLocalPort(fd), '127.0.0.1', r))
  await new Promise((r) => setTimeout(r, 50))
  const backing = new Int32Array(4).fill(-7)
  const view = backing.subarray(0, 1)
  let threw = false
  try {
    native.epollWait(ep, view, 2 ** 62, 0)
  } catch {
    threw = true
  }
  t.ok(threw, 'epollWait refuses a max of 2^62 for a 1-entry array')
  t.equal(backing[1], -7, 'the entry after the array is untouched')
})
