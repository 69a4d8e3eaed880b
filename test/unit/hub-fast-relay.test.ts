/**
 * The batched relay (src/hub/fast-relay.ts, workers/relay-pump.ts) keeps the single-datagram relay's
 * promises (src/hub/relay.ts, test/unit/hub-relay.test.ts): a side is bound only after echoing its cookie,
 * only WireGuard-shaped datagrams from the bound sources are forwarded, strangers and wrong tokens get
 * nothing through, and a released pair's ports are closed. Real UDP on 127.0.0.1.
 */
import dgram from 'node:dgram'
import t from 'tap'
import { FastRelay } from '../../src/hub/fast-relay.js'
import { parseRelayBound, parseRelayChallenge, relayBindDatagram, relayConfirmDatagram } from '../../src/hub/relay.js'
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
  challenges = 0
  answers = true
  static async make(): Promise<Agent> {
    const a = new Agent()
    await new Promise<void>((r) => a.sock.bind(0, '127.0.0.1', () => r()))
    a.sock.on('message', (m, from) => {
      const c = parseRelayChallenge(m)
      if (c) {
        a.challenges++
        if (a.answers) a.sock.send(relayConfirmDatagram(c.token, c.cookie), from.port, from.address)
      } else if (parseRelayBound(m)) a.bound++
      else a.got.push(m)
    })
    return a
  }
  send(b: Buffer, port: number): void {
    this.sock.send(b, port, '127.0.0.1')
  }
  close(): void {
    this.sock.close()
  }
}

const wg = (n: number, fill = 0) => {
  const b = Buffer.alloc(n, fill)
  b[0] = 4
  b[1] = b[2] = b[3] = 0
  return b
}

t.test('bound by token and cookie; forwards WireGuard datagrams both ways; nothing else', async (t) => {
  const relay = new FastRelay({ log, host: '127.0.0.1' })
  const [a, b, mallory] = await Promise.all([Agent.make(), Agent.make(), Agent.make()])
  t.teardown(async () => {
    for (const x of [a, b, mallory]) x.close()
    await relay.close()
  })
  const g = await relay.allocate('A-B', 'A', 'B')
  t.same(await relay.allocate('A-B', 'B', 'A'), g, 'allocating again gives the same pair')
  a.send(wg(100), g.A.port)
  mallory.send(relayBindDatagram('00'.repeat(16)), g.A.port)
  mallory.answers = false
  mallory.send(relayBindDatagram(g.A.token), g.A.port) // a token holder that never echoes its cookie
  await until('mallory challenged', () => mallory.challenges === 1)
  a.send(relayBindDatagram(g.A.token), g.A.port)
  b.send(relayBindDatagram(g.B.token), g.B.port)
  await until('both bound', () => a.bound === 1 && b.bound === 1)
  t.equal(mallory.bound, 0, 'a source that did not echo its cookie is not bound')
  // In rounds of 50 (a plain socket's receive buffer holds about 150 of them).
  for (let r = 0; r < 4; r++) {
    for (let i = 0; i < 50; i++) a.send(wg(1400, (r * 50 + i) & 255), g.A.port)
    await until(`round ${r}`, () => b.got.length === 50 * (r + 1))
  }
  for (let i = 0; i < 50; i++) b.send(wg(200, 7), g.B.port)
  await until('forwarded back', () => a.got.length === 50)
  t.equal(b.got[17][5], 17, 'datagrams arrive unchanged (and in order here)')
  mallory.send(wg(1400), g.A.port)
  a.send(Buffer.from('not wireguard at all, not at all'), g.A.port)
  const bad = Buffer.alloc(100)
  bad[0] = 1 // an initiation of the wrong size
  a.send(bad, g.A.port)
  a.send(wg(100), g.A.port) // a marker after them
  await until('the marker', () => b.got.length === 201)
  t.equal(b.got.length, 201, 'a stranger, a non-WireGuard datagram and a misshaped initiation got nothing through')
  t.equal(mallory.got.length, 0, 'nothing reached mallory')
  await until('stats', () => relay.stats().packets >= 251, 3000).catch(() => undefined)
  t.ok(relay.stats().packets >= 251, `the worker reports ${relay.stats().packets} datagrams relayed`)
  t.ok(relay.release('A-B'), 'released')
  await new Promise((r) => setTimeout(r, 100))
  a.send(wg(100), g.A.port)
  await new Promise((r) => setTimeout(r, 200))
  t.equal(b.got.length, 201, 'after the release nothing is forwarded')
})
