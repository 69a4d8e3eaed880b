/**
 * One agent per run directory, with the real CLI in a namespace made here: a second `enclave run` for a
 * running ManageNat exit node says "already running (pid N)", exits non-zero and leaves the first one's
 * SNAT rule, TUN address and routes as they were.
 */
import t from 'tap'
import { Lab, peerEntry, rootSkipReason } from '../helpers/netns.js'

const skip = rootSkipReason()
if (skip) {
  t.skip(`double-run test: ${skip}`)
} else {
  t.test('a second `enclave run` on a running exit node changes nothing', async (t) => {
    const lab = new Lab('dr')
    t.teardown(() => lab.cleanup())
    const nsE = await lab.addNs('e')
    const nsL = await lab.addNs('lan')
    await lab.link(nsE, 'lan0', '172.26.0.3/20', nsL, 'eth0', '172.26.0.250/20')
    const E = lab.makeAgent({ name: 'e', ns: nsE })
    const C = lab.makeAgent({ name: 'c', ns: nsE })
    lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'], ManageNat: true } })
    const first = lab.startAgent(E)
    await first.waitFor(/control socket ready/)
    await first.waitFor(/ManageNat: added SNAT rule/)
    const snapshot = async () => ({
      nat: (await lab.exec(nsE, 'iptables', ['-w', '-t', 'nat', '-S', 'POSTROUTING'])).stdout,
      raw: (await lab.exec(nsE, 'iptables', ['-w', '-t', 'raw', '-S', 'PREROUTING'])).stdout,
      addr: (await lab.exec(nsE, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'enclave0'])).stdout,
      routes: (await lab.exec(nsE, 'ip', ['-4', 'route', 'show', 'table', 'all'])).stdout,
    })
    const v6 = await lab.exec(nsE, 'ip', ['-6', 'addr', 'show', 'dev', 'enclave0'])
    t.equal(v6.stdout.trim(), '', 'the TUN has no IPv6 address (the kernel sends nothing IPv6 into it: no not_ipv4 drops when idle)')
    const before = await snapshot()
    t.match(before.nat, /enclave:enclave0/, 'the exit node added its tagged SNAT rule')
    const second = lab.startAgent(E)
    const code = await second.exited
    t.not(code, 0, 'the second run exits non-zero')
    t.match(second.log, new RegExp(`already running .*\\(pid ${first.pid}\\)`), 'and names the running pid')
    t.same(await snapshot(), before, 'SNAT and anti-spoofing rules, the TUN address and every route are unchanged')
    // An agent of another profile and run directory, with the same (default) interface and port.
    const E2 = lab.makeAgent({ name: 'e2', ns: nsE })
    const other = lab.startAgent(E2)
    t.not(await other.exited, 0, 'an agent of another run directory on the same interface does not start')
    t.match(other.log, /interface enclave0 already exists: another agent/, 'and says why')
    t.same(await snapshot(), before, 'and changed nothing either')
    t.ok(first.running, 'the first agent still runs')
    const st = await lab.cli(E, ['status', '--json'])
    t.equal(st.code, 0, 'and answers status')
    t.equal(await first.stop(), 0, 'and stops cleanly')
  })
}
