/**
 * Fail closed after a crash: a client sending 0.0.0.0/0 and a LAN subnet through an exit node is
 * killed with SIGKILL. Its TUN device and the TUN routes vanish with it; what the profile sends
 * through the exit node must then be refused (unreachable), not routed out of the underlay.
 * `enclave stop` removes the leftovers; the next start replaces them.
 *
 *   client 198.18.0.1 (default via 198.18.0.2) ── exit 198.18.0.2 ── lan 172.26.0.250/20
 */
import tap from 'tap'
const t = tap
import { Lab, BIN, peerEntry, rootSkipReason } from '../helpers/netns.js'

const skip = rootSkipReason()
if (skip) {
  t.comment(`skipping fail-closed tests: ${skip}`)
  t.skip(`fail-closed tests: ${skip}`)
} else {
  t.test('a client killed with SIGKILL fails closed', async (t) => {
    const lab = new Lab('fc')
    t.teardown(() => lab.cleanup())
    const nsC = await lab.addNs('client')
    const nsE = await lab.addNs('exit')
    const nsL = await lab.addNs('lan')
    await lab.link(nsC, 'eth0', '198.18.0.1/24', nsE, 'eth0', '198.18.0.2/24')
    await lab.link(nsE, 'lan0', '172.26.0.3/20', nsL, 'eth0', '172.26.0.250/20')
    // The underlay's default route: without the tunnel, traffic would leave this way, unencrypted.
    await lab.sh('ip', ['-n', nsC, 'route', 'add', 'default', 'via', '198.18.0.2'])
    // And an IPv6 default route: with 0.0.0.0/0 in the tunnel, IPv6 would leave this way in clear.
    await lab.sh('ip', ['-n', nsC, '-6', 'addr', 'add', '2001:db8:1::1/64', 'dev', 'eth0', 'nodad'])
    await lab.sh('ip', ['-n', nsC, '-6', 'route', 'add', 'default', 'via', '2001:db8:1::2', 'dev', 'eth0'])
    const route6 = async () => {
      const r = await lab.exec(nsC, 'ip', ['-6', 'route', 'get', '2001:db8:99::1'])
      return (r.stdout + r.stderr).trim()
    }
    const ipv6Before = await route6()
    await lab.exec(nsE, 'sysctl', ['-w', 'net.ipv4.ip_forward=1'])
    const C = lab.makeAgent({ name: 'client', ns: nsC })
    const E = lab.makeAgent({ name: 'exit', ns: nsE })
    lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'], ManageNat: true } })
    const clientProfile = (routes: string[]) =>
      lab.writeAgentProfile(C, {
        Peers: [peerEntry(E, { Endpoint: '198.18.0.2:51820' })],
        ExitNode: { AvailableRoutes: { [E.identity]: routes } },
      })
    clientProfile(['0.0.0.0/0', '172.26.0.0/20'])
    const e = lab.startAgent(E)
    await e.waitFor(/control socket ready/)

    const routeGet = (dst: string) => lab.exec(nsC, 'ip', ['route', 'get', dst])
    const ours = async () => (await lab.exec(nsC, 'ip', ['-4', 'route', 'show', 'table', 'all', 'proto', '211'])).stdout.trim()
    const rules = async () => ((await lab.exec(nsC, 'ip', ['rule', 'show'])).stdout.match(/not from all fwmark/g) ?? []).length
    const stopCmd = () =>
      lab.exec(nsC, process.execPath, [BIN, 'stop'], 30000, {
        ENCLAVE_RUN_DIR: C.runDir,
        ENCLAVE_CONFIG_DIR: C.dir,
        ENCLAVE_NO_SYSTEMD: '1',
      })
    const refused = async (t: Pick<typeof tap, 'not' | 'match'>, dst: string, what: string) => {
      const r = await routeGet(dst)
      t.not(r.code, 0, `${what}: \`ip route get ${dst}\` finds no way out (${(r.stdout + r.stderr).trim()})`)
      t.match(r.stderr, /No route to host/, `${what}: refused by the unreachable route`)
    }

    await t.test('while the client runs, its routes carry traffic and the unreachable twins wait below them', async (t) => {
      const c = lab.startAgent(C)
      await c.waitFor(/control socket ready/)
      t.equal(
        (await lab.exec(nsC, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '172.26.0.250'])).code,
        0,
        'the LAN answers through the exit node',
      )
      t.match((await routeGet('192.0.2.1')).stdout, /dev enclave/, '0.0.0.0/0 goes into the tunnel')
      t.match((await routeGet('172.26.0.250')).stdout, /dev enclave/, 'the LAN subnet goes into the tunnel')
      t.match(ipv6Before, /via 2001:db8:1::2 dev eth0/, 'before the agent, IPv6 left through the local router')
      t.match(
        await route6(),
        /unreachable|Network is unreachable|No route to host/,
        'with 0.0.0.0/0 in the tunnel, IPv6 does not leave in clear',
      )
      const list = await ours()
      t.match(list, /unreachable default table \d+ metric \d+/, 'fail-closed twin of 0.0.0.0/0 in our table')
      t.match(list, /unreachable 172\.26\.0\.0\/20 metric \d+/, 'fail-closed twin of the LAN subnet in main')

      await c.stop('SIGKILL')
      t.match(await ours(), /unreachable default/, 'after kill -9 the unreachable routes remain')
      t.notMatch(await ours(), /dev enclave/, 'and the TUN routes are gone with the device')
      t.equal(await rules(), 1, 'the policy rule remains')
      await refused(t, '192.0.2.1', '0.0.0.0/0 after kill -9')
      await refused(t, '172.26.0.250', 'the LAN subnet after kill -9')
      t.match(await route6(), /unreachable|Network is unreachable|No route to host/, 'IPv6 stays blocked after kill -9')
      t.match((await routeGet('198.18.0.2')).stdout, /dev eth0/, 'the underlay itself stays reachable')

      const rawLeft = await lab.exec(nsC, 'iptables', ['-w', '-t', 'raw', '-S', 'PREROUTING'])
      t.match(rawLeft.stdout, /enclave:/, 'the anti-spoofing rules remain after kill -9')
      const st = await stopCmd()
      t.equal(st.code, 0, `enclave stop: ${st.stdout}${st.stderr}`)
      t.match(
        st.stdout,
        /Removed [1-9]\d* fail-closed routes, policy rules and anti-spoofing rules left by an agent that did not stop cleanly/,
      )
      t.equal(await ours(), '', 'enclave stop removed the leftover routes')
      t.equal(await rules(), 0, 'and the policy rules')
      const raw = await lab.exec(nsC, 'iptables', ['-w', '-t', 'raw', '-S', 'PREROUTING'])
      t.notMatch(raw.stdout, /enclave:/, 'and the anti-spoofing rules')
      t.match((await routeGet('192.0.2.1')).stdout, /via 198\.18\.0\.2 dev eth0/, 'once stopped on purpose, the underlay is used again')
      t.match(await route6(), /via 2001:db8:1::2 dev eth0/, 'and IPv6 too')
      const again = await stopCmd()
      t.notMatch(again.stdout, /Removed/, 'a second stop has nothing to remove')
    })

    await t.test('enclave stop leaves a running agent alone', async (t) => {
      const c = lab.startAgent(C)
      await c.waitFor(/control socket ready/)
      const st = await stopCmd() // foreground agent: no pid file, but it answers on its socket
      t.notMatch(st.stdout, /Removed/, 'nothing removed while the agent answers')
      t.match(st.stdout, new RegExp(`The agent runs in the foreground \\(pid ${c.pid}`), 'stop names the foreground agent and its pid')
      t.equal(await rules(), 1, 'its policy rule is intact')
      t.match(await ours(), /dev enclave/, 'its routes are intact')
      await c.stop('SIGKILL')
    })

    await t.test('the next start replaces the leftovers and removes those no longer wanted', async (t) => {
      await refused(t, '192.0.2.1', 'killed again')
      const c1 = lab.startAgent(C)
      await c1.waitFor(/control socket ready/)
      t.match((await routeGet('172.26.0.250')).stdout, /dev enclave/, 'the LAN route is installed again: its leftover twin is no conflict')
      t.equal(((await ours()).match(/unreachable/g) ?? []).length, 2, 'the leftover twins were replaced, not duplicated')
      t.notMatch(c1.log, /NOT installed/, 'no route was refused')
      await c1.stop('SIGKILL')
      clientProfile(['0.0.0.0/0'])
      const c = lab.startAgent(C)
      await c.waitFor(/control socket ready/)
      await c.waitFor(/removed a fail-closed route left by an earlier run/)
      t.equal(await rules(), 1, 'exactly one policy rule')
      const list = await ours()
      t.equal((list.match(/unreachable default/g) ?? []).length, 1, 'exactly one twin for 0.0.0.0/0')
      t.notMatch(list, /172\.26\.0\.0\/20/, 'the twin of the route dropped from the profile is gone')
      t.equal((await lab.exec(nsC, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '172.26.0.250'])).code, 0, 'traffic flows')
      clientProfile(['0.0.0.0/0', '172.26.0.0/20'])
      t.equal((await lab.cli(C, ['reload'])).code, 0, 'reload adds a route')
      t.match(await ours(), /unreachable 172\.26\.0\.0\/20/, 'reload adds its twin')
      t.match((await routeGet('172.26.0.250')).stdout, /dev enclave/, 'the route is installed')
      clientProfile(['0.0.0.0/0'])
      t.equal((await lab.cli(C, ['reload'])).code, 0, 'reload removes it')
      t.notMatch(await ours(), /172\.26\.0\.0\/20/, 'reload removes its twin')
      t.equal(await c.stop(), 0)
      t.equal(await ours(), '', 'a clean stop removes every route, twins included')
      t.equal(await rules(), 0, 'and the policy rules')
    })

    t.equal(await e.stop(), 0)
  })
}
