/**
 * Tags and policies, enforced by the receiver, with real agents in namespaces made here:
 *
 *   laptop1, laptop2 (Tags laptops), stranger (no tags) ── bridge 198.18.0.0/24 ── exit (Tags exit-node)
 *   exit: lan0 172.26.0.3/20 ── printer 172.26.0.250/20 (routes 100.64.0.0/10 back via the exit node)
 *
 * Every agent has the same Policies (as an admin hands out one list): laptops may start ICMP and
 * TCP 9100 to the exit node itself and to the printer behind it, and anything among laptops (one tag
 * on both sides: a mesh). TCP echo servers listen on 9100 and 22 on the exit node and the printer.
 */
import t from 'tap'
import type { ChildProcess } from 'node:child_process'
import { Lab, type AgentInfo, type AgentProc, bridge, peerEntry, pingArgs, rootSkipReason, statusJson } from '../helpers/netns.js'

const skip = rootSkipReason()
const PRINTER = '172.26.0.250'

const ECHO_SERVER = `
const net = require('node:net');
for (const p of process.argv.slice(1)) net.createServer((s) => { s.on('error', () => {}); s.pipe(s) }).listen(Number(p));`

/** Prints "open" when the echo comes back, "closed" after 1.5 s without it. */
const TCP_PROBE = `
const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
setTimeout(() => { console.log('closed'); process.exit(0) }, 1500);
s.on('connect', () => s.write('x'));
s.on('data', () => { console.log('open'); process.exit(0) });
s.on('error', (e) => { console.log('closed ' + e.code); process.exit(0) });`

/** A long flow: writes a byte every 100 ms and prints the running count of echoed bytes. */
const TCP_STREAM = `
const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let n = 0;
s.on('connect', () => { console.log('connected'); setInterval(() => s.write('x'), 100) });
s.on('data', (d) => { n += d.length; console.log('echo ' + n) });
s.on('error', (e) => console.log('error ' + e.code));`

/** Sends argv[3] later fragments (offset 1480, UDP, 600 bytes) from argv[1] to argv[2] through a raw socket. */
const LATER_FRAGMENTS = `
import socket, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(n):
    body = bytes([0x23, 0x8c, 0x23, 0x8c]) + bytes(596)
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(body), 0x4000 + i, 185, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(hdr + body, (dst, 0))
`

function policies(printerAcls: unknown[]) {
  return [
    {
      Description: 'laptops to the exit node',
      SenderTags: ['laptops'],
      ReceiverTags: ['exit-node'],
      Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '9100' }],
    },
    {
      Description: 'laptops to the printer',
      SenderTags: ['laptops'],
      ReceiverTags: ['exit-node'],
      Acls: printerAcls,
      GatewayRoutes: ['172.26.0.0/20'],
      GatewayAllowedIpRanges: [{ IpRange: `${PRINTER}/32` }],
    },
    { Description: 'laptop mesh', SenderTags: ['laptops'], ReceiverTags: ['laptops'], Acls: [{ Protocol: 'Any' }] },
  ]
}
const PRINTER_ACLS = [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '9100' }]

t.test('tags and policies between real agents', { skip }, async (t) => {
  const lab = new Lab('pol')
  t.teardown(() => lab.cleanup())
  const names = ['laptop1', 'laptop2', 'stranger', 'exit', 'printer', 'wan'] as const
  const ns = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await lab.addNs(n)]))) as Record<
    (typeof names)[number],
    string
  >
  const plug = await bridge(lab, ns.wan, 'br0')
  const under: Record<string, string> = { laptop1: '198.18.0.11', laptop2: '198.18.0.12', stranger: '198.18.0.13', exit: '198.18.0.2' }
  for (const [n, a] of Object.entries(under)) await plug(ns[n as keyof typeof ns], 'eth0', `${a}/24`)
  await lab.link(ns.exit, 'lan0', '172.26.0.3/20', ns.printer, 'eth0', `${PRINTER}/20`)
  await lab.exec(ns.exit, 'sysctl', ['-w', 'net.ipv4.ip_forward=1'])
  await lab.sh('ip', ['-n', ns.printer, 'route', 'add', '100.64.0.0/10', 'via', '172.26.0.3'])

  const L1 = lab.makeAgent({ name: 'laptop1', ns: ns.laptop1 })
  const L2 = lab.makeAgent({ name: 'laptop2', ns: ns.laptop2 })
  const S = lab.makeAgent({ name: 'stranger', ns: ns.stranger })
  const E = lab.makeAgent({ name: 'exit', ns: ns.exit })
  const exitProfile = (printerAcls: unknown[]) => ({
    Tags: ['exit-node'],
    Peers: [peerEntry(L1, { Tags: ['laptops'] }), peerEntry(L2, { Tags: ['laptops'] }), peerEntry(S)],
    ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
    Policies: policies(printerAcls),
  })
  lab.writeAgentProfile(E, exitProfile(PRINTER_ACLS))
  const exitPeer = peerEntry(E, { Endpoint: `${under.exit}:51820`, Tags: ['exit-node'] })
  const routes = { ExitNode: { AvailableRoutes: { [E.identity]: ['172.26.0.0/20'] } } }
  lab.writeAgentProfile(L1, {
    Tags: ['laptops'],
    Peers: [exitPeer, peerEntry(L2, { Endpoint: `${under.laptop2}:51820`, Tags: ['laptops'] })],
    ...routes,
    Policies: policies(PRINTER_ACLS),
  })
  lab.writeAgentProfile(L2, {
    Tags: ['laptops'],
    Peers: [exitPeer, peerEntry(L1, { Endpoint: `${under.laptop1}:51820`, Tags: ['laptops'] })],
    ...routes,
    Policies: policies(PRINTER_ACLS),
  })
  lab.writeAgentProfile(S, { Peers: [exitPeer], ...routes, Policies: policies(PRINTER_ACLS) })

  const procs: AgentProc[] = []
  const helpers: ChildProcess[] = []
  t.teardown(async () => {
    for (const h of helpers) if (h.exitCode === null) h.kill('SIGKILL')
    for (const p of procs) await p.stop()
  })
  for (const info of [E, L1, L2, S] as AgentInfo[]) {
    const p = lab.startAgent(info)
    procs.push(p)
    await p.waitFor(/control socket ready/, 40000)
  }
  t.match(procs.find((p) => p.info === E)!.log, /policy: 3 policies, 2 enforced here/, 'the exit node logs its policy mode at start')
  for (const n of ['exit', 'printer'] as const) helpers.push(lab.spawn(ns[n], process.execPath, ['-e', ECHO_SERVER, '9100', '22']))
  await new Promise((r) => setTimeout(r, 300))

  const ping = async (from: string, to: string) => (await lab.exec(from, 'ping', pingArgs(to, 2))).code === 0
  const tcp = async (from: string, to: string, port: number) =>
    (await lab.exec(from, process.execPath, ['-e', TCP_PROBE, to, String(port)])).stdout.trim()

  await t.test('laptops reach the exit node and the printer on ICMP and TCP 9100, not on TCP 22', async (t) => {
    const [pE, pP, e9100, p9100, e22, p22] = await Promise.all([
      ping(ns.laptop1, E.va),
      ping(ns.laptop1, PRINTER),
      tcp(ns.laptop1, E.va, 9100),
      tcp(ns.laptop1, PRINTER, 9100),
      tcp(ns.laptop1, E.va, 22),
      tcp(ns.laptop1, PRINTER, 22),
    ])
    t.ok(pE, 'laptop1 pings the exit node')
    t.ok(pP, 'laptop1 pings the printer behind it')
    t.equal(e9100, 'open', 'TCP 9100 on the exit node')
    t.equal(p9100, 'open', 'TCP 9100 on the printer')
    t.match(e22, /^closed/, 'TCP 22 on the exit node is dropped')
    t.match(p22, /^closed/, 'TCP 22 on the printer is dropped')
  })

  await t.test('fragments (issue 18, findings 3 and 4): whole datagrams pass, lone later fragments do not', async (t) => {
    // 3,000-byte pings travel as three fragments each way. Before: the replies' later fragments were
    // dropped as unsolicited (their "ICMP type" read from the payload) and no ping came back.
    for (const to of [E.va, PRINTER]) {
      const r = await lab.exec(ns.laptop1, 'ping', ['-c', '3', '-i', '0.3', '-W', '2', '-s', '3000', to])
      t.match(r.stdout, /3 packets transmitted, 3 received/, `3 of 3 3,000-byte pings to ${to} answered`)
    }
    // Later fragments without their first, to a LAN host no policy grants and to the exit node itself
    // (ports 9100 in their payload, where a first fragment would have them). Before: all written to the
    // exit node's TUN, to fill the hosts' reassembly memory.
    const rx = async () => Number((await lab.exec(ns.exit, 'cat', ['/sys/class/net/enclave0/statistics/rx_packets'])).stdout)
    const before = await rx()
    const orphansBefore = (await statusJson(lab, E)).counters.fragment_orphan ?? 0
    for (const to of ['172.26.0.251', E.va]) {
      const r = await lab.exec(ns.laptop1, 'python3', ['-c', LATER_FRAGMENTS, L1.va, to, '100'])
      t.equal(r.code, 0, `laptop1 sent 100 later fragments to ${to} ${r.stderr}`)
    }
    await new Promise((r) => setTimeout(r, 500))
    const written = (await rx()) - before
    const orphans = ((await statusJson(lab, E)).counters.fragment_orphan ?? 0) - orphansBefore
    t.ok(written < 10, `at most a stray packet reached the exit node's TUN (${written} of 200 fragments)`)
    t.ok(orphans >= 190, `the exit node counted them as fragment_orphan (${orphans})`)
  })

  await t.test('a peer without the tag reaches neither the exit node nor the LAN', async (t) => {
    const [pE, pP, e9100, p9100] = await Promise.all([
      ping(ns.stranger, E.va),
      ping(ns.stranger, PRINTER),
      tcp(ns.stranger, E.va, 9100),
      tcp(ns.stranger, PRINTER, 9100),
    ])
    t.notOk(pE, 'no ping to the exit node')
    t.notOk(pP, 'no ping to the printer')
    t.match(e9100, /^closed/, 'no TCP 9100 on the exit node')
    t.match(p9100, /^closed/, 'no TCP 9100 on the printer')
  })

  await t.test('receivers only reply: the exit node cannot start traffic to a laptop', async (t) => {
    helpers.push(lab.spawn(ns.laptop1, process.execPath, ['-e', ECHO_SERVER, '9100']))
    await new Promise((r) => setTimeout(r, 200))
    const [p, c] = await Promise.all([ping(ns.exit, L1.va), tcp(ns.exit, L1.va, 9100)])
    t.notOk(p, 'the exit node cannot ping laptop1')
    t.match(c, /^closed/, 'the exit node cannot open TCP 9100 on laptop1')
    const s = await statusJson(lab, L1)
    t.ok(s.counters.policy_no_policy >= 2, `laptop1 counted the drops (policy_no_policy ${s.counters.policy_no_policy})`)
    t.ok(s.policy.droppedNoPolicy >= 2, 'and shows them in status')
  })

  await t.test('mesh with one tag on both sides: laptops reach each other both ways', async (t) => {
    // One after the other: two initiations that cross take REKEY_TIMEOUT (5 s) to settle.
    const a = await ping(ns.laptop1, L2.va)
    const b = await ping(ns.laptop2, L1.va)
    const diag = async () => {
      const [s1, s2] = await Promise.all([statusJson(lab, L1), statusJson(lab, L2)])
      return `\nlaptop1 ${JSON.stringify(s1.counters)}\nlaptop2 ${JSON.stringify(s2.counters)}\n${procs[1].log.slice(-1500)}\n${procs[2].log.slice(-1500)}`
    }
    t.ok(a, `laptop1 -> laptop2${a ? '' : await diag()}`)
    t.ok(b, 'laptop2 -> laptop1')
  })

  await t.test('status shows tags and per-policy counters', async (t) => {
    const s = await statusJson(lab, E)
    t.same(s.policy.tags, ['exit-node'])
    t.equal(s.policy.mode, 'enforce')
    t.same(
      s.peers.map((p: { tags: string[] }) => p.tags),
      [['laptops'], ['laptops'], []],
    )
    const [toExit, toPrinter, mesh] = s.policy.policies
    t.ok(toExit.hits >= 2 && toPrinter.hits >= 2, `hits: exit ${toExit.hits}, printer ${toPrinter.hits}`)
    t.ok(
      toExit.drops >= 1 && toPrinter.drops >= 1,
      `TCP 22 counted against the policies whose Acls did not match (${toExit.drops}, ${toPrinter.drops})`,
    )
    t.equal(mesh.enforcedHere, false, 'the mesh policy is not enforced on the exit node')
    t.ok(s.policy.droppedNoPolicy >= 4, `the stranger's flows: ${s.policy.droppedNoPolicy} dropped, no policy allows`)
    const text = (await lab.cli(E, ['status'])).stdout
    t.match(text, /Policies[. ]+: Policies\[0\] "laptops to the exit node": laptops -> exit-node: Icmp, Tcp 9100/)
  })

  await t.test('explain judges both directions; doctor names the policy mode', async (t) => {
    const [sent22, sent9100, recv, doctor] = await Promise.all([
      lab.cli(L1, ['explain', PRINTER, '--proto', 'tcp', '--port', '22']),
      lab.cli(L1, ['explain', PRINTER, '--port', '9100', '--json']),
      lab.cli(E, ['explain', E.va, '--from', S.identity, '--proto', 'icmp']),
      lab.cli(E, ['doctor']),
    ])
    t.match(
      sent22.stdout,
      /Sent from here[. ]+: judged by \S+ .*drop: no policy allows \(Policies\[1\] "laptops to the printer": protocol or port/,
    )
    t.match(JSON.parse(sent9100.stdout).policy.sends.verdict, /allow by Policies\[1\] "laptops to the printer"/)
    t.match(recv.stdout, new RegExp(`Received here[. ]+: from ${S.identity}: drop: no policy allows`))
    t.match(doctor.stdout, /policy: 3 policies, 2 enforced here/)
  })

  await t.test('a reload that removes a permission cuts its flow; one that adds it opens it; other flows continue', async (t) => {
    const stream = (to: string) => {
      const p = lab.spawn(ns.laptop1, process.execPath, ['-e', TCP_STREAM, to, '9100'])
      helpers.push(p)
      let out = ''
      p.stdout!.on('data', (d: Buffer) => (out += d.toString()))
      return () => Number(out.match(/echo (\d+)\n(?![\s\S]*echo)/)?.[1] ?? 0)
    }
    const toPrinter = stream(PRINTER)
    const toExit = stream(E.va)
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
    for (let i = 0; i < 50 && (toPrinter() === 0 || toExit() === 0); i++) await sleep(100)
    t.ok(toPrinter() > 0 && toExit() > 0, `both flows run (${toPrinter()}, ${toExit()} bytes echoed)`)

    lab.writeAgentProfile(E, exitProfile([{ Protocol: 'Icmp' }]))
    const r1 = await lab.cli(E, ['reload'])
    t.equal(r1.code, 0, `reload without TCP 9100 to the printer: ${r1.stderr}`)
    await sleep(500)
    const [p1, e1] = [toPrinter(), toExit()]
    await sleep(1200)
    t.equal(toPrinter(), p1, `the printer flow is cut (${p1} -> ${toPrinter()} bytes)`)
    t.ok(toExit() >= e1 + 8, `the exit-node flow continues (${e1} -> ${toExit()} bytes)`)
    t.match(await tcp(ns.laptop1, PRINTER, 9100), /^closed/, 'a new connection to the printer is dropped')
    t.ok(await ping(ns.laptop1, PRINTER), 'ICMP to the printer is still allowed')

    lab.writeAgentProfile(E, exitProfile(PRINTER_ACLS))
    const e2 = toExit()
    const r2 = await lab.cli(E, ['reload'])
    t.equal(r2.code, 0, 'reload that gives TCP 9100 back')
    t.equal(await tcp(ns.laptop1, PRINTER, 9100), 'open', 'a new connection to the printer opens')
    for (let i = 0; i < 50 && toExit() < e2 + 10; i++) await sleep(100) // a line every 200 ms: a busy machine is slower
    t.ok(toExit() >= e2 + 10, `the exit-node flow continued through both reloads (${e2} -> ${toExit()} bytes)`)
  })
})
