/**
 * A laptop that routes 0.0.0.0/0 through an exit node keeps its hub connection (issue 20: "the agent's
 * connection to the hub keeps working while the agent routes 0.0.0.0/0 through an exit node"). The hub
 * sits behind a router, so the laptop reaches it by its default route, the very route the exit node's
 * 0.0.0.0/0 replaces. The hub connection is a TCP socket the agent cannot mark; a policy rule per hub
 * address keeps it on the underlay. Before the fix the connection went into the tunnel with the laptop's
 * underlay source, which the exit node refuses: lap1 still received the hub's change (the hub's packets
 * come by the underlay) but nothing it sent arrived: "not ok - one connection to the hub, every byte lap1
 * sent acknowledged (send queues: [86])".
 *
 *   lap1 198.18.0.1 ─┐                       ┌─ hub 198.18.1.100
 *   exit 198.18.0.3 ─┼─ br0 ─ router .0.254 / .1.1
 *        └── lan0 172.26.0.3/20 ── "web" 172.26.0.250
 */
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import t from 'tap'
import { BIN, Lab, type AgentInfo, bridge, haveCommand, pingUntil, rootSkipReason, statusJson } from '../helpers/netns.js'

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)
if (skip) {
  t.skip(`hub default-route tests: ${skip}`)
} else {
  t.test('0.0.0.0/0 through a hub-given exit node: the hub connection stays on the underlay', async (t) => {
    const lab = new Lab('hubdr')
    let hubProc: ChildProcess | undefined
    const hubOut: string[] = []
    t.teardown(async () => {
      if (hubProc?.pid && hubProc.exitCode === null) hubProc.kill('SIGKILL')
      await lab.cleanup()
    })
    const [nsHub, nsR, nsL1, nsX, nsW, nsSw] = await Promise.all(['hub', 'rtr', 'lap1', 'exit', 'web', 'sw'].map((n) => lab.addNs(n)))
    const under = await bridge(lab, nsSw, 'br0')
    await under(nsL1, 'eth0', '198.18.0.1/24')
    await under(nsX, 'eth0', '198.18.0.3/24')
    await under(nsR, 'eth0', '198.18.0.254/24')
    await lab.link(nsR, 'eth1', '198.18.1.1/24', nsHub, 'eth0', '198.18.1.100/24')
    await lab.link(nsX, 'lan0', '172.26.0.3/20', nsW, 'eth0', '172.26.0.250/20')
    await lab.sh('ip', ['netns', 'exec', nsR, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    for (const ns of [nsL1, nsX]) await lab.sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', '198.18.0.254'])
    await lab.sh('ip', ['-n', nsHub, 'route', 'add', 'default', 'via', '198.18.1.1'])
    await lab.guideExitNode(nsX, '172.26.0.3', { out: 'lan0' })

    const hubDir = path.join(lab.tmp, 'hub')
    const json = async (args: string[]) => {
      const r = await lab.exec(nsHub, process.execPath, [BIN, 'hub', ...args, '--data-dir', hubDir, '--json'])
      if (r.code !== 0) throw new Error(`hub ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
      return JSON.parse(r.stdout)
    }
    const hubKey: string = (await json(['init', '--listen', '198.18.1.100:8443'])).publicKey
    hubProc = lab.spawn(nsHub, process.execPath, [BIN, 'hub', 'serve', '--data-dir', hubDir])
    hubProc.stdout?.on('data', (d) => hubOut.push(String(d)))
    hubProc.stderr?.on('data', (d) => hubOut.push(String(d)))
    await until('the hub listens', () => hubOut.join('').includes('hub listening'), 15_000)

    const laptops = await json(['key', 'create', 'laptops', '--tags', 'laptops', '--auto-approve'])
    const exits = await json(['key', 'create', 'exit', '--tags', 'exit-node', '--auto-approve'])
    const lap1 = lab.makeAgent({ name: 'lap1', ns: nsL1 })
    const exit = lab.makeAgent({ name: 'exit', ns: nsX, extra: { ExitNode: { ProvidesRoutes: ['0.0.0.0/0'] } } })
    const enrol = async (n: AgentInfo, key: string, extra: string[]) => {
      const r = await lab.cli(n, ['enrol', key, '--hub', 'http://198.18.1.100:8443', '--hub-key', hubKey, ...extra])
      if (r.code !== 0) throw new Error(`enrol ${n.name} failed (${r.code}): ${r.stdout}${r.stderr}`)
    }
    await enrol(lap1, laptops.key, ['--accept-default-route'])
    await enrol(exit, exits.key, ['--allow-gateway'])
    const l1 = lab.startAgent(lap1, ['-v', '3'], { ENCLAVE_STATE_DIR: path.join(lap1.dir, 'state') })
    const x = lab.startAgent(exit, ['-v', '3'], { ENCLAVE_STATE_DIR: path.join(exit.dir, 'state') })
    await Promise.all([l1.waitFor(/control socket ready/), x.waitFor(/control socket ready/)])

    await json(['route', 'approve', exit.identity, '0.0.0.0/0'])
    await json(['policy', 'create', 'web', '--senders', 'laptops', '--gateway', `${exit.identity}:0.0.0.0/0`, '--acl', 'icmp'])
    await until(
      "lap1's 0.0.0.0/0 through the exit node",
      async () => (await lab.exec(nsL1, 'ip', ['route', 'get', '172.26.0.250'])).stdout.includes('dev enclave0'),
      20_000,
    )
    t.ok(await pingUntil(lab, nsL1, '172.26.0.250', 20), 'lap1 reaches the web host through its default route, the exit node')
    const viaHub = (await lab.exec(nsL1, 'ip', ['route', 'get', '198.18.1.100'])).stdout
    t.match(viaHub, /via 198\.18\.0\.254 dev eth0/, 'the hub is routed by the underlay, not the tunnel')
    t.match(l1.log, /the hub stays on the underlay beside 0\.0\.0\.0\/0/, 'the agent says so')

    // The hub connection survives the switch: a change made now arrives, and lap1's answers (its ack)
    // reach the hub. Ground truth from lap1's kernel: the connection's send queue drains (the hub
    // acknowledged every byte). Before the fix lap1 still received (the hub's packets come by the
    // underlay) but its own packets went into the tunnel and were dropped: the queue only grew.
    const rev0 = (await statusJson(lab, lap1)).hub.rev as number
    await json(['system', 'update', lap1.identity, '--set-tags', 'laptops,travel'])
    let s: any
    await until(
      'the tag change at lap1',
      async () => {
        s = await statusJson(lab, lap1)
        return s.hub.rev > rev0
      },
      15_000,
    ).catch(() => {})
    t.ok(s?.hub.rev > rev0, `a change made on the hub arrives (revision ${rev0} -> ${s?.hub.rev})`)
    const sendQ = async () => {
      const out = (await lab.exec(nsL1, 'ss', ['-Htn', 'state', 'established', 'dst', '198.18.1.100'])).stdout.trim()
      return out ? out.split('\n').map((l) => Number(l.trim().split(/\s+/)[1])) : []
    }
    let q: number[] = []
    await until(
      'a drained send queue to the hub',
      async () => {
        q = await sendQ()
        return q.length === 1 && q[0] === 0
      },
      10_000,
    ).catch(() => {})
    t.same(q, [0], `one connection to the hub, every byte lap1 sent acknowledged (send queues: ${JSON.stringify(q)})`)
    t.equal((await statusJson(lab, lap1)).hub.state, 'up', 'the hub connection is up')

    // Stopping removes the bypass rule with the others.
    await l1.stop()
    const rules = (await lab.exec(nsL1, 'ip', ['rule', 'show'])).stdout
    t.notMatch(rules, /198\.18\.1\.100/, 'no bypass rule is left after stop')
    await x.stop()
  })
}
