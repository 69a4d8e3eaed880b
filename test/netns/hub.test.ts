/**
 * The hub in network namespaces, as an admin would run it: `enclave hub init` and `enclave hub serve`
 * (a real process in its own namespace), admin commands on its data directory, and real agents
 * (`enclave run` with a TUN) that join with `enclave enrol`.
 *
 *   hub 198.18.0.100 ─┐
 *   lap1 198.18.0.1 ──┤
 *   lap2 198.18.0.2 ──┼── br0 in "sw"
 *   lap3 198.18.0.4 ──┤
 *   exit 198.18.0.3 ──┘── lan0 172.26.0.3/20 ── "printer" 172.26.0.250/20
 */
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import t from 'tap'
import { BIN, Lab, type AgentInfo, type AgentProc, bridge, haveCommand, pingUntil, rootSkipReason, statusJson } from '../helpers/netns.js'

/** Resolves once `cond` holds (polled every 100 ms); throws naming `what` after `ms`. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)
if (skip) {
  t.skip(`hub tests: ${skip}`)
} else {
  t.test('a hub, an exit node and laptops, as the guide does it with an account', async (t) => {
    const lab = new Lab('hub')
    let hubProc: ChildProcess | undefined
    const hubOut: string[] = []
    t.teardown(async () => {
      if (hubProc?.pid && hubProc.exitCode === null) hubProc.kill('SIGKILL')
      await lab.cleanup()
    })
    const [nsHub, nsL1, nsL2, nsL3, nsX, nsP, nsSw] = await Promise.all(
      ['hub', 'lap1', 'lap2', 'lap3', 'exit', 'printer', 'sw'].map((n) => lab.addNs(n)),
    )
    const under = await bridge(lab, nsSw, 'br0')
    await under(nsHub, 'eth0', '198.18.0.100/24')
    await under(nsL1, 'eth0', '198.18.0.1/24')
    await under(nsL2, 'eth0', '198.18.0.2/24')
    await under(nsX, 'eth0', '198.18.0.3/24')
    await under(nsL3, 'eth0', '198.18.0.4/24')
    await lab.link(nsX, 'lan0', '172.26.0.3/20', nsP, 'eth0', '172.26.0.250/20')
    await lab.guideExitNode(nsX, '172.26.0.3', { dst: '172.26.0.0/20' })

    const hubDir = path.join(lab.tmp, 'hub')
    const hubCli = async (args: string[]) => {
      const r = await lab.exec(nsHub, process.execPath, [BIN, 'hub', ...args, '--data-dir', hubDir])
      return r
    }
    const json = async (args: string[]) => {
      const r = await hubCli([...args, '--json'])
      if (r.code !== 0) throw new Error(`hub ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
      return JSON.parse(r.stdout)
    }
    const init = await json(['init', '--listen', '198.18.0.100:8443'])
    const hubKey: string = init.publicKey
    const startHub = () => {
      hubProc = lab.spawn(nsHub, process.execPath, [BIN, 'hub', 'serve', '--data-dir', hubDir])
      hubProc.stdout?.on('data', (d) => hubOut.push(String(d)))
      hubProc.stderr?.on('data', (d) => hubOut.push(String(d)))
      return until('the hub listens', () => hubOut.join('').includes('hub listening'), 15_000)
    }
    await startHub()

    const laptops = await json(['key', 'create', 'laptops', '--tags', 'laptops', '--auto-approve'])
    const exits = await json(['key', 'create', 'exit nodes', '--tags', 'exit-node', '--auto-approve', '--uses', '1'])
    const gated = await json(['key', 'create', 'needs approval', '--tags', 'laptops'])
    t.match(laptops.key, /^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$/)

    const nodes: Record<string, AgentInfo> = {}
    const procs: Record<string, AgentProc> = {}
    for (const [name, ns] of [
      ['lap1', nsL1],
      ['lap2', nsL2],
      ['lap3', nsL3],
      ['exit', nsX],
    ] as const)
      nodes[name] = lab.makeAgent({ name, ns, extra: name === 'exit' ? { ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] } } : {} })
    const enrolOut = async (n: AgentInfo, key: string, extra: string[] = []) => {
      const r = await lab.cli(n, ['enrol', key, '--hub', 'http://198.18.0.100:8443', '--hub-key', hubKey, ...extra])
      if (r.code !== 0) throw new Error(`enrol ${n.name} failed (${r.code}): ${r.stdout}${r.stderr}`)
      return r.stdout
    }
    t.match(await enrolOut(nodes.lap1, laptops.key), /Enrolled as \w{5} \(100\.\d+\.\d+\.\d+\) — approved, 0 peers/)
    await enrolOut(nodes.lap2, laptops.key)
    await enrolOut(nodes.exit, exits.key, ['--allow-gateway'])
    const refused = await lab.cli(nodes.lap3, ['enrol', exits.key, '--hub', 'http://198.18.0.100:8443', '--hub-key', hubKey])
    t.equal(refused.code, 1, 'a key with no uses left is refused')
    t.match(refused.stderr, /KEY_EXHAUSTED|no uses left/)
    const start = (name: string) => {
      procs[name] = lab.startAgent(nodes[name], ['-v', '3'], { ENCLAVE_STATE_DIR: path.join(nodes[name].dir, 'state') })
      return procs[name].waitFor(/control socket ready/)
    }
    for (const n of ['lap1', 'lap2', 'exit']) await start(n)

    await json(['policy', 'create', 'laptops talk', '--senders', 'laptops', '--receivers', 'laptops', '--acl', 'icmp'])
    const X = nodes.exit.identity
    const routes = await json(['route', 'list', '--pending'])
    t.same(
      routes.routes.map((r: { identity: string; cidr: string }) => `${r.identity} ${r.cidr}`),
      [`${X} 172.26.0.0/20`],
      'the route the exit node advertises waits for approval',
    )
    await json(['route', 'approve', X, '172.26.0.0/20'])
    await json([
      'policy',
      'create',
      'printer',
      '--senders',
      'laptops',
      '--gateway',
      `${X}:172.26.0.0/20`,
      '--allow-ip',
      '172.26.0.250',
      '--acl',
      'icmp',
    ])

    const va = async (n: AgentInfo) => (await statusJson(lab, n)).virtualAddress as string
    t.ok(await pingUntil(lab, nsL1, await va(nodes.lap2), 20), 'lap1 pings lap2 through hub-given peers')
    t.ok(await pingUntil(lab, nsL1, '172.26.0.250', 20), "lap1 pings the guide's printer through the exit node")
    const s1 = await statusJson(lab, nodes.lap1)
    t.equal(s1.hub.state, 'up')
    t.ok(
      s1.peers.some(
        (p: { identity: string; source: string; exitNodeFor: Array<{ route: string }> }) =>
          p.identity === X && p.source === 'hub' && p.exitNodeFor.some((r) => r.route === '172.26.0.0/20'),
      ),
      'status shows the exit node from the hub and its route',
    )

    const doc1 = JSON.parse((await lab.cli(nodes.lap1, ['doctor', '--json'])).stdout)
    t.ok(
      doc1.checks.some((c: { name: string; result: string }) => c.name === 'hub' && c.result === 'pass'),
      'doctor: connected to the hub',
    )

    await t.test('a manual key: pending and unreachable until approved', async (t) => {
      t.match(await enrolOut(nodes.lap3, gated.key), /awaiting approval/)
      await start('lap3')
      const l3va = await va(nodes.lap3)
      t.equal((await lab.exec(nsL1, 'ping', ['-c', '1', '-W', '1', l3va])).code, 1, 'nobody reaches a pending system')
      t.equal((await statusJson(lab, nodes.lap3)).hub.systemState, 'pending')
      const doc = JSON.parse((await lab.cli(nodes.lap3, ['doctor', '--json'])).stdout)
      t.ok(
        doc.checks.some((c: { name: string; result: string }) => c.name === 'hub approval' && c.result === 'warn'),
        'doctor says the system awaits approval',
      )
      await json(['system', 'approve', nodes.lap3.identity])
      t.ok(await pingUntil(lab, nsL1, l3va, 10), 'approved: lap1 reaches it')
    })

    await t.test('disable drops a system from its peers', async (t) => {
      await json(['system', 'disable', nodes.lap3.identity])
      await until(
        'lap1 dropped lap3',
        async () => !(await statusJson(lab, nodes.lap1)).peers.some((p: { identity: string }) => p.identity === nodes.lap3.identity),
        10_000,
      )
      t.pass('lap1 no longer has lap3')
      const r = await hubCli(['system', 'list'])
      t.match(r.stdout, new RegExp(`${nodes.lap3.identity}.*disabled`))
    })

    await t.test('remove drops a system everywhere, and it cannot connect again', async (t) => {
      await json(['system', 'remove', nodes.lap3.identity])
      const list = await json(['system', 'list'])
      t.notOk(
        list.systems.some((s: { identity: string }) => s.identity === nodes.lap3.identity),
        'the hub no longer lists lap3',
      )
      await until('lap3 is refused', async () => (await statusJson(lab, nodes.lap3)).hub.state === 'refused', 15_000)
      t.pass("lap3's agent says the hub refused it")
      t.notOk(
        (await statusJson(lab, nodes.lap2)).peers.some((p: { identity: string }) => p.identity === nodes.lap3.identity),
        'lap2 does not have it either',
      )
    })

    await t.test('a route the hub offers to a system enrolled without --allow-gateway is not accepted, and status says so', async (t) => {
      const L2 = nodes.lap2.identity
      await json(['route', 'add', L2, '10.77.0.0/24'])
      const s = await (async () => {
        let last: { hub: { notAccepted: string[] } } | undefined
        await until(
          'lap2 reports the offer',
          async () => {
            last = await statusJson(lab, nodes.lap2)
            return (last?.hub.notAccepted ?? []).some((n) => n.includes('10.77.0.0/24'))
          },
          10_000,
        )
        return last
      })()
      t.ok(s, `status --json: ${JSON.stringify(s?.hub.notAccepted)}`)
      const text = (await lab.cli(nodes.lap2, ['status'])).stdout
      t.match(text, /Not accepted[ .]*: offered by the hub, not accepted locally: .*10\.77\.0\.0\/24/, 'status says it in words')
      const doc = JSON.parse((await lab.cli(nodes.lap2, ['doctor', '--json'])).stdout)
      t.ok(
        doc.checks.some(
          (c: { name: string; result: string; detail: string }) => c.name === 'hub offer' && c.detail.includes('10.77.0.0/24'),
        ),
        'doctor warns about it',
      )
      const fwd = await lab.exec(nsL2, 'iptables', ['-t', 'nat', '-S'])
      t.notMatch(fwd.stdout, /10\.77\.0\.0/, 'lap2 did not become an exit node for it')
      await json(['route', 'remove', L2, '10.77.0.0/24'])
    })

    await t.test('a hand-configured local peer keeps working beside the hub peers', async (t) => {
      const nsOld = await lab.addNs('legacy')
      await under(nsOld, 'eth0', '198.18.0.5/24')
      const L1 = nodes.lap1
      const legacy = lab.makeAgent({
        name: 'legacy',
        ns: nsOld,
        extra: { Peers: [{ PublicKey: L1.publicKey, Identity: L1.identity, Endpoint: '198.18.0.1:51820', Description: 'lap1' }] },
      })
      const p = lab.startAgent(legacy)
      procs.legacy = p
      await p.waitFor(/control socket ready/)
      const add = await lab.cli(L1, ['add', legacy.publicKey, '--endpoint', '198.18.0.5:51820', '--description', 'legacy box'])
      t.equal(add.code, 0, `enclave add on lap1 ${add.stderr}`)
      t.ok(await pingUntil(lab, nsL1, legacy.va, 20), 'lap1 pings the hand-configured peer')
      t.ok(await pingUntil(lab, nsL1, await va(nodes.lap2), 5), 'and still pings lap2 from the hub')
      const peers = (await statusJson(lab, L1)).peers as Array<{ identity: string; source: string }>
      t.equal(peers.find((x) => x.identity === legacy.identity)?.source, 'local', 'status: the legacy peer is local')
      t.equal(peers.find((x) => x.identity === nodes.lap2.identity)?.source, 'hub', 'lap2 comes from the hub')
    })

    await t.test('the hub down: pings keep flowing, a restarted agent comes back from its cache; the hub back', async (t) => {
      hubProc?.kill('SIGTERM')
      await until('the hub stopped', () => hubProc?.exitCode !== null, 10_000)
      const l2 = await va(nodes.lap2)
      // 15 s: the agents' reconnection attempts (random waits capped at 1, 2, 4 and 8 s) fail meanwhile.
      const train = await lab.exec(nsL1, 'ping', ['-c', '75', '-i', '0.2', '-W', '1', l2], 60_000)
      t.match(train.stdout, / 75 received, 0% packet loss/, '75 pings over 15 s with the hub down: none lost')
      await procs.lap2.stop()
      await start('lap2')
      t.ok(await pingUntil(lab, nsL1, l2, 10), 'lap2 restarted with the hub down: its tunnel is back from the cache')
      t.equal((await statusJson(lab, nodes.lap2)).hub.state === 'up', false, 'and it knows the hub is down')
      await startHub()
      // lap2 has failed every attempt since it started: its next is a random wait whose cap doubles to 60 s
      // (so a fleet does not hammer a hub coming back), usually a few seconds here.
      await until('lap2 reconnected', async () => (await statusJson(lab, nodes.lap2)).hub.state === 'up', 65_000)
      t.pass('lap2 is connected again')
    })
  })
}
