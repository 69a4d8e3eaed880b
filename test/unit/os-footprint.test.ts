/**
 * What the agent adds to the OS has one owner (src/ops/os-footprint.ts): the tag, anti-spoofing,
 * ManageNat, the clean-up after a crash, and the checks that status and doctor both show.
 */
import t from 'tap'
import { intToIp, parseCidr } from '../../src/common/ipv4.js'
import { generatePrivateKey } from '../../src/config/keys.js'
import { OsFootprint, checkWarning, footprintTag, guideSnatCommand } from '../../src/ops/os-footprint.js'
import { validateProfile } from '../../src/config/profile.js'
import { agentFwmark } from '../../src/ops/route-installer.js'
import { MemoryOsNetwork } from '../../src/platform/memory-network.js'

const profile = (exitNode: Record<string, unknown>) =>
  validateProfile('/test/Universe.profile', { PrivateKey: generatePrivateKey().toString('base64'), Peers: [], ExitNode: exitNode })
const LAN = parseCidr('172.26.0.0/20') as Exclude<ReturnType<typeof parseCidr>, string>

t.test('checks: a bare exit node fails ip_forward and SNAT with the guide command as the fix', async (t) => {
  const os = new MemoryOsNetwork()
  os.lanAddress = () => '172.26.0.3'
  const fp = new OsFootprint(profile({ ProvidesRoutes: ['172.26.0.0/20'] }), os)
  const checks = await fp.check('enclave0', true)
  t.same(
    checks.map((c) => [c.name, c.result]),
    [
      ['anti-spoofing', 'fail'],
      ['ip_forward', 'fail'],
      ['reply-only (FORWARD)', 'fail'],
      ['SNAT 172.26.0.0/20', 'fail'],
    ],
  )
  const snat = checks.find((c) => c.name.startsWith('SNAT'))!
  t.equal(snat.fix, 'sudo iptables -t nat -A POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -j SNAT --to 172.26.0.3')
  t.equal(snat.fix, guideSnatCommand('172.26.0.3', { dst: '172.26.0.0/20' }), 'built by the one guide command')
  t.match(
    checkWarning(snat),
    /so LAN hosts cannot answer: run `sudo iptables -t nat -A POSTROUTING/,
    'a status warning is the check with its fix',
  )
  // The admin runs the two fixes by hand: the checks pass.
  os.ipForward = true
  await os.addNatRule(['-s', '100.64.0.0/10', '-d', '172.26.0.0/20', '-j', 'SNAT', '--to-source', '172.26.0.3'])
  await fp.installAntiSpoof('enclave0')
  t.same(await fp.applyReplyOnly('enclave0'), [], 'the agent adds the reply-only rule')
  t.same(
    (await fp.check('enclave0', true)).map((c) => c.result),
    ['pass', 'pass', 'pass', 'pass'],
    'after the fixes every check passes',
  )
})

t.test('ManageNat adds tagged rules; stop and the crash clean-up remove exactly ours', async (t) => {
  const os = new MemoryOsNetwork()
  os.lanAddress = () => '172.26.0.3'
  const p = profile({ ProvidesRoutes: ['172.26.0.0/20'], ManageNat: true })
  const fp = new OsFootprint(p, os)
  const theirs = ['-s', '10.9.0.0/16', '-j', 'MASQUERADE']
  await os.addNatRule(theirs)
  t.same(await fp.applyNat(), [], 'no warnings')
  t.ok(os.ipForward, 'IP forwarding on')
  t.equal(os.nat.filter((r) => r.includes(footprintTag(p))).length, 1, 'one tagged SNAT rule')
  await fp.installAntiSpoof('enclave0')
  t.equal(os.raw.length, 2, 'two anti-spoofing rules')
  await fp.applyReplyOnly('enclave0')
  t.equal(os.forward.length, 1, 'one reply-only FORWARD rule')
  // A run that died: its fail-closed route and rules stay; the clean-up removes them and our iptables rules.
  await os.addUnreachableRoute(LAN, agentFwmark(p.localPort))
  await os.addDefaultRouteRules(agentFwmark(p.localPort))
  const n = await fp.removeAfterCrash()
  t.equal(n, 1 + 2 + 2 + 1 + 1, 'route, two policy rules, two raw rules, the FORWARD rule and the SNAT rule')
  t.same(os.nat, [theirs], "the admin's own NAT rule stays")
  t.same(os.raw, [])
  t.same(os.forward, [])
  t.same(os.rules, [])
})

t.test('reply-only FORWARD rule: only on nodes that provide routes, replaced once, gone when they stop providing', async (t) => {
  const os = new MemoryOsNetwork()
  const fp = new OsFootprint(profile({}), os)
  t.same(await fp.applyReplyOnly('enclave0'), [], 'a node that provides no routes: no warning')
  t.same(os.forward, [], 'and no rule')
  const exit = profile({ ProvidesRoutes: ['172.26.0.0/20'] })
  fp.setProfile(exit)
  await os.insertMangleForwardRule(['-o', 'enclave0', '-j', 'DROP', '-m', 'comment', '--comment', footprintTag(exit), '-p', 'udp'])
  await fp.applyReplyOnly('enclave0')
  t.same(
    os.forward.map((r) => r.join(' ')),
    ['-o enclave0 -m conntrack --ctstate NEW -m comment --comment enclave:enclave0 -j DROP'],
    "an exit node: the rule, in place of a crashed run's",
  )
  const changes = os.changes.length
  await fp.applyReplyOnly('enclave0')
  t.equal(os.changes.length, changes, 'a reload with the rule in place changes nothing')
  fp.setProfile(profile({}))
  await fp.applyReplyOnly('enclave0')
  t.same(os.forward, [], 'a reload that stops providing routes removes it')
  os.iptables = false
  fp.setProfile(exit)
  const w = await fp.applyReplyOnly('enclave0')
  t.match(
    w,
    [
      /^iptables is not available, .*run `sudo iptables -t mangle -I FORWARD -o enclave0 -m conntrack --ctstate NEW -m comment --comment "enclave:enclave0" -j DROP`$/,
    ],
    'without iptables: a warning with the command',
  )
})

t.test(
  "LAN NAT: rules that could give LAN hosts this node's virtual address are named; a warning while the FORWARD rule holds",
  async (t) => {
    const os = new MemoryOsNetwork()
    os.ipForward = true
    const p = profile({ ProvidesRoutes: ['172.26.0.0/20'] })
    const va = intToIp(p.virtualAddress)
    const fp = new OsFootprint(p, os)
    const rules: Array<[string, boolean]> = [
      ['-s 172.26.0.0/20 -j MASQUERADE', true], // the finding's rule: no -o
      ['-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE', true], // Docker's default
      ['-o enclave0 -j MASQUERADE', true],
      ['-o encl+ -j MASQUERADE', true],
      [`-s 172.26.0.0/20 -j SNAT --to-source ${va}`, true],
      ['! -s 100.64.0.0/10 -j MASQUERADE', true],
      ['-s 172.26.0.0/20 -o eth0 -j MASQUERADE', false], // to the uplink only
      ['-s 172.26.0.0/20 ! -o enclave0 -j MASQUERADE', false],
      ['-s 100.64.0.0/10 -d 172.26.0.0/20 -j SNAT --to-source 172.26.0.3', false], // the guide's
      ['-s 100.70.0.0/16 -j MASQUERADE', false], // overlay sources only
      ['-s 172.26.0.0/20 -j SNAT --to-source 172.26.0.3', false], // a LAN address: the workers judge it
      ['-s 172.26.0.0/20 -j ACCEPT', false],
    ]
    for (const [spec] of rules) await os.addNatRule(spec.split(' '))
    const named = (checks: Awaited<ReturnType<OsFootprint['check']>>) => checks.filter((c) => c.name === 'LAN NAT')
    const unguarded = named(await fp.check('enclave0', true))
    t.same(
      unguarded.map((c) => /`-A POSTROUTING (.*)`/.exec(c.detail)?.[1]),
      rules.filter(([, flagged]) => flagged).map(([spec]) => spec),
      'each rule that can rewrite LAN sources to the TUN address is named, no other',
    )
    t.ok(
      unguarded.every((c) => c.result === 'fail' && /nothing stops LAN hosts/.test(c.detail)),
      'a failure while no FORWARD rule holds reply-only',
    )
    await fp.applyReplyOnly('enclave0')
    const guarded = named(await fp.check('enclave0', true))
    t.ok(
      guarded.length === unguarded.length &&
        guarded.every((c) => c.result === 'warn' && /FORWARD rule drops new connections/.test(c.detail)),
      'a warning once the FORWARD rule is in place',
    )
    t.match(
      checkWarning(guarded[0]),
      /: run `sudo iptables -t nat -I POSTROUTING -o enclave0 -j RETURN`/,
      'the status line carries the fix',
    )
  },
)
