import t from 'tap'
import { validateProfile } from '../../src/config/profile.js'
import { parsePorts } from '../../src/config/policies.js'
import { ProfileError } from '../../src/errors.js'
import { keyPair } from '../helpers/keys.js'

const F = '/etc/enclave/profiles/Universe.profile'
const me = keyPair()
const laptop = keyPair()

function exitProfile(policies: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    PrivateKey: me.skB64,
    Tags: ['exit-node'],
    Peers: [{ PublicKey: laptop.pkB64, Tags: ['laptops'] }],
    ExitNode: { ProvidesRoutes: ['172.26.0.0/20', '10.9.0.0/16'] },
    Policies: policies,
    ...extra,
  }
}

function problems(raw: Record<string, unknown>): string[] {
  try {
    validateProfile(F, raw)
  } catch (e) {
    if (e instanceof ProfileError) return e.message.split('\n')
    throw e
  }
  return []
}

const good = {
  Description: 'laptops to printer',
  SenderTags: ['laptops'],
  ReceiverTags: ['exit-node'],
  Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '9100', Description: 'printing' }],
  GatewayRoutes: ['172.26.0.0/20'],
  GatewayAllowedIpRanges: [{ IpRange: '172.26.0.250', Description: 'printer' }],
}

t.test('a valid policy list loads with defaults and parsed ranges', async (t) => {
  const p = validateProfile(
    F,
    exitProfile([good, { SenderTags: ['a'], ReceiverTags: ['b'], IsEnabled: false, Acls: [{ Protocol: 'Udp', Ports: '8000 - 8100' }] }]),
  )
  t.equal(p.policies?.length, 2)
  const [a, b] = p.policies!
  t.equal(a.enabled, true, 'IsEnabled defaults to true')
  t.equal(a.appliesHere, true)
  t.same(
    a.acls.map((x) => [x.protocol, x.portLo, x.portHi]),
    [
      ['Icmp', 0, 65535],
      ['Tcp', 9100, 9100],
    ],
  )
  t.same(
    a.gatewayRoutes?.map((c) => c.text),
    ['172.26.0.0/20'],
  )
  t.same(
    a.gatewayAllowedIpRanges?.map((c) => c.text),
    ['172.26.0.250/32'],
    'one address is a /32',
  )
  t.equal(b.enabled, false)
  t.equal(b.appliesHere, false)
  t.same([b.acls[0].portLo, b.acls[0].portHi], [8000, 8100])
  t.equal(validateProfile(F, exitProfile(undefined)).policies, undefined, 'no Policies key: compatibility mode')
  t.same(validateProfile(F, exitProfile([])).policies, [], 'an empty list is enforcing mode')
})

t.test('port parsing', async (t) => {
  t.same(parsePorts('80'), [80, 80])
  t.same(parsePorts('8000-8100'), [8000, 8100])
  t.same(parsePorts('1-65535'), [1, 65535])
  t.match(parsePorts('0'), /port 0 is not a port/)
  t.match(parsePorts('70000'), /port 70000 is above 65535/)
  t.match(parsePorts('90-80'), /reversed; did you mean "80-90"/)
  t.match(parsePorts('80,443'), /lists of ports are not supported/)
  t.match(parsePorts('80 443'), /lists of ports are not supported/)
  t.match(parsePorts('http'), /is not a port "80" or a range/)
  t.match(parsePorts(''), /is not a port "80" or a range/)
})

t.test('every bad policy gives one line with the file, the JSON path and the reason', async (t) => {
  const acl = (a: Record<string, unknown>) => [{ ...good, Acls: [a] }]
  const cases: Array<[string, unknown, RegExp]> = [
    [
      'unknown protocol',
      acl({ Protocol: 'Sctp' }),
      /^\/etc\/enclave\/profiles\/Universe\.profile: Policies\[0\]\.Acls\[0\]\.Protocol: "Sctp" is not a protocol; use Any, Tcp, Udp, Icmp$/,
    ],
    ['protocol case', acl({ Protocol: 'tcp' }), /Policies\[0\]\.Acls\[0\]\.Protocol: "tcp": write "Tcp"$/],
    ['missing protocol', acl({ Ports: '80' }), /Policies\[0\]\.Acls\[0\]\.Protocol: is required/],
    ['port 0', acl({ Protocol: 'Tcp', Ports: '0' }), /Policies\[0\]\.Acls\[0\]\.Ports: "0": port 0 is not a port/],
    ['port 70000', acl({ Protocol: 'Udp', Ports: '70000' }), /Policies\[0\]\.Acls\[0\]\.Ports: "70000": port 70000 is above 65535$/],
    ['reversed range', acl({ Protocol: 'Tcp', Ports: '90-80' }), /Policies\[0\]\.Acls\[0\]\.Ports: "90-80": the range is reversed/],
    ['port list', acl({ Protocol: 'Tcp', Ports: '80,443' }), /Policies\[0\]\.Acls\[0\]\.Ports: "80,443": lists of ports are not supported/],
    ['numeric ports', acl({ Protocol: 'Tcp', Ports: 80 }), /Policies\[0\]\.Acls\[0\]\.Ports: must be a string \(got number\)/],
    [
      'ports on icmp',
      acl({ Protocol: 'Icmp', Ports: '80' }),
      /Policies\[0\]\.Acls\[0\]\.Ports: Ports apply only to Tcp and Udp; remove Ports from this Icmp entry/,
    ],
    [
      'ports on any',
      acl({ Protocol: 'Any', Ports: '80' }),
      /Policies\[0\]\.Acls\[0\]\.Ports: Ports apply only to Tcp and Udp; remove Ports from this Any entry/,
    ],
    ['empty senders', [{ ...good, SenderTags: [] }], /Policies\[0\]\.SenderTags: must list at least one tag/],
    ['empty receivers', [{ ...good, ReceiverTags: [] }], /Policies\[0\]\.ReceiverTags: must list at least one tag/],
    ['missing receivers', [{ ...good, ReceiverTags: undefined }], /Policies\[0\]\.ReceiverTags: is required/],
    ['bad tag', [{ ...good, SenderTags: ['lap tops'] }], /Policies\[0\]\.SenderTags\[0\]: tags use letters/],
    ['no acls', [{ ...good, Acls: [] }], /Policies\[0\]\.Acls: must list at least one entry; \{ "Protocol": "Any" \} allows/],
    ['IsEnabled type', [{ ...good, IsEnabled: 'yes' }], /Policies\[0\]\.IsEnabled: must be a boolean \(got string\)/],
    ['not a list', { ...good }, /^[^\n]*: Policies: must be an array \(got object\)$/],
    [
      'gateway route not provided',
      [{ ...good, GatewayRoutes: ['192.168.0.0/24'], GatewayAllowedIpRanges: undefined }],
      /Policies\[0\]\.GatewayRoutes\[0\]: 192\.168\.0\.0\/24 is not among ExitNode\.ProvidesRoutes \(172\.26\.0\.0\/20, 10\.9\.0\.0\/16\)$/,
    ],
    [
      'gateway route narrower than a provided route',
      [{ ...good, GatewayRoutes: ['172.26.1.0/24'], GatewayAllowedIpRanges: undefined }],
      /Policies\[0\]\.GatewayRoutes\[0\]: 172\.26\.1\.0\/24 is not among .*; name 172\.26\.0\.0\/20 here and put 172\.26\.1\.0\/24 in GatewayAllowedIpRanges/,
    ],
    [
      'gateway route host bits',
      [{ ...good, GatewayRoutes: ['172.26.0.1/20'] }],
      /Policies\[0\]\.GatewayRoutes\[0\]: "172\.26\.0\.1\/20" has host bits set/,
    ],
    ['empty gateway routes', [{ ...good, GatewayRoutes: [] }], /Policies\[0\]\.GatewayRoutes: must not be empty/],
    [
      'allowed range outside the gateway routes',
      [{ ...good, GatewayAllowedIpRanges: [{ IpRange: '10.9.1.0/24' }] }],
      /Policies\[0\]\.GatewayAllowedIpRanges\[0\]\.IpRange: 10\.9\.1\.0\/24 is outside Policies\[0\]\.GatewayRoutes \(172\.26\.0\.0\/20\)$/,
    ],
    [
      'allowed range wider than its route',
      [{ ...good, GatewayAllowedIpRanges: [{ IpRange: '172.26.0.0/16' }] }],
      /Policies\[0\]\.GatewayAllowedIpRanges\[0\]\.IpRange: 172\.26\.0\.0\/16 is outside/,
    ],
    [
      'allowed range outside provided routes (no GatewayRoutes)',
      [{ ...good, GatewayRoutes: undefined, GatewayAllowedIpRanges: [{ IpRange: '192.168.1.0/24' }] }],
      /Policies\[0\]\.GatewayAllowedIpRanges\[0\]\.IpRange: 192\.168\.1\.0\/24 is outside ExitNode\.ProvidesRoutes/,
    ],
    [
      'bad ip range',
      [{ ...good, GatewayAllowedIpRanges: [{ IpRange: 'printer' }] }],
      /Policies\[0\]\.GatewayAllowedIpRanges\[0\]\.IpRange: "printer" is not an IPv4 network/,
    ],
  ]
  for (const [name, policies, re] of cases) {
    const lines = problems(exitProfile(policies))
    t.equal(lines.length, 1, `${name}: one line (${lines.join(' | ')})`)
    t.match(lines[0] ?? '', re, name)
    t.notMatch(lines.join('\n'), /\n\s+at /, `${name}: no stack trace`)
  }
})

t.test('gateway keys are checked only where the policy applies (a shared list names other receivers)', async (t) => {
  const shared = [{ ...good, GatewayRoutes: ['192.168.0.0/24'], GatewayAllowedIpRanges: undefined }]
  // On a laptop (tag "laptops", no provided routes) the exit node's policy does not apply.
  const onLaptop = exitProfile(shared, { Tags: ['laptops'], ExitNode: undefined })
  t.same(problems(onLaptop), [])
  t.equal(validateProfile(F, onLaptop).policies?.[0].appliesHere, false)
  t.equal(problems(exitProfile(shared)).length, 1, 'on the exit node it is an error')
  t.match(problems(exitProfile(shared, { ExitNode: undefined }))[0], /this system provides no routes/)
})

t.test('two problems in two policies give two lines', async (t) => {
  const lines = problems(
    exitProfile([
      { ...good, Acls: [{ Protocol: 'Tcp', Ports: '0' }] },
      { ...good, SenderTags: [] },
    ]),
  )
  t.equal(lines.length, 2)
  t.match(lines[0], /Policies\[0\]\.Acls\[0\]\.Ports/)
  t.match(lines[1], /Policies\[1\]\.SenderTags/)
})

t.test('Ports on an Icmp entry is reported in the same round as a mistake elsewhere in the profile', async (t) => {
  const { validateProfile } = await import('../../src/config/profile.js')
  const { generatePrivateKey } = await import('../../src/config/keys.js')
  try {
    validateProfile('/test/Universe.profile', {
      PrivateKey: generatePrivateKey().toString('base64'),
      Mtu: 'big',
      Peers: [],
      Policies: [{ SenderTags: ['a'], ReceiverTags: ['b'], Acls: [{ Protocol: 'Icmp', Ports: '22' }] }],
    })
    t.fail('the profile was accepted')
  } catch (e) {
    const paths = (e as { problems: Array<{ path: string }> }).problems.map((p) => p.path)
    t.ok(paths.includes('Mtu'), 'the Mtu mistake')
    t.ok(paths.includes('Policies[0].Acls[0].Ports'), 'and the Icmp Ports, at once')
  }
})
