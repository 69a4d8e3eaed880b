/**
 * The TUN device deleted underneath a running agent (`ip link del enclave0`; issue 18, finding 8): the
 * workers' reads fail (EBADFD) and poll keeps reporting the device, so before, they spun at full CPU with
 * no log line and status still said Running. Now the agent logs one error naming the device and stops,
 * failing closed as after kill -9 (the unreachable twins and the policy rule stay, so traffic meant for
 * the tunnel is refused, not sent in clear), and exits non-zero so that systemd's Restart= brings it back.
 *
 *   client 198.18.0.1 (default via 198.18.0.2) ── exit 198.18.0.2 ── lan 172.26.0.250/20
 */
import t from 'tap'
import { Lab, peerEntry, rootSkipReason } from '../helpers/netns.js'

const skip = rootSkipReason()

/** How long the agent may take to notice and stop: a liveness bound, not a speed target. */
const EXIT_BOUND_MS = 20_000

t.test('a TUN device deleted underneath the agent: one error line, fail-closed stop, non-zero exit', { skip }, async (t) => {
  const lab = new Lab('tl')
  t.teardown(() => lab.cleanup())
  const nsC = await lab.addNs('client')
  const nsE = await lab.addNs('exit')
  const nsL = await lab.addNs('lan')
  await lab.link(nsC, 'eth0', '198.18.0.1/24', nsE, 'eth0', '198.18.0.2/24')
  await lab.link(nsE, 'lan0', '172.26.0.3/20', nsL, 'eth0', '172.26.0.250/20')
  await lab.sh('ip', ['-n', nsC, 'route', 'add', 'default', 'via', '198.18.0.2'])
  await lab.exec(nsE, 'sysctl', ['-w', 'net.ipv4.ip_forward=1'])
  const C = lab.makeAgent({ name: 'client', ns: nsC })
  const E = lab.makeAgent({ name: 'exit', ns: nsE })
  lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'], ManageNat: true } })
  lab.writeAgentProfile(C, {
    Peers: [peerEntry(E, { Endpoint: '198.18.0.2:51820' })],
    ExitNode: { AvailableRoutes: { [E.identity]: ['0.0.0.0/0', '172.26.0.0/20'] } },
  })
  const e = lab.startAgent(E)
  await e.waitFor(/control socket ready/)
  const c = lab.startAgent(C)
  await c.waitFor(/control socket ready/)
  t.teardown(async () => {
    await c.stop()
    await e.stop()
  })
  const ping = await lab.exec(nsC, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '172.26.0.250'])
  t.equal(ping.code, 0, 'the LAN answers through the exit node')

  const del = await lab.exec(nsC, 'ip', ['link', 'del', 'enclave0'])
  t.equal(del.code, 0, `ip link del enclave0 ${del.stderr}`)
  let bound: NodeJS.Timeout | undefined
  const code = await Promise.race([
    c.exited,
    new Promise<string>((r) => {
      bound = setTimeout(() => r('still running'), EXIT_BOUND_MS)
    }),
  ])
  clearTimeout(bound)
  t.ok(typeof code === 'number' && code !== 0, `the agent exits non-zero within ${EXIT_BOUND_MS / 1000} s (exit: ${code})`)
  const errors = c.log.split('\n').filter((l) => /level=error/.test(l) && /enclave0/.test(l))
  t.equal(errors.length, 1, `one error line names the device:\n${errors.join('\n')}\n--- log tail:\n${c.log.slice(-1500)}`)

  // Failing closed, as after kill -9: the unreachable twins and the policy rule stay.
  const ours = (await lab.exec(nsC, 'ip', ['-4', 'route', 'show', 'table', 'all', 'proto', '211'])).stdout
  t.match(ours, /unreachable default table \d+/, `the fail-closed twin of 0.0.0.0/0 stays:\n${ours}`)
  t.match(ours, /unreachable 172\.26\.0\.0\/20/, 'the fail-closed twin of the LAN subnet stays')
  const rules = (await lab.exec(nsC, 'ip', ['rule', 'show'])).stdout
  t.match(rules, /not from all fwmark/, 'the policy rule stays')
  for (const dst of ['192.0.2.1', '172.26.0.250']) {
    const r = await lab.exec(nsC, 'ip', ['route', 'get', dst])
    t.match(r.stderr, /No route to host/, `${dst} is refused, not sent through the underlay (${(r.stdout + r.stderr).trim()})`)
  }

  // What systemd's Restart= does next: a new start replaces the leftovers and traffic flows again.
  const c2 = lab.startAgent(C)
  t.teardown(() => c2.stop())
  await c2.waitFor(/control socket ready/)
  const again = await lab.exec(nsC, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '172.26.0.250'])
  t.equal(again.code, 0, 'restarted, the LAN answers through the exit node again')
  t.equal(await c2.stop(), 0, 'a stop asked for exits 0')
  const left = (await lab.exec(nsC, 'ip', ['-4', 'route', 'show', 'table', 'all', 'proto', '211'])).stdout.trim()
  t.equal(left, '', 'and removes everything')
})
