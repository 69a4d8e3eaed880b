/**
 * IP fragments through the data plane (issue 18, findings 3 and 4). A later fragment (offset > 0) has no
 * ports: it is judged by the datagram it belongs to. It passes only when that datagram's first fragment
 * (same source, destination, protocol and IP id) passed toward, or from, the same peer:
 *  - into a node that enforces Policies, a peer's later fragments need their admitted first fragment,
 *    so fragments cannot reach a destination or port no policy grants (nor fill its reassembly memory);
 *  - out of an exit node, a LAN host's fragmented reply passes whole (before: every later fragment was
 *    read as if it had ports or an ICMP type, and dropped as unsolicited).
 * Whole pipelines (client and exit node) in one process, as policy-pipeline.test.ts.
 */
import t from 'tap'
import { A_VA, B_VA, HEADROOM, LAN, deliver, sessionPair } from '../../bench/testbed.js'
import { type Cidr, parseCidr } from '../../src/common/ipv4.js'
import { REASONS } from '../../src/ipc/layout.js'
import { PROTO_ICMP, PROTO_UDP } from '../../src/dataplane/conntrack.js'
import { compilePolicies, policyTablesFor } from '../../src/compile/policy.js'
import type { PolicyConfig } from '../../src/config/policies.js'

type Pair = ReturnType<typeof sessionPair>
const cidr = (s: string) => parseCidr(s) as Cidr
const PRINTER = LAN + 250
const OTHER_LAN_HOST = LAN + 251

function ip4(b: Uint8Array, o: number, a: number): void {
  for (let i = 0; i < 4; i++) b[o + i] = (a >>> (24 - 8 * i)) & 255
}

/**
 * One IPv4 fragment: `body` is its share of the datagram (a UDP or ICMP header first when offset8 is 0),
 * `offset8` its offset in 8-byte units, `more` the MF flag.
 */
function fragment(proto: number, src: number, dst: number, id: number, offset8: number, more: boolean, body: Uint8Array): Uint8Array {
  const size = 20 + body.length
  const b = new Uint8Array(size)
  b[0] = 0x45
  b[2] = size >> 8
  b[3] = size & 255
  b[4] = id >> 8
  b[5] = id & 255
  b[6] = (more ? 0x20 : 0) | ((offset8 >> 8) & 0x1f)
  b[7] = offset8 & 255
  b[8] = 64
  b[9] = proto
  ip4(b, 12, src)
  ip4(b, 16, dst)
  b.set(body, 20)
  return b
}

/** The first 1,000 bytes of a UDP datagram from sport to dport (the rest follows in later fragments). */
function udpHead(sport: number, dport: number, total: number): Uint8Array {
  const body = new Uint8Array(1000)
  body[0] = sport >> 8
  body[1] = sport & 255
  body[2] = dport >> 8
  body[3] = dport & 255
  body[4] = total >> 8
  body[5] = total & 255
  return body
}

/** A later fragment's payload whose first bytes read, wrongly, as ports 9100 -> 9100 (or ICMP type 0). */
function tail(n = 600): Uint8Array {
  const body = new Uint8Array(n)
  body[0] = 0x23
  body[1] = 0x8c
  body[2] = 0x23
  body[3] = 0x8c
  return body
}

function policy(index: number, gateway: string): PolicyConfig {
  return {
    index,
    description: `p${index}`,
    enabled: true,
    senderTags: ['laptops'],
    receiverTags: ['exit-node'],
    acls: [{ protocol: 'Udp', portLo: 9100, portHi: 9100 }],
    gatewayRoutes: [cidr(gateway)],
    appliesHere: true,
  }
}

/** The exit node enforces: the laptops may send UDP 9100 to the printer only. */
function enforce(p: Pair): void {
  const c = compilePolicies({
    selfTags: ['exit-node'],
    selfAddress: B_VA,
    providesRoutes: [cidr('172.26.0.0/20')],
    peers: [{ slot: 0, tags: ['laptops'] }],
    policies: [policy(0, '172.26.0.250/32')],
  })
  p.exit.tables = { ...p.exit.tables, ...policyTablesFor(c, 1, 1) }
  p.exit.setClock(Date.now())
}

/** Client -> exit node: whether the exit node delivered it. */
function send(p: Pair, pkt: Uint8Array): boolean {
  p.client.oSlab.set(pkt, HEADROOM)
  p.client.oLens[0] = pkt.length
  if (p.client.outbound(1) !== 1) throw new Error('the client did not seal it')
  deliver(p.client, p.exit, 1)
  return p.exit.inbound(1) === 1
}

/** LAN (through the exit node's TUN) -> client: whether the client delivered it. */
function reply(p: Pair, pkt: Uint8Array): boolean {
  p.exit.oSlab.set(pkt, HEADROOM)
  p.exit.oLens[0] = pkt.length
  if (p.exit.outbound(1) !== 1) return false
  deliver(p.exit, p.client, 1)
  return p.client.inbound(1) === 1
}

function reason(p: Pair, name: string): number {
  const i = REASONS.indexOf(name as (typeof REASONS)[number])
  return i < 0 ? 0 : p.e.v.reasons[i]
}

t.test("a peer's later fragments pass only with their admitted first fragment", async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  enforce(p)
  t.ok(
    send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x1001, 0, true, udpHead(40000, 9100, 1608))),
    'the first fragment of UDP 9100 to the printer',
  )
  t.ok(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x1001, 125, false, tail())), 'its later fragment follows it')

  t.notOk(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x2002, 125, false, tail())), 'a later fragment whose first fragment never came')
  t.notOk(
    send(p, fragment(PROTO_UDP, A_VA, OTHER_LAN_HOST, 0x1001, 125, false, tail())),
    'a later fragment to a LAN host no policy grants (same id as the admitted datagram)',
  )
  t.notOk(send(p, fragment(PROTO_UDP, A_VA, B_VA, 0x1001, 125, false, tail())), "a later fragment to the exit node's own address")
  t.notOk(send(p, fragment(PROTO_ICMP, A_VA, PRINTER, 0x1001, 125, false, tail())), 'a later fragment of another protocol with that id')

  t.notOk(
    send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x3003, 0, true, udpHead(40000, 9101, 1608))),
    'the first fragment of UDP 9101 is denied',
  )
  t.notOk(send(p, fragment(PROTO_UDP, A_VA, PRINTER, 0x3003, 125, false, tail())), '...and so is its later fragment')
  t.equal(reason(p, 'fragment_orphan'), 5, 'each later fragment without its first is counted as fragment_orphan')
})

t.test('out of an exit node, a LAN reply passes whole; later fragments nobody asked for do not', async (t) => {
  for (const mode of ['without Policies', 'with Policies'] as const) {
    const p = sessionPair(4)
    p.client.setClock(Date.now())
    if (mode === 'with Policies') enforce(p)
    const ask = fragment(PROTO_UDP, A_VA, PRINTER, 0x0101, 0, false, udpHead(40000, 9100, 1000))
    t.ok(send(p, ask), `${mode}: the client's UDP datagram to the printer`)
    const head = udpHead(9100, 40000, 1608)
    t.ok(reply(p, fragment(PROTO_UDP, PRINTER, A_VA, 0x7777, 0, true, head)), `${mode}: the first fragment of the printer's reply`)
    t.ok(reply(p, fragment(PROTO_UDP, PRINTER, A_VA, 0x7777, 125, false, tail())), `${mode}: its later fragment`)
    const before = reason(p, 'unsolicited')
    t.notOk(
      reply(p, fragment(PROTO_UDP, PRINTER, A_VA, 0x7778, 125, false, tail())),
      `${mode}: a later fragment of a datagram never started`,
    )
    t.notOk(
      reply(p, fragment(PROTO_UDP, OTHER_LAN_HOST, A_VA, 0x7777, 125, false, tail())),
      `${mode}: another LAN host's later fragment with the reply's id`,
    )
    t.equal(reason(p, 'unsolicited') - before, 2, `${mode}: both counted as unsolicited`)
  }
})

t.test('a ping larger than the MTU: the echo reply fragments all pass', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  const echo = (src: number, dst: number, type: number, id: number, more: boolean) => {
    const body = new Uint8Array(1000)
    body[0] = type
    body[4] = 0x12
    body[5] = 0x34
    return fragment(PROTO_ICMP, src, dst, id, 0, more, body)
  }
  t.ok(send(p, echo(A_VA, PRINTER, 8, 0x0a0a, true)), "the client's echo request (first fragment)")
  t.ok(send(p, fragment(PROTO_ICMP, A_VA, PRINTER, 0x0a0a, 125, false, tail(900))), '...and its later fragment')
  t.ok(reply(p, echo(PRINTER, A_VA, 0, 0x5151, true)), 'the echo reply (first fragment)')
  t.ok(reply(p, fragment(PROTO_ICMP, PRINTER, A_VA, 0x5151, 125, true, new Uint8Array(1000))), 'its second fragment')
  t.ok(reply(p, fragment(PROTO_ICMP, PRINTER, A_VA, 0x5151, 250, false, new Uint8Array(40))), 'its last fragment')
})
