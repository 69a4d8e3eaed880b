/**
 * `enclave demo`: the exit-node guide, live, in network namespaces made for the demo.
 *
 *   laptop (client) ── "internet" 198.18.0.0/30 ── office exit node ── LAN 172.26.0.0/20 ── printer 172.26.0.250
 *
 * Each step prints the commands a user would type and their real output. Everything is torn down
 * at the end, on error and on Ctrl-C: agents are stopped by PID, namespaces deleted.
 */
import { Lab, type NodeInfo, peerEntry } from '../lab/lab.js'
import { guideSnatArgs } from '../ops/os-footprint.js'

export interface DemoOptions {
  out: (s: string) => void
  pauseMs: number
}

/** Where a command runs: a node or a plain host in one of the demo's namespaces. */
type Host = Pick<NodeInfo, 'name' | 'ns'>

export class Demo {
  private lab: Lab
  constructor(private opts: DemoOptions) {
    this.lab = new Lab('', { kind: 'encdemo', onInterrupt: () => this.say('\nInterrupted: cleaning up') })
  }

  private say(s = '') {
    this.opts.out(s)
  }

  private step(title: string) {
    this.say('')
    this.say(process.stdout.isTTY ? `\u001b[1m== ${title}\u001b[0m` : `== ${title}`)
  }

  private must(cmd: string, args: string[]) {
    return this.lab.sh(cmd, args)
  }

  /** Runs a command in a namespace and prints it as the user would see it. */
  private async show(host: Host, display: string, cmd: string, args: string[], env: Record<string, string> = {}) {
    this.say(`\n${host.name}$ ${display}`)
    const r = await this.lab.exec(host.ns, cmd, args, 30000, env)
    for (const line of (r.stdout + r.stderr).trimEnd().split('\n')) this.say(`  ${line}`)
    return r
  }

  private async enclave(node: NodeInfo, args: string[]) {
    this.say(`\n${node.name}$ sudo enclave ${args.join(' ')}`)
    const r = await this.lab.cli(node, args)
    for (const line of (r.stdout + r.stderr).trimEnd().split('\n')) this.say(`  ${line}`)
    return r
  }

  private async pause() {
    if (this.opts.pauseMs) await new Promise((r) => setTimeout(r, this.opts.pauseMs))
  }

  private startAgent(node: NodeInfo): Promise<void> {
    return this.lab.startAgent(node, ['-v', '2']).waitFor(/control socket ready/, 20000)
  }

  async run(): Promise<void> {
    this.step("Building the guide's network in namespaces (nothing leaves this machine)")
    const nsL = await this.lab.addNs('laptop')
    const nsE = await this.lab.addNs('exit')
    const nsP = await this.lab.addNs('printer')
    await this.lab.link(nsL, 'eth0', '198.18.0.1/30', nsE, 'wan0', '198.18.0.2/30')
    await this.lab.link(nsE, 'eth0', '172.26.0.3/20', nsP, 'eth0', '172.26.0.250/20')
    this.say(`  laptop  ${nsL}: 198.18.0.1 ("coffee shop", underlay only)`)
    this.say(`  exit    ${nsE}: 198.18.0.2 on the underlay, 172.26.0.3 on the office LAN 172.26.0.0/20`)
    this.say(`  printer ${nsP}: 172.26.0.250 (runs no agent)`)
    const laptop = this.lab.makeNode({ name: 'laptop', ns: nsL })
    const exit = this.lab.makeNode({ name: 'exit', ns: nsE })
    const printer: Host = { name: 'printer', ns: nsP }

    this.step('Step 2: set up your exit node')
    this.lab.writeProfile(exit, {
      Peers: [peerEntry(laptop)],
      ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
    })
    this.say(`  Profile ${this.lab.profilePath(exit)} now has:`)
    this.say('    "ExitNode": { "ProvidesRoutes": [ "172.26.0.0/20" ] }')
    await this.show(exit, 'sudo sysctl -w net.ipv4.ip_forward=1', 'sysctl', ['-w', 'net.ipv4.ip_forward=1'])
    const snat = guideSnatArgs('172.26.0.3', { dst: '172.26.0.0/20' })
    await this.show(exit, `sudo iptables ${snat.join(' ')}`, 'iptables', snat)
    this.say('\nexit$ sudo enclave start')
    await this.startAgent(exit)
    await this.enclave(exit, ['status'])
    this.say(`\n  Note the exit node's Local identity: ${exit.identity}`)
    await this.pause()

    this.step('Step 3: set up the client')
    this.lab.writeProfile(laptop, {
      Peers: [peerEntry(exit, { Endpoint: '198.18.0.2:51820', Description: 'office exit node' })],
      ExitNode: { AvailableRoutes: { [exit.identity]: ['172.26.0.0/20'] } },
    })
    this.say(`    "ExitNode": { "AvailableRoutes": { "${exit.identity}": [ "172.26.0.0/20" ] } }`)
    this.say('\nlaptop$ sudo enclave start')
    await this.startAgent(laptop)
    await this.pause()

    this.step('Step 4: tag the exit node and let your laptops use it (a policy)')
    const policies = [
      {
        Description: 'laptops use the office exit node',
        SenderTags: ['laptops'],
        ReceiverTags: ['exit-node'],
        Acls: [{ Protocol: 'Icmp' }],
      },
      {
        Description: 'laptops print',
        SenderTags: ['laptops'],
        ReceiverTags: ['exit-node'],
        Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '9100', Description: 'raw printing' }],
        GatewayRoutes: ['172.26.0.0/20'],
        GatewayAllowedIpRanges: [{ IpRange: '172.26.0.250/32', Description: 'the printer' }],
      },
    ]
    this.lab.writeProfile(exit, {
      Tags: ['exit-node'],
      Peers: [peerEntry(laptop, { Tags: ['laptops'] })],
      ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
      Policies: policies,
    })
    this.say(`  Profile ${this.lab.profilePath(exit)} now also has:`)
    this.say('    "Tags": [ "exit-node" ],  "Peers": [ { ..., "Tags": [ "laptops" ] } ],')
    this.say('    "Policies": [')
    for (const pol of policies) this.say(`      ${JSON.stringify(pol)},`)
    this.say('    ]')
    await this.enclave(exit, ['reload'])
    await this.enclave(exit, ['explain', '172.26.0.250', '--from', laptop.identity, '--proto', 'tcp', '--port', '22'])
    await this.pause()

    this.step('Step 5: verify the connection')
    await this.show(laptop, `ping -c 3 ${exit.va}`, 'ping', ['-c', '3', '-i', '0.3', '-W', '2', exit.va])
    await this.enclave(laptop, ['status'])
    await this.pause()

    this.step('Step 6: use your exit node: ping the printer from the coffee shop')
    const ping = await this.show(laptop, 'ping -c 4 172.26.0.250', 'ping', ['-c', '4', '-i', '0.3', '-W', '2', '172.26.0.250'])
    await this.pause()

    this.step('Troubleshooting checklist, as in the guide')
    await this.show(laptop, 'ip route show 172.26.0.0/20', 'ip', ['route', 'show', '172.26.0.0/20'])
    await this.show(exit, 'sudo iptables -t nat -L POSTROUTING -n -v   # SNAT counters rise with the pings', 'iptables', [
      '-t',
      'nat',
      '-L',
      'POSTROUTING',
      '-n',
      '-v',
    ])
    await this.show(exit, 'ping -c 1 172.26.0.250   # the exit node reaches its LAN', 'ping', ['-c', '1', '-W', '2', '172.26.0.250'])
    this.say('\n  The printer now tries to START traffic into the overlay (it has a route to 100.64.0.0/10 via the exit node):')
    await this.must('ip', ['-n', nsP, 'route', 'add', '100.64.0.0/10', 'via', '172.26.0.3'])
    const uns = await this.show(printer, `ping -c 2 ${laptop.va}`, 'ping', ['-c', '2', '-i', '0.3', '-W', '1', laptop.va])
    await this.enclave(exit, ['status'])
    this.say('')
    this.say(ping.code === 0 ? '  ✔ the laptop reached the printer through the exit node' : '  ✘ the printer did not answer')
    this.say(
      uns.code !== 0
        ? '  ✔ the printer could not start traffic into the overlay; the exit node counted it as unsolicited'
        : '  ✘ unsolicited traffic got through',
    )
    if (ping.code !== 0 || uns.code === 0) throw new Error('the demo did not behave as the guide says')
  }

  /** Stops agents by PID and deletes the namespaces. Safe to call more than once; synchronous for signal handlers. */
  teardownSync(): void {
    this.lab.cleanupSync()
  }
}
