/**
 * What the agent says is what it did, checked on whole agents in one process (test/helpers/mesh.ts).
 */
import t from 'tap'
import { type MeshNode, Mesh, icmpEcho, logFields } from '../helpers/mesh.js'

const LAN = '172.26.0.0/20'
const PRINTER = '172.26.0.250'

function exitAndClient(mesh: Mesh): { e: MeshNode; c: MeshNode } {
  const e = mesh.node('exit')
  const c = mesh.node('laptop')
  mesh.writeProfile(e, { Peers: [mesh.peer(c)], ExitNode: { ProvidesRoutes: [LAN] } })
  mesh.writeProfile(c, { Peers: [mesh.peer(e, { Endpoint: mesh.endpoint(e) })], ExitNode: { AvailableRoutes: { [e.identity]: [LAN] } } })
  return { e, c }
}

const flows = (n: MeshNode) =>
  n.log
    .filter((l) => l.includes('msg=flow'))
    .map(logFields)
    .filter((f) => f.proto !== 'udp') // the packet that brought the session up

t.test('-v 5 flow lines describe the inner packet in both directions, outbound too (read before it is sealed)', async (t) => {
  const mesh = new Mesh('flowlog')
  t.teardown(() => mesh.close())
  const { e, c } = exitAndClient(mesh)
  await mesh.start(e, { verbosity: 5 })
  await mesh.start(c, { verbosity: 5 })
  // A session first (the first packet waits for the handshake), then one ping through the exit node.
  t.ok(await mesh.udp(c, PRINTER, { dport: 9 }, e), 'session up')
  c.log.length = 0
  e.log.length = 0
  c.dev!.sendToTun(icmpEcho(c.va, PRINTER, 8, 77, 1))
  const req = await e.dev!.nextFromTun((p) => p[9] === 1 && p[20] === 8)
  t.ok(req, 'the echo request left the exit node into its LAN')
  e.dev!.sendToTun(icmpEcho(PRINTER, c.va, 0, 77, 1))
  const rep = await c.dev!.nextFromTun((p) => p[9] === 1 && p[20] === 0)
  t.ok(rep, 'the echo reply reached the laptop')
  await mesh.until('four flow lines', () => flows(c).length >= 2 && flows(e).length >= 2)
  const want = (dir: string, src: string, dst: string, type: string, verdict: RegExp) => ({
    dir,
    proto: 'icmp',
    src,
    dst,
    icmp_type: type,
    verdict,
  })
  t.match(
    flows(c),
    [want('outbound', c.va, PRINTER, '8', /routed/), want('inbound', PRINTER, c.va, '0', /delivered/)],
    'laptop: request out, reply in',
  )
  t.match(
    flows(e),
    [want('inbound', c.va, PRINTER, '8', /routed to LAN/), want('outbound', PRINTER, c.va, '0', /routed/)],
    'exit node: request in, reply out',
  )
  for (const f of [...flows(c), ...flows(e)])
    t.equal(f.proto, 'icmp', `no line shows ciphertext as a packet (${f.dir} ${f.src} -> ${f.dst})`)
})

t.test(
  "a reload returns once the workers enforce it: a revoked flow's very next packet is dropped, a granted one's first passes",
  async (t) => {
    const mesh = new Mesh('confirm')
    t.teardown(() => mesh.close())
    const { a, b, server } = mesh.laptopAndServer()
    await mesh.start(a, { workers: 2 })
    await mesh.start(b, { workers: 2 })
    t.ok(await mesh.udp(a, b, { dport: 7 }), 'allowed at first')
    let revokedPassed = 0
    let grantedDropped = 0
    for (let i = 0; i < 20; i++) {
      server({ tagged: false })
      const r = await b.agent!.reload()
      t.equal(r.workersApplied, true, `revoke ${i}: both workers took the new tables before reload returned`)
      if (await mesh.udp(a, b, { dport: 7, sport: 41000 + i, timeoutMs: 300 })) revokedPassed++
      server()
      await b.agent!.reload()
      if (!(await mesh.udp(a, b, { dport: 7, sport: 42000 + i, timeoutMs: 2000 }))) grantedDropped++
    }
    t.equal(revokedPassed, 0, 'after 20 revocations, no next packet passed')
    t.equal(grantedDropped, 0, 'after 20 grants, no first packet was dropped')
  },
)

t.test(
  'a reload says what did not take: a route not installed and why, a file the agent does not run, ControlGroup applied live',
  async (t) => {
    const mesh = new Mesh('outcome')
    t.teardown(() => mesh.close())
    const { e, c } = exitAndClient(mesh)
    // The laptop's own LAN is 203.0.113.0/24: a route for it through the exit node would cut the laptop off.
    c.os.routes.push({ dst: '203.0.113.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', table: 'main' })
    await mesh.start(e)
    await mesh.start(c)
    mesh.writeProfile(c, {
      Peers: [mesh.peer(e, { Endpoint: mesh.endpoint(e) })],
      ExitNode: { AvailableRoutes: { [e.identity]: [LAN, '203.0.113.0/24'] } },
    })
    const r = await c.agent!.reload()
    const bad = r.routes.find((x) => x.route === '203.0.113.0/24')
    t.match(
      bad,
      { via: e.identity, installed: false, reason: /overlap|connected/ },
      'the overlapping route is reported as not installed, with the reason',
    )
    t.match(
      r.routes.find((x) => x.route === LAN),
      { installed: true },
      'the LAN route is installed',
    )
    const { describeApplied } = await import('../../src/api/apply.js')
    const said = describeApplied({ applied: true, report: { ...r } }, [{ route: '203.0.113.0/24', via: e.identity }])
    t.equal(said.failed, true, 'the CLI exits non-zero for it')
    t.match(said.lines.join('\n'), /Saved, but NOT installed: 203\.0\.113\.0\/24 through \w+: /)
    await t.rejects(
      c.agent!.reload('/somewhere/else/profiles/Universe.profile'),
      { code: 'EOTHERPROFILE' },
      'a CLI that edited another profile is told so',
    )
    const fs = await import('node:fs')
    const sock = `${c.runDir}/enclave.sock`
    t.equal(fs.statSync(sock).mode & 0o777, 0o600, 'socket root-only')
    mesh.writeProfile(c, {
      ControlGroup: 'root',
      Peers: [mesh.peer(e, { Endpoint: mesh.endpoint(e) })],
      ExitNode: { AvailableRoutes: { [e.identity]: [LAN] } },
    })
    await c.agent!.reload()
    t.equal(fs.statSync(sock).mode & 0o777, 0o660, 'ControlGroup applied by the reload (no restart)')
  },
)

t.test('status is live: exit-node warnings follow fixes made by hand; a silent peer is not shown as plainly Up', async (t) => {
  const mesh = new Mesh('live')
  t.teardown(() => mesh.close())
  const { e, c } = exitAndClient(mesh)
  e.os.lanAddress = () => '172.26.0.3'
  await mesh.start(e)
  await mesh.start(c)
  const warnings = async () => (await e.agent!.freshStatus()).exitNode.warnings
  t.match(await warnings(), [/IP forwarding is off/, /no SNAT or MASQUERADE rule/], 'the guide steps are missing: two warnings')
  // The admin runs the two commands the warnings print.
  e.os.ipForward = true
  await e.os.addNatRule(['-s', '100.64.0.0/10', '-d', LAN, '-j', 'SNAT', '--to-source', '172.26.0.3'])
  await mesh.clock.advance(2000)
  t.same(await warnings(), [], 'status drops both warnings without a reload')

  t.ok(await mesh.udp(c, PRINTER, {}, e), 'the laptop reaches the LAN')
  await e.agent!.stop('test: the exit node goes away')
  let plainUp = 0
  let noReplySeen = 0
  for (let s = 1; s <= 40; s++) {
    await mesh.advance(1000, 100)
    c.dev!.sendToTun(icmpEcho(c.va, PRINTER, 8, 9, s)) // a ping a second, unanswered
    const p = (await c.agent!.freshStatus()).peers.find((x) => x.identity === e.identity)!
    if (p.noReplySeconds !== undefined) noReplySeen++
    if (s >= 16 && p.state === 'Up' && p.noReplySeconds === undefined) plainUp++
  }
  t.equal(plainUp, 0, 'from 16 s without a reply, never shown as plainly Up')
  t.ok(noReplySeen > 0 || c.log.some((l) => l.includes('not answering')), 'shown as "no reply" or marked unresponsive')
  const { formatPeerState } = await import('../../src/views/status-format.js')
  t.equal(formatPeerState({ state: 'Up', noReplySeconds: 17 } as never), 'Up, no reply for 17 s')
})

t.test('policy counters are cumulative since start, across reloads', async (t) => {
  const mesh = new Mesh('counters')
  t.teardown(() => mesh.close())
  const { a, b } = mesh.laptopAndServer([{ Protocol: 'Udp', Ports: '7' }], 'laptops to servers')
  await mesh.start(a)
  await mesh.start(b)
  for (let i = 0; i < 3; i++) t.ok(await mesh.udp(a, b, { dport: 7, sport: 43000 + i }), `flow ${i} allowed`)
  const hits = () => mesh.status(b).policy!.policies[0].hits
  t.equal(hits(), 3, 'three new flows counted')
  await b.agent!.reload()
  t.equal(hits(), 3, 'a reload keeps them')
  t.ok(await mesh.udp(a, b, { dport: 7, sport: 43010 }))
  t.equal(hits(), 4, 'and counts on')
})

t.test('a reload says when Policies leave a peer without a tag any policy names', async (t) => {
  const mesh = new Mesh('untagged')
  t.teardown(() => mesh.close())
  const { a, b, server } = mesh.laptopAndServer()
  await mesh.start(a)
  await mesh.start(b)
  server({ tagged: false })
  const r = await b.agent!.reload()
  t.same(r.untaggedPeers, [`${a.identity} (laptop)`], 'the reload names the peer')
  const { describeApplied } = await import('../../src/api/apply.js')
  t.match(
    describeApplied({ applied: true, report: r }).lines.join('\n'),
    /Warning: Policies are in force and \w+ \(laptop\) carry no tag any policy names/,
  )
})
