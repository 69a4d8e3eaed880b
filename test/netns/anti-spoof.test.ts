/**
 * A LAN host forging a client's virtual address cannot make the exit node's kernel talk to the client
 * ("own traffic" triggered from the LAN).
 *
 *   client (198.18.0.1) ── underlay veth ── exit (198.18.0.2; lan0 172.26.0.3/20) ── lan host 172.26.0.250/20
 *
 * The LAN host carries the client's virtual address on its loopback and pings, from that forged source,
 * the exit node's LAN address, the exit node's virtual address, and (TTL 1) a host behind the exit node,
 * so that the exit node's kernel answers the forged source: echo replies and a TTL-exceeded error, whose
 * route goes through the TUN and whose source is the exit node's own virtual address. Whatever reaches
 * the client's TUN is counted by an iptables rule in the client's namespace. The exit node's reverse-path
 * sysctl is off, as in the LAN fuzz, so only the agent's own defences stand in the way.
 */
import t from 'tap'
import { Lab, type AgentInfo, type AgentProc, haveCommand, peerEntry, pingArgs, rootSkipReason } from '../helpers/netns.js'

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)
const LAN_HOST = '172.26.0.250'
const EXIT_LAN = '172.26.0.3'

async function tunArrivals(lab: Lab, ns: string): Promise<number> {
  const r = await lab.exec(ns, 'iptables', ['-L', 'INPUT', '-n', '-v', '-x'])
  const line = r.stdout.split('\n').find((l) => l.includes('enclave0') && l.includes('ACCEPT'))
  if (!line) throw new Error(`no counting rule:\n${r.stdout}`)
  return Number(line.trim().split(/\s+/)[0])
}

async function rawRules(lab: Lab, ns: string): Promise<string[]> {
  const r = await lab.exec(ns, 'iptables', ['-w', '-t', 'raw', '-S', 'PREROUTING'])
  return r.stdout.split('\n').filter((l) => l.includes('enclave:enclave0'))
}

t.test('a LAN host forging a client address gets nothing from the exit node to the client', { skip }, async (t) => {
  const lab = new Lab('as')
  t.teardown(() => lab.cleanup())
  const [nsC, nsE, nsL] = await Promise.all(['client', 'exit', 'lan'].map((n) => lab.addNs(n)))
  await lab.link(nsC, 'eth0', '198.18.0.1/24', nsE, 'eth0', '198.18.0.2/24')
  await lab.link(nsE, 'lan0', `${EXIT_LAN}/20`, nsL, 'eth0', `${LAN_HOST}/20`)
  await lab.guideExitNode(nsE, EXIT_LAN, { out: 'lan0' })
  for (const k of ['all', 'default', 'lan0']) await lab.exec(nsE, 'sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=0`])

  const C = lab.makeAgent({ name: 'client', ns: nsC })
  const E = lab.makeAgent({ name: 'exit', ns: nsE })
  lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] } })
  lab.writeAgentProfile(C, {
    Peers: [peerEntry(E, { Endpoint: '198.18.0.2:51820' })],
    ExitNode: { AvailableRoutes: { [E.identity]: ['172.26.0.0/20'] } },
  })
  // The LAN host: the client's virtual address on its loopback, the overlay and the underlay routed via the exit node.
  await lab.sh('ip', ['-n', nsL, 'addr', 'add', `${C.va}/32`, 'dev', 'lo'])
  await lab.sh('ip', ['-n', nsL, 'route', 'add', '100.64.0.0/10', 'via', EXIT_LAN])
  await lab.sh('ip', ['-n', nsL, 'route', 'add', '198.18.0.0/24', 'via', EXIT_LAN])

  const procs: AgentProc[] = []
  t.teardown(async () => {
    for (const p of procs) await p.stop()
  })
  for (const info of [E, C] as AgentInfo[]) {
    const p = lab.startAgent(info)
    procs.push(p)
    await p.waitFor(/control socket ready/)
  }
  const rules = await rawRules(lab, nsE)
  t.ok(
    rules.some((l) => l.includes('-s 100.64.0.0/10') && l.includes('! -i enclave0') && l.includes('-j DROP')),
    `the exit node drops overlay sources arriving outside its TUN (raw PREROUTING):\n${rules.join('\n')}`,
  )

  const legit = await lab.exec(nsC, 'ping', pingArgs(LAN_HOST, 3))
  t.equal(legit.code, 0, `legitimate: the client pings the LAN host through the exit node\n${legit.stdout}`)
  const own = await lab.exec(nsC, 'ping', pingArgs(E.va, 2))
  t.equal(own.code, 0, `legitimate: the client pings the exit node's virtual address\n${own.stdout}`)

  await lab.exec(nsC, 'iptables', ['-I', 'INPUT', '-i', 'enclave0', '-j', 'ACCEPT'])
  const tries: Array<[string, string[]]> = [
    ["the exit node's LAN address", ['-c', '3', '-i', '0.2', '-W', '1', '-I', C.va, EXIT_LAN]],
    ["the exit node's virtual address", ['-c', '3', '-i', '0.2', '-W', '1', '-I', C.va, E.va]],
    ['a host behind the exit node with TTL 1 (time exceeded)', ['-c', '3', '-i', '1.1', '-W', '1', '-t', '1', '-I', C.va, '198.18.0.1']],
  ]
  for (const [what, args] of tries) {
    const before = await tunArrivals(lab, nsC)
    await lab.exec(nsL, 'ping', args)
    await new Promise((r) => setTimeout(r, 300))
    const n = (await tunArrivals(lab, nsC)) - before
    t.equal(n, 0, `forged pings to ${what}: ${n} packets reached the client's TUN`)
  }

  const again = await lab.exec(nsC, 'ping', pingArgs(LAN_HOST, 2))
  t.equal(again.code, 0, 'the client still reaches the LAN host')
  t.equal(await procs[0].stop(), 0, 'the exit node stops cleanly')
  procs.shift()
  t.same(await rawRules(lab, nsE), [], 'stop removed the anti-spoofing rules')
})
