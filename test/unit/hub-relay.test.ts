/**
 * The hub's UDP relay (src/hub/relay.ts, issue 20): real UDP sockets on 127.0.0.1, fake agents are plain
 * dgram sockets. Binding by token, forwarding only WireGuard-shaped datagrams between the two bound
 * sources, re-binding, rate limits (counted with an injected clock, no timing), idle release and release.
 * "Nothing arrived" is judged by order, not by waiting: a datagram the relay dropped is followed by one it
 * forwards on the same path, and loopback keeps their order.
 */
import dgram from 'node:dgram'
import t, { type Test } from 'tap'
import {
  type RelayPairStats,
  UdpRelay,
  looksLikeWireGuard,
  parseRelayBound,
  parseRelayChallenge,
  relayBindDatagram,
  relayConfirmDatagram,
} from '../../src/hub/relay.js'
import { createLogger } from '../../src/log/logger.js'

const log = createLogger(4, 'logfmt', { out: { write: () => undefined } })

/** A WireGuard-shaped datagram: type 1..4, three zero bytes, `size` bytes, a marker byte at 4. */
function wg(type: number, size: number, mark = 0): Buffer {
  const b = Buffer.alloc(size, 0xab)
  b[0] = type
  b[1] = 0
  b[2] = 0
  b[3] = 0
  b[4] = mark
  return b
}

async function until(what: string, f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

class FakeAgent {
  readonly sock = dgram.createSocket('udp4')
  readonly got: Buffer[] = []
  readonly acks: string[] = []
  /** Challenges received (return routability); answered unless `answers` is false. */
  challenges = 0
  answers = true
  static async make(): Promise<FakeAgent> {
    const a = new FakeAgent()
    await new Promise<void>((r) => a.sock.bind(0, '127.0.0.1', () => r()))
    a.sock.on('message', (m, from) => {
      const ack = parseRelayBound(m)
      const challenge = parseRelayChallenge(m)
      if (ack) a.acks.push(ack)
      else if (challenge) {
        a.challenges++
        if (a.answers) a.sock.send(relayConfirmDatagram(challenge.token, challenge.cookie), from.port, from.address)
      } else a.got.push(m)
    })
    return a
  }
  get port(): number {
    return this.sock.address().port
  }
  send(b: Buffer, port: number): void {
    this.sock.send(b, port, '127.0.0.1')
  }
  async bind(port: number, token: string): Promise<void> {
    const n = this.acks.length
    this.send(relayBindDatagram(token), port)
    await until('the bound answer', () => this.acks.length > n)
    if (this.acks[n] !== token) throw new Error('the answer names another token')
  }
  close(): void {
    this.sock.close()
  }
}

interface Setup {
  relay: UdpRelay
  clock: { now: number }
  a: FakeAgent
  b: FakeAgent
  pa: number
  pb: number
  ta: string
  tb: string
}

async function setup(t: Test, opts: Partial<ConstructorParameters<typeof UdpRelay>[0]> = {}): Promise<Setup> {
  const clock = { now: 1000 }
  const relay = new UdpRelay({ log, host: '127.0.0.1', sweepMs: 0, now: () => clock.now, ...opts })
  const a = await FakeAgent.make()
  const b = await FakeAgent.make()
  t.teardown(async () => {
    await relay.close()
    a.close()
    b.close()
  })
  const g = await relay.allocate('A|B', 'A', 'B')
  return { relay, clock, a, b, pa: g.A.port, pb: g.B.port, ta: g.A.token, tb: g.B.token }
}

t.test('the WireGuard shape check', async (t) => {
  t.ok(looksLikeWireGuard(wg(1, 148)), 'initiation, 148')
  t.ok(looksLikeWireGuard(wg(2, 92)), 'response, 92')
  t.ok(looksLikeWireGuard(wg(3, 64)), 'cookie reply, 64')
  t.ok(looksLikeWireGuard(wg(4, 32)), 'keepalive, 32')
  t.ok(looksLikeWireGuard(wg(4, 1452)), 'data, 1452')
  t.notOk(looksLikeWireGuard(wg(1, 149)), 'initiation of the wrong size')
  t.notOk(looksLikeWireGuard(wg(2, 148)), 'response of the wrong size')
  t.notOk(looksLikeWireGuard(wg(4, 31)), 'data under 32')
  t.notOk(looksLikeWireGuard(wg(5, 64)), 'type 5')
  t.notOk(looksLikeWireGuard(wg(0, 64)), 'type 0')
  const x = wg(4, 64)
  x[2] = 1
  t.notOk(looksLikeWireGuard(x), 'a non-zero reserved byte')
})

t.test('allocation is idempotent, per pair, and two sides get distinct ports and tokens', async (t) => {
  const { relay, pa, pb, ta, tb } = await setup(t)
  t.not(pa, pb, 'two ports')
  t.not(ta, tb, 'two tokens')
  t.match(ta, /^[0-9a-f]{32}$/, 'a token is 16 bytes, hex')
  const again = await relay.allocate('A|B', 'A', 'B')
  t.same(again, { A: { port: pa, token: ta }, B: { port: pb, token: tb } }, 'the same allocation again')
  const swapped = await relay.allocate('A|B', 'B', 'A')
  t.same(swapped, again, 'the same with the sides named the other way')
  await t.rejects(relay.allocate('A|B', 'A', 'C'), /other systems/, 'a pair key used for other systems is refused')
  const [x, y] = await Promise.all([relay.allocate('A|C', 'A', 'C'), relay.allocate('A|C', 'A', 'C')])
  t.same(x, y, 'two concurrent calls get one allocation')
  t.equal(relay.stats().pairs, 2, 'two pairs')
  await t.rejects(relay.allocate('A|A', 'A', 'A'), /two different systems/, 'a system with itself is refused')
})

t.test('limits on allocation: per system and a port range', async (t) => {
  const relay = new UdpRelay({ log, host: '127.0.0.1', sweepMs: 0, maxPerSystem: 2 })
  t.teardown(() => relay.close())
  await relay.allocate('1', 'A', 'B')
  await relay.allocate('2', 'A', 'C')
  await t.rejects(relay.allocate('3', 'A', 'D'), /already has 2/, 'a third pair for A is refused')
  relay.release('1')
  await relay.allocate('3', 'A', 'D')
  t.pass('after a release, A may have another')

  // a range of 4 ports holds 2 pairs; a port taken by someone else is skipped
  const probe = dgram.createSocket('udp4')
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()))
  const base = probe.address().port
  probe.close()
  const squat = dgram.createSocket('udp4')
  await new Promise<void>((r) => squat.bind(base + 1, '127.0.0.1', () => r()))
  t.teardown(() => squat.close())
  const ranged = new UdpRelay({ log, host: '127.0.0.1', sweepMs: 0, ports: { first: base, last: base + 4 } })
  t.teardown(() => ranged.close())
  const g1 = await ranged.allocate('1', 'A', 'B')
  const g2 = await ranged.allocate('2', 'C', 'D')
  const used = [g1.A.port, g1.B.port, g2.C.port, g2.D.port]
  t.ok(
    used.every((p) => p >= base && p <= base + 4 && p !== base + 1),
    `ports within the range, the squatted one skipped (${used.join(', ')})`,
  )
  await t.rejects(ranged.allocate('3', 'E', 'F'), /no free port/, 'the range is full')
  ranged.release('1')
  const g3 = await ranged.allocate('3', 'E', 'F')
  t.ok([g1.A.port, g1.B.port].includes(g3.E.port), 'released ports are used again')
})

t.test('forwarding both ways after both sides bind; nothing before', async (t) => {
  const { relay, a, b, pa, pb, ta, tb } = await setup(t)
  const bound: string[] = []
  relay.on('bound', (_k: string, id: string, addr: string, rebind: boolean) => bound.push(`${id} ${addr} ${rebind}`))
  // before any bind: a's datagrams are from a stranger
  a.send(wg(4, 64, 1), pa)
  await until('the stranger drop', () => relay.stats().dropped.stranger === 1)
  await a.bind(pa, ta)
  t.same(bound, [`A 127.0.0.1:${a.port} false`], 'A bound to its source')
  // a bound, b not: dropped as peerUnbound
  a.send(wg(4, 64, 2), pa)
  a.send(wg(1, 148, 3), pa)
  await until('the peer-unbound drops', () => relay.stats().dropped.peerUnbound === 2)
  await b.bind(pb, tb)
  a.send(wg(4, 1452, 4), pa)
  a.send(wg(1, 148, 5), pa)
  b.send(wg(2, 92, 6), pb)
  b.send(wg(3, 64, 7), pb)
  b.send(wg(4, 32, 8), pb)
  await until('two at b', () => b.got.length === 2)
  await until('three at a', () => a.got.length === 3)
  t.same(
    b.got.map((m) => [m[0], m[4], m.length]),
    [
      [4, 4, 1452],
      [1, 5, 148],
    ],
    'b got exactly what a sent after both bound, in order (none of the earlier ones)',
  )
  t.same(
    a.got.map((m) => [m[0], m[4], m.length]),
    [
      [2, 6, 92],
      [3, 7, 64],
      [4, 8, 32],
    ],
    'a got what b sent',
  )
  t.ok(b.got[0].equals(wg(4, 1452, 4)), 'the bytes are unchanged')
  const s = relay.pairStats('A|B') as RelayPairStats
  t.same(s.packets, [2, 3], 'packets per direction')
  t.same(s.bytes, [1452 + 148, 92 + 64 + 32], 'bytes per direction')
  t.same(s.bound, [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], 'bound sources')
  t.equal(s.dropped.peerUnbound, 2, 'two dropped for an unbound peer')
  const all = relay.stats()
  t.equal(all.packets, 5, 'relay-wide packets')
  t.equal(all.bytes, 1452 + 148 + 92 + 64 + 32, 'relay-wide bytes')
})

t.test('a third source or a wrong token can neither bind nor inject', async (t) => {
  const { relay, a, b, pa, pb, ta, tb } = await setup(t)
  const mallory = await FakeAgent.make()
  t.teardown(() => mallory.close())
  await a.bind(pa, ta)
  await b.bind(pb, tb)
  // wrong tokens: random, the other side's, one bit off
  const off = Buffer.from(ta, 'hex')
  off[15] ^= 1
  for (const tok of ['00'.repeat(16), tb, off.toString('hex')]) mallory.send(relayBindDatagram(tok), pa)
  a.send(relayBindDatagram(tb), pa) // even the bound source, with b's token on a's port
  await until('four bad tokens', () => relay.stats().dropped.badToken === 4)
  t.same(mallory.acks, [], 'no answer to a wrong token')
  // injection from a stranger, on both ports
  mallory.send(wg(4, 64, 9), pa)
  mallory.send(wg(4, 64, 9), pb)
  mallory.send(wg(1, 148, 9), pa)
  await until('three stranger drops', () => relay.stats().dropped.stranger === 3)
  // the real ones still pass, and nothing of mallory's came before them
  a.send(wg(4, 64, 1), pa)
  b.send(wg(4, 64, 2), pb)
  await until('both delivered', () => a.got.length === 1 && b.got.length === 1)
  t.same([b.got[0][4], a.got[0][4]], [1, 2], 'only the bound sides got through')
  t.same(mallory.got, [], 'mallory received nothing')
  t.same(relay.pairStats('A|B')?.bound, [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], 'the bindings did not move')
})

t.test("a bind from one of the relay's own ports is refused (no loops between pairs)", async (t) => {
  const { relay, a, b, pa, pb, ta, tb } = await setup(t)
  await b.bind(pb, tb)
  // 127.0.0.2 with the number of b's relay port: a source the relay takes for one of its own ports
  const loop = dgram.createSocket('udp4')
  await new Promise<void>((r) => loop.bind(pb, '127.0.0.2', () => r()))
  t.teardown(() => loop.close())
  loop.send(relayBindDatagram(ta), pa, '127.0.0.1')
  await until('the loop drop', () => relay.stats().dropped.loop === 1)
  t.same(relay.pairStats('A|B')?.bound, [null, `127.0.0.1:${b.port}`], 'A is not bound')
  await a.bind(pa, ta)
  t.same(relay.pairStats('A|B')?.bound[0], `127.0.0.1:${a.port}`, 'its own agent binds it')
})

t.test('non-WireGuard datagrams from a bound source are dropped', async (t) => {
  const { relay, a, b, pa, pb, ta, tb } = await setup(t)
  await a.bind(pa, ta)
  await b.bind(pb, tb)
  const bad = [wg(1, 147), wg(2, 148), wg(3, 65), wg(4, 31), wg(5, 64), wg(0, 64), Buffer.from('hello, relay'), Buffer.alloc(0)]
  const reserved = wg(4, 64)
  reserved[3] = 7
  bad.push(reserved)
  const probe = wg(4, 96) // the probe type 0xE1 goes direct, never through a relay
  probe[0] = 0xe1
  bad.push(probe)
  const ack = Buffer.from(relayBindDatagram(ta))
  ack[3] = 0x62 // a `bound` answer sent to the relay
  bad.push(ack)
  for (const m of bad) a.send(m, pa)
  await until('all counted', () => relay.stats().dropped.notWireGuard === bad.length)
  a.send(wg(4, 48, 1), pa)
  await until('the good one', () => b.got.length === 1)
  t.equal(b.got[0].length, 48, 'only the WireGuard-shaped datagram arrived')
  t.equal(relay.stats().packets, 1, 'one forwarded')
})

t.test('re-binding to a new source port: the new one works, the old one is refused', async (t) => {
  const { relay, a, b, pa, pb, ta, tb } = await setup(t)
  await a.bind(pa, ta)
  await b.bind(pb, tb)
  a.send(wg(4, 64, 1), pa)
  await until('first', () => b.got.length === 1)
  const rebinds: boolean[] = []
  relay.on('bound', (_k: string, _id: string, _addr: string, rebind: boolean) => rebinds.push(rebind))
  // A's NAT gives it a new port: a new socket with the same token
  const a2 = await FakeAgent.make()
  t.teardown(() => a2.close())
  await a2.bind(pa, ta)
  t.same(rebinds, [true], 'reported as a re-bind')
  t.same(relay.pairStats('A|B')?.bound[0], `127.0.0.1:${a2.port}`, 'A is bound to the new source')
  a.send(wg(4, 64, 2), pa) // the old source
  await until('the old source refused', () => relay.stats().dropped.stranger === 1)
  a2.send(wg(4, 64, 3), pa)
  b.send(wg(4, 64, 4), pb)
  await until('both ways on the new source', () => b.got.length === 2 && a2.got.length === 1)
  t.same(
    b.got.map((m) => m[4]),
    [1, 3],
    'b got the new source, not the old one',
  )
  t.equal(a2.got[0][4], 4, "b's reply goes to the new source")
  t.same(a.got, [], 'and nothing to the old one')
  // the same source binding again is a refresh: answered, not a move
  await a2.bind(pa, ta)
  t.same(rebinds, [true], 'a refresh is no re-bind')
  t.same(relay.pairStats('A|B')?.binds, [3, 1], 'binds counted per side')
})

t.test('the per-pair rate limit drops beyond the bucket, both directions together', async (t) => {
  // 10 packets/s with a 1 s bucket: 10 pass while the clock stands still
  const { relay, clock, a, b, pa, pb, ta, tb } = await setup(t, { pairPacketsPerSec: 10, burstSeconds: 1 })
  await a.bind(pa, ta)
  await b.bind(pb, tb)
  for (let i = 0; i < 8; i++) a.send(wg(4, 64, i), pa)
  await until('eight processed', () => relay.stats().packets === 8)
  for (let i = 0; i < 6; i++) b.send(wg(4, 64, 100 + i), pb)
  await until('six more processed', () => relay.stats().packets + relay.stats().dropped.pairLimit === 14)
  t.equal(relay.stats().packets, 10, 'ten forwarded: the bucket')
  t.equal(relay.pairStats('A|B')?.dropped.pairLimit, 4, 'four dropped over the pair limit')
  t.same(relay.pairStats('A|B')?.packets, [8, 2], 'the reverse direction shares the bucket')
  // half a second refills five
  clock.now += 500
  for (let i = 0; i < 7; i++) a.send(wg(4, 64, 50 + i), pa)
  await until('seven processed', () => relay.stats().packets + relay.stats().dropped.pairLimit === 21)
  t.equal(relay.stats().packets, 15, 'five more after 0.5 s')
  t.equal(relay.stats().dropped.pairLimit, 6, 'two more dropped')
  await until('all delivered', () => b.got.length === 13 && a.got.length === 2)
  t.same(
    b.got.map((m) => m[4]),
    [0, 1, 2, 3, 4, 5, 6, 7, 50, 51, 52, 53, 54],
    'the first of each burst went through',
  )
  // another pair has its own bucket
  const g = await relay.allocate('C|D', 'C', 'D')
  const c = await FakeAgent.make()
  const d = await FakeAgent.make()
  t.teardown(() => {
    c.close()
    d.close()
  })
  await c.bind(g.C.port, g.C.token)
  await d.bind(g.D.port, g.D.token)
  for (let i = 0; i < 3; i++) c.send(wg(4, 64, i), g.C.port)
  await until('three at d', () => d.got.length === 3)
  t.equal(relay.pairStats('C|D')?.dropped.pairLimit, 0, 'another pair is not limited by this one')
})

t.test('the byte limit and the relay-wide limit', async (t) => {
  // bytes: a 64 KiB bucket (the smallest) takes 45 datagrams of 1452 bytes
  const { relay, a, b, pa, pb, ta, tb } = await setup(t, { pairBytesPerSec: 1000 })
  await a.bind(pa, ta)
  await b.bind(pb, tb)
  for (let i = 0; i < 50; i++) a.send(wg(4, 1452, i), pa)
  await until('fifty processed', () => relay.stats().packets + relay.stats().dropped.pairLimit === 50)
  t.equal(relay.stats().packets, Math.floor(65536 / 1452), 'as many as fit in the byte bucket')
  await until('delivered', () => b.got.length === relay.stats().packets)

  const clock = { now: 0 }
  const hub = new UdpRelay({ log, host: '127.0.0.1', sweepMs: 0, now: () => clock.now, hubPacketsPerSec: 6, burstSeconds: 1 })
  t.teardown(() => hub.close())
  const agents = await Promise.all([0, 1, 2, 3].map(() => FakeAgent.make()))
  t.teardown(() => {
    for (const x of agents) x.close()
  })
  const g1 = await hub.allocate('1', 'A', 'B')
  const g2 = await hub.allocate('2', 'C', 'D')
  await agents[0].bind(g1.A.port, g1.A.token)
  await agents[1].bind(g1.B.port, g1.B.token)
  await agents[2].bind(g2.C.port, g2.C.token)
  await agents[3].bind(g2.D.port, g2.D.token)
  for (let i = 0; i < 4; i++) agents[0].send(wg(4, 64, i), g1.A.port)
  await until('four', () => hub.stats().packets === 4)
  for (let i = 0; i < 4; i++) agents[2].send(wg(4, 64, i), g2.C.port)
  await until('four more processed', () => hub.stats().packets + hub.stats().dropped.hubLimit === 8)
  t.equal(hub.stats().packets, 6, 'six in all: the relay-wide bucket')
  t.equal(hub.pairStats('2')?.dropped.hubLimit, 2, "the second pair's last two dropped over the relay-wide limit")
})

t.test('idle pairs are released; strangers do not keep them alive', async (t) => {
  const { relay, clock, a, b, pa, pb, ta, tb } = await setup(t, { idleMs: 60_000 })
  const released: string[] = []
  relay.on('released', (s: RelayPairStats, why: string) => released.push(`${s.pairKey} ${why} ${s.packets[0]}`))
  await a.bind(pa, ta)
  await b.bind(pb, tb)
  clock.now += 50_000
  a.send(wg(4, 64), pa)
  await until('forwarded', () => b.got.length === 1)
  clock.now += 50_000
  t.equal(relay.sweep(), 0, 'active 50 s ago: kept')
  const mallory = await FakeAgent.make()
  t.teardown(() => mallory.close())
  mallory.send(wg(4, 64), pa)
  mallory.send(relayBindDatagram('11'.repeat(16)), pa)
  await until('mallory dropped', () => relay.stats().dropped.stranger === 1 && relay.stats().dropped.badToken === 1)
  clock.now += 10_000
  t.equal(relay.sweep(), 1, '60 s after the last forwarded datagram: released')
  t.same(released, ['A|B idle 1'], 'the released event carries the final counters')
  t.equal(relay.stats().pairs, 0, 'no pairs left')
  t.equal(relay.pairStats('A|B'), undefined, 'the pair is gone')
})

t.test('the idle timer runs by itself', async (t) => {
  const clock = { now: 0 }
  const relay = new UdpRelay({ log, host: '127.0.0.1', idleMs: 1000, sweepMs: 10, now: () => clock.now })
  t.teardown(() => relay.close())
  await relay.allocate('1', 'A', 'B')
  clock.now = 1000
  await until('released by the timer', () => relay.stats().pairs === 0)
  t.pass('released')
})

t.test('release closes both ports', async (t) => {
  const { relay, pa, pb } = await setup(t)
  t.ok(relay.release('A|B'), 'released')
  t.notOk(relay.release('A|B'), 'a second release finds nothing')
  // both ports are free again: binding them succeeds
  for (const p of [pa, pb]) {
    const s = dgram.createSocket('udp4')
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.bind(p, '127.0.0.1', () => resolve())
    })
    s.close()
    t.pass(`port ${p} is free`)
  }
  const g = await relay.allocate('A|B', 'A', 'B')
  t.ok(g.A.token.length === 32, 'the pair key can be allocated again')
})
