/**
 * What the agent adds to the OS has one owner (src/ops/os-footprint.ts): the tag, anti-spoofing,
 * ManageNat, the clean-up after a crash, and the checks that status and doctor both show.
 */
import t from 'tap'
import { parseCidr } from '../../src/common/ipv4.js'
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
  t.same(
    (await fp.check('enclave0', true)).map((c) => c.result),
    ['pass', 'pass', 'pass'],
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
  // A run that died: its fail-closed route and rules stay; the clean-up removes them and our iptables rules.
  await os.addUnreachableRoute(LAN, agentFwmark(p.localPort))
  await os.addDefaultRouteRules(agentFwmark(p.localPort))
  const n = await fp.removeAfterCrash()
  t.equal(n, 1 + 2 + 2 + 1, 'route, two policy rules, two raw rules and the SNAT rule')
  t.same(os.nat, [theirs], "the admin's own NAT rule stays")
  t.same(os.raw, [])
  t.same(os.rules, [])
})
