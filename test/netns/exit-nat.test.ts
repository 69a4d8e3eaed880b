/**
 * Reply-only with a generic LAN NAT rule on the exit node (issue 18, finding 5).
 *
 *   client (198.18.0.1) ── underlay veth ── exit (198.18.0.2; lan0 172.26.0.3/20) ── lan host 172.26.0.250/20
 *
 * The exit node carries the guide's SNAT rule and, as many hosts do (Docker's default rule matches too),
 * `-t nat -A POSTROUTING -s 172.26.0.0/20 -j MASQUERADE` with no `-o`. A LAN host's packet into the overlay
 * then leaves the TUN with the exit node's own virtual address as source, which the workers pass as the
 * node's own traffic. The agent's FORWARD rule (no new connections forwarded into the TUN) stops it before
 * NAT. What reaches the client's TUN is counted by iptables rules in the client's namespace.
 */
import t from 'tap'
import { Lab, type AgentProc, haveCommand, peerEntry, pingArgs, rootSkipReason, statusJson } from '../helpers/netns.js'

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)

const LAN_HOST = '172.26.0.250'
const GENERIC_NAT = ['-s', '172.26.0.0/20', '-j', 'MASQUERADE']
const PORT = 7070

const LISTEN = `
const s = require('node:net').createServer((c) => { console.log('accepted ' + c.remoteAddress); c.end('hi') });
s.listen(Number(process.argv[1]), () => console.log('listening'));`

const CONNECT = `
const c = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
const t = setTimeout(() => { console.log('timeout'); process.exit(1) }, 3000);
c.on('connect', () => { console.log('connected'); clearTimeout(t); c.destroy() });
c.on('error', (e) => { console.log('error ' + e.code); clearTimeout(t); process.exit(1) });`

/** Packets counted by the client's INPUT rule whose line holds `mark`. */
async function counted(lab: Lab, ns: string, mark: string): Promise<number> {
  const r = await lab.exec(ns, 'iptables', ['-L', 'INPUT', '-n', '-v', '-x'])
  const line = r.stdout.split('\n').find((l) => l.includes('enclave0') && l.includes(mark))
  if (!line) throw new Error(`no counting rule ${mark}:\n${r.stdout}`)
  return Number(line.trim().split(/\s+/)[0])
}

t.test('a generic LAN MASQUERADE rule on the exit node does not let LAN hosts start flows into the overlay', { skip }, async (t) => {
  const lab = new Lab('xn')
  t.teardown(() => lab.cleanup())
  const [nsC, nsE, nsL] = await Promise.all(['client', 'exit', 'lan'].map((n) => lab.addNs(n)))
  await lab.link(nsC, 'eth0', '198.18.0.1/24', nsE, 'eth0', '198.18.0.2/24')
  await lab.link(nsE, 'lan0', '172.26.0.3/20', nsL, 'eth0', `${LAN_HOST}/20`)
  await lab.guideExitNode(nsE, '172.26.0.3', { out: 'lan0' })
  const nat = await lab.exec(nsE, 'iptables', ['-t', 'nat', '-A', 'POSTROUTING', ...GENERIC_NAT])
  t.equal(nat.code, 0, `the generic LAN MASQUERADE rule is in place ${nat.stderr}`)
  await lab.sh('ip', ['-n', nsL, 'route', 'add', '100.64.0.0/10', 'via', '172.26.0.3'])

  const C = lab.makeAgent({ name: 'client', ns: nsC })
  const E = lab.makeAgent({ name: 'exit', ns: nsE })
  lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] } })
  lab.writeAgentProfile(C, {
    Peers: [peerEntry(E, { Endpoint: '198.18.0.2:51820' })],
    ExitNode: { AvailableRoutes: { [E.identity]: ['172.26.0.0/20'] } },
  })
  const procs: AgentProc[] = []
  t.teardown(async () => {
    for (const p of procs) await p.stop()
  })
  for (const info of [E, C]) {
    const p = lab.startAgent(info)
    procs.push(p)
    await p.waitFor(/control socket ready/)
  }

  const r = await lab.exec(nsC, 'ping', pingArgs(LAN_HOST, 3))
  t.equal(r.code, 0, `peer -> LAN: the client pings the LAN host with the generic rule present\n${r.stdout}`)

  // The client listens on TCP; its namespace counts echo requests and SYNs that arrive on its TUN.
  const server = lab.spawn(nsC, process.execPath, ['-e', LISTEN, String(PORT)])
  let accepted = ''
  server.stdout?.on('data', (d: Buffer) => {
    accepted += d.toString()
  })
  await lab.exec(nsC, 'iptables', ['-I', 'INPUT', '-i', 'enclave0', '-p', 'icmp', '--icmp-type', 'echo-request', '-j', 'ACCEPT'])
  await lab.exec(nsC, 'iptables', ['-I', 'INPUT', '-i', 'enclave0', '-p', 'tcp', '--syn', '--dport', String(PORT), '-j', 'ACCEPT'])
  for (let i = 0; i < 50 && !accepted.includes('listening'); i++) await new Promise((res) => setTimeout(res, 100))
  t.match(accepted, /listening/, 'the client listens')

  const ping = await lab.exec(nsL, 'ping', ['-c', '3', '-i', '0.2', '-W', '1', C.va])
  const echoes = await counted(lab, nsC, 'icmptype 8')
  t.equal(echoes, 0, `LAN host -> client ping: echo requests that reached the client: ${echoes} of 3 (ping exit ${ping.code})`)
  t.not(ping.code, 0, `LAN host -> client ping gets no answer\n${ping.stdout}`)

  const tcp = await lab.exec(nsL, process.execPath, ['-e', CONNECT, C.va, String(PORT)])
  const syns = await counted(lab, nsC, `dpt:${PORT}`)
  t.equal(syns, 0, `LAN host -> client TCP: SYNs that reached the client: ${syns}`)
  t.not(tcp.stdout.trim(), 'connected', `LAN host -> client TCP does not connect (${tcp.stdout.trim()})`)
  t.notMatch(accepted, /accepted/, 'the client accepted no connection')

  // The kernel rule that stops them: tagged, in FORWARD, counting the LAN host's attempts.
  const fwd = await lab.exec(nsE, 'iptables', ['-w', '-t', 'mangle', '-L', 'FORWARD', '-n', '-v', '-x'])
  const rule = fwd.stdout.split('\n').find((l) => l.includes('enclave0') && l.includes('DROP') && l.includes(`enclave:enclave0`))
  t.ok(rule && Number(rule.trim().split(/\s+/)[0]) >= 1, `a tagged FORWARD rule dropped them:\n${fwd.stdout}`)

  // doctor and status name the generic rule, in the same words.
  const doc = JSON.parse((await lab.cli(E, ['doctor', '--json'])).stdout)
  const named = (doc.checks as Array<{ name: string; result: string; detail: string }>).find((c) =>
    c.detail.includes('-s 172.26.0.0/20 -j MASQUERADE'),
  )
  t.ok(named, `doctor names the generic NAT rule:\n${JSON.stringify(doc.checks, null, 1)}`)
  t.equal(named?.result, 'warn', 'a warning while the FORWARD rule holds reply-only')
  const guard = (doc.checks as Array<{ name: string; result: string }>).find((c) => c.name === 'reply-only (FORWARD)')
  t.equal(guard?.result, 'pass', 'doctor: the FORWARD rule is in place')
  const st = await statusJson(lab, E)
  t.ok(
    (st.exitNode.warnings as string[]).some((w) => named && w.startsWith(named.detail)),
    `status warns in the same words:\n${st.exitNode.warnings.join('\n')}`,
  )

  const again = await lab.exec(nsC, 'ping', pingArgs(LAN_HOST, 2))
  t.equal(again.code, 0, 'peer -> LAN replies still flow afterwards')

  // At stop the rule goes; after a kill -9 it stays (and keeps dropping) until `enclave stop` cleans up.
  const tagged = async () => (await lab.exec(nsE, 'iptables', ['-w', '-t', 'mangle', '-S', 'FORWARD'])).stdout
  t.equal(await procs[0].stop(), 0, 'the exit node stops cleanly')
  t.notMatch(await tagged(), /enclave:enclave0/, 'no tagged FORWARD rule after stop')
  procs[0] = lab.startAgent(E)
  await procs[0].waitFor(/control socket ready/)
  t.match(await tagged(), /enclave:enclave0/, 'the restarted exit node has it again')
  await procs[0].stop('SIGKILL')
  t.match(await tagged(), /enclave:enclave0/, 'after kill -9 the rule stays')
  const stop = await lab.cli(E, ['stop'])
  t.equal(stop.code, 0, `enclave stop after the crash: ${stop.stdout}${stop.stderr}`)
  t.notMatch(await tagged(), /enclave:enclave0/, 'the crash clean-up removed it')
})
