import t from 'tap'
import { type PolicyConfig, type RawPolicy, checkPolicies, gatewayRanges } from '../../src/config/policies.js'
import { type Cidr, cidrContains, parseCidr, parseIpv4 } from '../../src/common/ipv4.js'
import {
  type CompiledPolicies,
  type PolicyPeer,
  compilePolicies,
  judgeFlow,
  policyModeLine,
  policyWarnings,
} from '../../src/compile/policy.js'
import {
  ALLOW_ALL,
  DENY_NOT_LOCAL,
  DENY_NO_POLICY,
  DENY_ROUTE_NOT_GRANTED,
  denyPolicy,
  denyReason,
  describeVerdict,
  evaluatePolicy,
} from '../../src/dataplane/policy.js'

const TCP = 6
const UDP = 17
const ICMP = 1
const SELF = '100.100.0.1'
const PRINTER = '172.26.0.250'
const NAS = '172.26.0.20'
const OTHER_LAN = '10.9.3.4'

const ip = (s: string) => parseIpv4(s) as number
const cidr = (s: string) => parseCidr(s) as Cidr

interface Setup {
  selfTags?: string[]
  provides?: string[]
  peers?: PolicyPeer[]
}

function configs(raw: RawPolicy[] | undefined, s: Setup = {}): PolicyConfig[] | undefined {
  const problems: { path: string; reason: string }[] = []
  const out = checkPolicies(raw, s.selfTags ?? ['exit-node'], (s.provides ?? ['172.26.0.0/20', '10.9.0.0/16']).map(cidr), problems)
  if (problems.length) throw new Error(problems.map((p) => `${p.path}: ${p.reason}`).join('\n'))
  return out
}

function compile(raw: RawPolicy[] | undefined, s: Setup = {}): CompiledPolicies {
  return compilePolicies({
    selfTags: s.selfTags ?? ['exit-node'],
    selfAddress: ip(SELF),
    providesRoutes: (s.provides ?? ['172.26.0.0/20', '10.9.0.0/16']).map(cidr),
    peers: s.peers ?? [
      { slot: 0, tags: ['laptops'] },
      { slot: 1, tags: ['guests'] },
      { slot: 2, tags: [] },
    ],
    policies: configs(raw, s),
  })
}

function ev(c: CompiledPolicies, peer: number, proto: number, dst: string, port = 0): number {
  const a = ip(dst)
  return evaluatePolicy(c.table, peer, proto, a >>> 16, a & 0xffff, port)
}

const pol = (p: Partial<RawPolicy>): RawPolicy => ({
  SenderTags: ['laptops'],
  ReceiverTags: ['exit-node'],
  Acls: [{ Protocol: 'Any' }],
  ...p,
})

t.test('compatibility mode: no Policies key allows everything, and says so', async (t) => {
  const c = compile(undefined)
  t.equal(c.mode, 'compat')
  t.equal(ev(c, 2, TCP, PRINTER, 22), ALLOW_ALL)
  t.equal(ev(c, 99, UDP, '8.8.8.8', 53), ALLOW_ALL)
  t.equal(policyModeLine(c), 'policy: none, all peers allowed')
  t.match(describeVerdict(c.labels, ALLOW_ALL), /policy: none, all peers allowed/)
})

t.test('an empty Policies list denies everything', async (t) => {
  const c = compile([])
  t.equal(c.mode, 'enforce')
  t.equal(denyReason(ev(c, 0, TCP, SELF, 22)), DENY_NO_POLICY)
  t.equal(denyReason(ev(c, 0, TCP, PRINTER, 9100)), DENY_ROUTE_NOT_GRANTED)
  t.equal(denyReason(ev(c, 0, TCP, '8.8.8.8', 53)), DENY_NOT_LOCAL)
})

t.test("the guide's scenario: laptops reach the exit node and the printer on ICMP and TCP 9100, not TCP 22", async (t) => {
  const c = compile([
    pol({ Description: 'laptops to exit node', Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '9100' }] }),
    pol({
      Description: 'laptops to printer',
      Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '9100' }],
      GatewayRoutes: ['172.26.0.0/20'],
      GatewayAllowedIpRanges: [{ IpRange: PRINTER }],
    }),
  ])
  t.equal(ev(c, 0, ICMP, SELF), 0, 'ping the exit node: policy 0')
  t.equal(ev(c, 0, TCP, SELF, 9100), 0)
  t.equal(ev(c, 0, ICMP, PRINTER), 1, 'ping the printer: policy 1')
  t.equal(ev(c, 0, TCP, PRINTER, 9100), 1)
  const ssh = ev(c, 0, TCP, PRINTER, 22)
  t.equal(denyReason(ssh), DENY_NO_POLICY, 'TCP 22 to the printer: denied')
  t.equal(denyPolicy(ssh), 1, 'the near miss is the printer policy (its Acls)')
  t.match(describeVerdict(c.labels, ssh), /Policies\[1\] "laptops to printer": protocol or port not in its Acls/)
  t.equal(denyPolicy(ev(c, 0, TCP, SELF, 22)), 0, 'TCP 22 to the exit node: near miss policy 0')
  t.equal(denyReason(ev(c, 0, UDP, PRINTER, 9100)), DENY_NO_POLICY, 'UDP 9100 is not TCP 9100')
  const nas = ev(c, 0, TCP, NAS, 9100)
  t.equal(denyReason(nas), DENY_ROUTE_NOT_GRANTED, 'another LAN host is not granted')
  t.equal(denyPolicy(nas), -1)
  t.match(describeVerdict(c.labels, nas), /no policy grants this peer the provided route/)
  t.equal(denyReason(ev(c, 0, TCP, OTHER_LAN, 9100)), DENY_ROUTE_NOT_GRANTED, 'another provided route is not granted')
  for (const peer of [1, 2, 7]) {
    t.equal(denyReason(ev(c, peer, ICMP, SELF)), DENY_NO_POLICY, `peer ${peer} without the tag: not the exit node`)
    t.equal(denyReason(ev(c, peer, ICMP, PRINTER)), DENY_ROUTE_NOT_GRANTED, `peer ${peer} without the tag: not the LAN`)
  }
  t.equal(denyReason(ev(c, 0, ICMP, '192.0.2.1')), DENY_NOT_LOCAL, 'not ours at all')
  t.match(describeVerdict(c.labels, 1), /allow by Policies\[1\] "laptops to printer"/)
  t.equal(c.policies[1].rule, 'laptops -> exit-node: Icmp, Tcp 9100; to 172.26.0.250/32')
})

t.test('port ranges are inclusive and per protocol', async (t) => {
  const c = compile([
    pol({
      Acls: [
        { Protocol: 'Tcp', Ports: '8000-8100' },
        { Protocol: 'Udp', Ports: '53' },
      ],
    }),
  ])
  t.equal(ev(c, 0, TCP, SELF, 8000), 0)
  t.equal(ev(c, 0, TCP, SELF, 8050), 0)
  t.equal(ev(c, 0, TCP, SELF, 8100), 0)
  t.ok(ev(c, 0, TCP, SELF, 7999) < 0)
  t.ok(ev(c, 0, TCP, SELF, 8101) < 0)
  t.equal(ev(c, 0, UDP, SELF, 53), 0)
  t.ok(ev(c, 0, UDP, SELF, 8050) < 0, 'the Tcp range does not open Udp')
  t.ok(ev(c, 0, TCP, SELF, 53) < 0, 'the Udp port does not open Tcp')
  t.ok(ev(c, 0, ICMP, SELF) < 0, 'no Icmp entry')
  const all = compile([pol({ Acls: [{ Protocol: 'Tcp' }] })])
  t.equal(ev(all, 0, TCP, SELF, 1), 0, 'Tcp without Ports: every port')
  t.equal(ev(all, 0, TCP, SELF, 65535), 0)
  t.ok(ev(all, 0, UDP, SELF, 1) < 0)
  const any = compile([pol({ Acls: [{ Protocol: 'Any' }] })])
  t.equal(ev(any, 0, 47, SELF), 0, 'Any covers other IP protocols (GRE)')
})

t.test('overlapping policies: the lowest allowing index wins, each covers its own ports', async (t) => {
  const c = compile([
    pol({ Description: 'web', Acls: [{ Protocol: 'Tcp', Ports: '80-443' }] }),
    pol({ Description: 'tls', SenderTags: ['laptops', 'guests'], Acls: [{ Protocol: 'Tcp', Ports: '443' }] }),
    pol({ Description: 'alt', Acls: [{ Protocol: 'Tcp', Ports: '400-9000' }] }),
  ])
  t.equal(ev(c, 0, TCP, SELF, 443), 0, 'laptop 443: both match, lowest index')
  t.equal(ev(c, 1, TCP, SELF, 443), 1, 'guest 443: only the tls policy')
  t.equal(ev(c, 0, TCP, SELF, 8080), 2, 'laptop 8080: third policy')
  t.ok(ev(c, 1, TCP, SELF, 80) < 0, 'guest 80: denied')
  t.equal(denyPolicy(ev(c, 1, TCP, SELF, 80)), 1, 'near miss: the only policy naming guests')
  t.same(c.policies[1].senders, [0, 1])
})

t.test('disabled policies and policies for other receivers are not enforced', async (t) => {
  const c = compile([
    pol({ Description: 'off', IsEnabled: false }),
    pol({ Description: 'for printers', ReceiverTags: ['printers'] }),
    pol({ Description: 'on', Acls: [{ Protocol: 'Udp', Ports: '53' }] }),
  ])
  t.ok(ev(c, 0, TCP, SELF, 22) < 0, 'the disabled Any policy allows nothing')
  t.equal(denyPolicy(ev(c, 0, TCP, SELF, 22)), 2, 'and is not even a near miss')
  t.equal(ev(c, 0, UDP, SELF, 53), 2)
  t.same(
    c.policies.map((p) => [p.enabled, p.active]),
    [
      [false, false],
      [true, false],
      [true, true],
    ],
  )
  t.match(c.policies[0].rule, /\(disabled\)$/)
  t.equal(policyModeLine(c), 'policy: 3 policies, 1 enforced here; everything else from peers is dropped')
})

t.test('mesh: the same tag on both sides lets every member start flows to every other', async (t) => {
  const peers = [
    { slot: 0, tags: ['office'] },
    { slot: 1, tags: ['office', 'laptops'] },
    { slot: 2, tags: ['guests'] },
  ]
  const c = compile([pol({ SenderTags: ['office'], ReceiverTags: ['office'] })], { selfTags: ['office'], peers })
  t.equal(ev(c, 0, TCP, SELF, 22), 0)
  t.equal(ev(c, 1, UDP, SELF, 5353), 0)
  t.ok(ev(c, 2, TCP, SELF, 22) < 0, 'not a member')
  // The same list on a system outside the mesh enforces nothing for it: everything is dropped there.
  const outside = compile([pol({ SenderTags: ['office'], ReceiverTags: ['office'] })], { selfTags: ['guests'], peers })
  t.ok(ev(outside, 0, TCP, SELF, 22) < 0, 'a receiver without the tag admits no one')
})

t.test('receiver only: a policy naming this system as sender lets no one start flows here', async (t) => {
  // On a laptop: laptops -> exit-node. The exit node (peer 0 here) may not start traffic to the laptop.
  const c = compile([pol({})], { selfTags: ['laptops'], provides: [], peers: [{ slot: 0, tags: ['exit-node'] }] })
  t.equal(denyReason(ev(c, 0, TCP, SELF, 22)), DENY_NO_POLICY)
  t.equal(denyReason(ev(c, 0, ICMP, SELF)), DENY_NO_POLICY)
})

t.test('gateway routes: whole routes, narrower ranges, and no LAN for policies without gateway keys', async (t) => {
  const c = compile([
    pol({ Description: 'self only' }),
    pol({ Description: 'whole LAN for guests', SenderTags: ['guests'], GatewayRoutes: ['172.26.0.0/20'] }),
    pol({
      Description: 'one /24 of the second route',
      SenderTags: ['guests'],
      Acls: [{ Protocol: 'Tcp', Ports: '443' }],
      GatewayAllowedIpRanges: [{ IpRange: '10.9.3.0/24' }],
    }),
  ])
  t.equal(denyReason(ev(c, 0, TCP, PRINTER, 80)), DENY_ROUTE_NOT_GRANTED, 'a policy without gateway keys grants no LAN')
  t.equal(ev(c, 0, TCP, SELF, 80), 0)
  t.equal(ev(c, 1, TCP, PRINTER, 80), 1, 'guest: anywhere in the granted route')
  t.equal(ev(c, 1, TCP, '172.26.15.255', 80), 1)
  t.equal(denyReason(ev(c, 1, TCP, SELF, 80)), DENY_NO_POLICY, 'a gateway policy does not grant the exit node itself')
  t.equal(ev(c, 1, TCP, OTHER_LAN, 443), 2, 'inside the narrower range')
  t.equal(denyPolicy(ev(c, 1, TCP, OTHER_LAN, 80)), 2, 'inside the range, wrong port: near miss 2')
  t.equal(denyReason(ev(c, 1, TCP, '10.9.4.1', 443)), DENY_ROUTE_NOT_GRANTED, 'outside the narrower range')
})

t.test('a gateway policy that applies elsewhere grants nothing here', async (t) => {
  const c = compile([pol({ ReceiverTags: ['other-gw'], GatewayRoutes: ['192.168.0.0/24'] })])
  t.equal(denyReason(ev(c, 0, TCP, '192.168.0.1', 80)), DENY_NOT_LOCAL)
  t.equal(c.table.dstKind.length, 3, 'classes: self and the two provided routes only')
})

t.test('more than 32 policies use several mask words; unknown peer slots match nothing', async (t) => {
  const raw: RawPolicy[] = []
  for (let i = 0; i < 70; i++) raw.push(pol({ SenderTags: [`t${i}`], Acls: [{ Protocol: 'Tcp', Ports: String(1000 + i) }] }))
  const peers = [
    { slot: 0, tags: ['t0'] },
    { slot: 5, tags: ['t31', 't32', 't69'] },
  ]
  const c = compile(raw, { peers })
  t.equal(c.table.words, 3)
  t.equal(ev(c, 0, TCP, SELF, 1000), 0)
  t.equal(ev(c, 5, TCP, SELF, 1031), 31)
  t.equal(ev(c, 5, TCP, SELF, 1032), 32)
  t.equal(ev(c, 5, TCP, SELF, 1069), 69)
  t.ok(ev(c, 5, TCP, SELF, 1000) < 0)
  t.equal(denyPolicy(ev(c, 5, TCP, SELF, 1)), 31, 'near miss: the lowest candidate')
  t.ok(ev(c, 3, TCP, SELF, 1000) < 0, 'a slot between peers')
  t.ok(ev(c, 6, TCP, SELF, 1000) < 0, 'a slot past the table')
  t.ok(ev(c, -1, TCP, SELF, 1000) < 0, 'a negative slot')
})

t.test('the tables agree with a direct reading of the semantics on random policies', async (t) => {
  let seed = 12345
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return (seed >>> 8) % n
  }
  const tags = ['a', 'b', 'c', 'd', 'e']
  const provides = ['172.26.0.0/20', '10.9.0.0/16']
  const ranges = ['172.26.0.0/20', '172.26.1.0/24', '172.26.1.128/25', '10.9.0.0/16', '10.9.3.4/32', '172.26.8.0/21']
  const protos = ['Any', 'Tcp', 'Udp', 'Icmp'] as const
  let checked = 0
  for (let round = 0; round < 30; round++) {
    const raw: RawPolicy[] = []
    for (let i = 0; i < 1 + rnd(12); i++) {
      const acls = []
      for (let j = 0; j < 1 + rnd(3); j++) {
        const proto = protos[rnd(4)]
        const lo = 1 + rnd(100)
        acls.push(
          proto === 'Tcp' || proto === 'Udp' ? { Protocol: proto, Ports: rnd(2) ? `${lo}` : `${lo}-${lo + rnd(50)}` } : { Protocol: proto },
        )
      }
      const p: RawPolicy = {
        SenderTags: [tags[rnd(5)], tags[rnd(5)]],
        ReceiverTags: [rnd(4) ? 'x' : 'y'],
        Acls: acls,
        IsEnabled: rnd(8) !== 0,
      }
      const g = rnd(4)
      if (g === 1) p.GatewayRoutes = [provides[rnd(2)]]
      if (g === 2) p.GatewayAllowedIpRanges = [{ IpRange: ranges[rnd(6)] }]
      raw.push(p)
    }
    const peers = [0, 1, 2, 3, 4, 5].map((slot) => ({ slot, tags: [tags[rnd(5)]] }))
    const setup = { selfTags: ['x'], provides, peers }
    const pc = configs(raw, setup)!
    const c = compile(raw, setup)
    const dsts = [SELF, '172.26.1.200', '172.26.1.5', '172.26.9.1', '10.9.3.4', '10.9.200.1', '192.0.2.1']
    for (let q = 0; q < 200; q++) {
      const peer = rnd(7)
      const proto = [TCP, UDP, ICMP, 47][rnd(4)]
      const port = proto === TCP || proto === UDP ? 1 + rnd(160) : 0
      const dst = dsts[rnd(dsts.length)]
      const want = reference(pc, peers, ['x'], provides.map(cidr), peer, proto, ip(dst), port)
      const got = ev(c, peer, proto, dst, port)
      if (want !== (got >= 0 ? got : -1)) t.fail(`round ${round} peer ${peer} proto ${proto} ${dst}:${port}: want ${want}, got ${got}`)
      checked++
    }
  }
  t.equal(checked, 6000, 'every query agreed with the reference')
})

/** The semantics read straight from the issue, no tables: the lowest allowing policy, or -1. */
function reference(
  pols: PolicyConfig[],
  peers: PolicyPeer[],
  selfTags: string[],
  provides: Cidr[],
  peer: number,
  proto: number,
  dst: number,
  port: number,
): number {
  const peerTags = peers.find((p) => p.slot === peer)?.tags ?? []
  const isSelf = dst === ip(SELF)
  if (!isSelf && !provides.some((c) => cidrContains(c, dst))) return -1
  for (const p of pols) {
    if (!p.enabled || !p.receiverTags.some((t) => selfTags.includes(t)) || !p.senderTags.some((t) => peerTags.includes(t))) continue
    const r = gatewayRanges(p)
    if (isSelf ? r !== undefined : !r?.some((c) => cidrContains(c, dst))) continue
    const num = { Any: 0, Icmp: ICMP, Tcp: TCP, Udp: UDP }
    if (p.acls.some((a) => (num[a.protocol] === 0 || num[a.protocol] === proto) && port >= a.portLo && port <= a.portHi)) return p.index
  }
  return -1
}

t.test("doctor's warnings: unknown tags and provided routes no policy grants", async (t) => {
  const warn = (raw: RawPolicy[] | undefined) =>
    policyWarnings({
      selfTags: ['exit-node'],
      selfAddress: ip(SELF),
      providesRoutes: ['172.26.0.0/20', '10.9.0.0/16'].map(cidr),
      peers: [{ slot: 0, tags: ['laptops'] }],
      policies: configs(raw),
    })
  t.same(warn(undefined), [], 'compatibility mode: nothing to warn about')
  t.same(warn([pol({ GatewayRoutes: ['172.26.0.0/20'] }), pol({ GatewayAllowedIpRanges: [{ IpRange: '10.9.1.0/24' }] })]), [])
  t.same(warn([pol({ SenderTags: ['laptops', 'lapotps'], GatewayRoutes: ['172.26.0.0/20', '10.9.0.0/16'] })]), [
    'Policies[0].SenderTags[1]: tag "lapotps" is carried by no peer and not by this system',
  ])
  t.same(
    warn([pol({}), pol({ IsEnabled: false, GatewayRoutes: ['10.9.0.0/16'] }), pol({ GatewayAllowedIpRanges: [{ IpRange: PRINTER }] })]),
    ['ExitNode.ProvidesRoutes[1]: 10.9.0.0/16 is granted by no enabled policy here; with Policies set, no peer can use it'],
  )
  t.equal(warn([]).length, 2, 'an empty list grants neither route')
})

t.test('judgeFlow: explain for both directions from this profile', async (t) => {
  const pcs = configs([
    pol({ Description: 'laptops to exit node', Acls: [{ Protocol: 'Icmp' }] }),
    pol({ Description: 'printing', Acls: [{ Protocol: 'Tcp', Ports: '9100' }], GatewayAllowedIpRanges: [{ IpRange: PRINTER }] }),
  ])
  const exitNode = { tags: ['exit-node'], address: ip(SELF), routes: [cidr('172.26.0.0/20')] }
  // A laptop explains its own traffic to the exit node's LAN: the exit node is the receiver.
  t.match(judgeFlow(pcs, exitNode, ['laptops'], TCP, ip(PRINTER), 9100), { verdict: 1, text: /allow by Policies\[1\] "printing"/ })
  t.match(judgeFlow(pcs, exitNode, ['laptops'], TCP, ip(PRINTER), 22).text, /drop: no policy allows \(Policies\[1\] "printing"/)
  t.match(judgeFlow(pcs, exitNode, ['guests'], ICMP, ip(SELF), 0).text, /^drop: no policy allows$/)
  // The exit node explains traffic it would send to a laptop: the laptop receives, and nothing names it receiver.
  const laptop = { tags: ['laptops'], address: ip('100.100.0.9'), routes: [] }
  t.equal(denyReason(judgeFlow(pcs, laptop, ['exit-node'], ICMP, ip('100.100.0.9'), 0).verdict), DENY_NO_POLICY)
  t.match(judgeFlow(undefined, laptop, [], TCP, ip('100.100.0.9'), 22).text, /policy: none, all peers allowed/)
})
