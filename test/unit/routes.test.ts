/** The route compiler and exit-node failover, with an injected clock (no root, no OS). */
import t from 'tap'
import { type Cidr, parseCidr, parseIpv4 } from '../../src/common/ipv4.js'
import { lookupRoute } from '../../src/dataplane/route-table.js'
import { LOCAL_PROVIDED, LOCAL_SELF } from '../../src/ipc/messages.js'
import {
  FAILOVER_HANDSHAKE_MS,
  type RoutePeer,
  chooseRoutes,
  compileTables,
  decideRoutes,
  failovers,
  sameChoice,
  wantedRoutes,
} from '../../src/compile/routes.js'

const cidr = (s: string) => parseCidr(s) as Cidr
const ip = (s: string) => parseIpv4(s) as number
const peer = (slot: number, identity: string, addr: string, routes: string[], extra: Partial<RoutePeer> = {}): RoutePeer => ({
  slot,
  identity,
  virtualAddress: ip(addr),
  availableRoutes: routes.map(cidr),
  unresponsive: false,
  ...extra,
})

const NOW = 1_000_000

t.test('failover choice: first healthy exit node in profile order', async (t) => {
  const cases: Array<{ name: string; peers: RoutePeer[]; order: string[]; want: Record<string, number> }> = [
    {
      name: 'both healthy: profile order wins, not slot order',
      peers: [peer(0, 'b', '100.64.0.2', ['0.0.0.0/0']), peer(1, 'a', '100.64.0.1', ['0.0.0.0/0'])],
      order: ['a', 'b'],
      want: { '0.0.0.0/0': 1 },
    },
    {
      name: 'first unresponsive: the standby carries',
      peers: [peer(0, 'a', '100.64.0.1', ['0.0.0.0/0'], { unresponsive: true }), peer(1, 'b', '100.64.0.2', ['0.0.0.0/0'])],
      order: ['a', 'b'],
      want: { '0.0.0.0/0': 1 },
    },
    {
      name: 'handshake failing for longer than the limit: the standby carries',
      peers: [
        peer(0, 'a', '100.64.0.1', ['0.0.0.0/0'], { handshakeStartedMs: NOW - FAILOVER_HANDSHAKE_MS - 1 }),
        peer(1, 'b', '100.64.0.2', ['0.0.0.0/0']),
      ],
      order: ['a', 'b'],
      want: { '0.0.0.0/0': 1 },
    },
    {
      name: 'handshake in flight for exactly the limit: still the first',
      peers: [
        peer(0, 'a', '100.64.0.1', ['0.0.0.0/0'], { handshakeStartedMs: NOW - FAILOVER_HANDSHAKE_MS }),
        peer(1, 'b', '100.64.0.2', ['0.0.0.0/0']),
      ],
      order: ['a', 'b'],
      want: { '0.0.0.0/0': 0 },
    },
    {
      name: 'none healthy: the first in order (fail closed, never leak)',
      peers: [
        peer(0, 'b', '100.64.0.2', ['0.0.0.0/0'], { unresponsive: true }),
        peer(1, 'a', '100.64.0.1', ['0.0.0.0/0'], { unresponsive: true }),
      ],
      order: ['a', 'b'],
      want: { '0.0.0.0/0': 1 },
    },
    {
      name: 'each route on its own',
      peers: [peer(0, 'a', '100.64.0.1', ['10.0.0.0/8', '0.0.0.0/0'], { unresponsive: true }), peer(1, 'b', '100.64.0.2', ['0.0.0.0/0'])],
      order: ['a', 'b'],
      want: { '10.0.0.0/8': 0, '0.0.0.0/0': 1 },
    },
  ]
  for (const c of cases) t.same(Object.fromEntries(chooseRoutes(c.peers, c.order, NOW)), c.want, c.name)
})

t.test('failover events and change detection', async (t) => {
  const a = new Map([['0.0.0.0/0', 1]])
  const b = new Map([['0.0.0.0/0', 2]])
  t.same(failovers(a, b), [{ route: '0.0.0.0/0', from: 1, to: 2 }])
  t.same(failovers(new Map(), b), [], 'a new route is not a failover')
  t.ok(sameChoice(a, new Map(a)))
  t.notOk(sameChoice(a, b))
  t.notOk(sameChoice(a, new Map([...a, ['10.0.0.0/8', 1]])))
})

t.test('compiled tables route, allow and localise as the profile says', async (t) => {
  const peers = [peer(3, 'exit', '100.64.0.9', ['0.0.0.0/0', '10.1.0.0/16']), peer(5, 'laptop', '100.64.0.7', [])]
  const active = chooseRoutes(peers, ['exit'], NOW)
  const tb = compileTables({ virtualAddress: ip('100.64.0.1'), providesRoutes: [cidr('192.168.1.0/24')] }, peers, active, 7)
  t.equal(tb.gen, 7)
  t.equal(tb.exitNode, true)
  const route = (a: string) => lookupRoute(tb.routeChild, tb.routeVal, ip(a))
  t.equal(route('100.64.0.7'), 5, 'a peer address goes to that peer')
  t.equal(route('10.1.2.3'), 3, 'an AvailableRoute goes to its exit node')
  t.equal(route('8.8.8.8'), 3, '0.0.0.0/0 goes to the exit node')
  const group = (a: string) => {
    const g = lookupRoute(tb.allowChild, tb.allowVal, ip(a))
    return g < 0 ? [] : [...tb.groupPeers.subarray(tb.groupStart[g], tb.groupStart[g + 1])]
  }
  t.same(group('100.64.0.7'), [5], 'the laptop may only use its own address')
  t.same(group('10.1.0.5'), [3], 'the exit node may use its routes')
  const local = (a: string) => lookupRoute(tb.localChild, tb.localVal, ip(a))
  t.equal(local('100.64.0.1'), LOCAL_SELF)
  t.equal(local('192.168.1.20'), LOCAL_PROVIDED)
  t.equal(local('192.168.2.20'), -1, 'not ours')
  t.equal(tb.selfAddr >>> 0, ip('100.64.0.1'), "the firewall's own-traffic address is this node's")
  const noExit = compileTables({ virtualAddress: ip('100.64.0.1'), providesRoutes: [] }, [], new Map(), 1)
  t.equal(noExit.exitNode, false)
  t.equal(lookupRoute(noExit.routeChild, noExit.routeVal, ip('8.8.8.8')), -1, 'no peers: no route')
})

t.test('a failover moves the route in the compiled tables', async (t) => {
  const healthy = [peer(0, 'a', '100.64.0.1', ['0.0.0.0/0']), peer(1, 'b', '100.64.0.2', ['0.0.0.0/0'])]
  const down = [peer(0, 'a', '100.64.0.1', ['0.0.0.0/0'], { unresponsive: true }), peer(1, 'b', '100.64.0.2', ['0.0.0.0/0'])]
  const prof = { virtualAddress: ip('100.64.0.3'), providesRoutes: [] }
  for (const [peers, want] of [
    [healthy, 0],
    [down, 1],
  ] as const) {
    const tb = compileTables(prof, peers, chooseRoutes(peers, ['a', 'b'], NOW), 1)
    t.equal(lookupRoute(tb.routeChild, tb.routeVal, ip('1.1.1.1')), want)
  }
})

t.test('OS-route decisions protect the local networks', async (t) => {
  const existing = [
    { dst: '192.168.1.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link' },
    { dst: '10.9.0.0/16', dev: 'eth0', gateway: '192.168.1.1' },
    { dst: '10.1.0.0/16', dev: 'enclave0' },
  ]
  const cases: Array<[string, boolean, boolean, RegExp | undefined]> = [
    ['0.0.0.0/0', false, true, /policy routing/],
    ['192.168.1.128/25', false, false, /directly connected subnet 192.168.1.0\/24/],
    ['192.168.1.0/24', false, false, /directly connected/],
    ['192.168.1.0/24', true, true, /ForceRoutes/],
    ['10.9.0.0/16', false, false, /conflicts with the existing route "10.9.0.0\/16 dev eth0 via 192.168.1.1"/],
    ['192.168.0.0/16', false, true, /192.168.1.0\/24 inside it stay local/],
    ['10.1.0.0/16', false, true, undefined],
  ]
  for (const [route, force, install, note] of cases) {
    const [d] = decideRoutes([cidr(route)], existing, 'enclave0', force)
    t.equal(d.install, install, `${route}${force ? ' forced' : ''}: install=${install}`)
    const text = d.install ? d.warning : d.reason
    if (note) t.match(text, note)
    else t.equal(text, undefined)
  }
  t.same(
    wantedRoutes([peer(0, 'a', '100.64.0.1', ['0.0.0.0/0', '10.0.0.0/8']), peer(1, 'b', '100.64.0.2', ['0.0.0.0/0'])]).map((c) => c.text),
    ['0.0.0.0/0', '10.0.0.0/8'],
  )
})
