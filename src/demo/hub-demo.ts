/**
 * `enclave demo --hub`: the exit-node guide with a hub, live, in network namespaces made for the demo.
 *
 *   hub 198.18.0.100 ─┐
 *   laptop 198.18.0.1 ┼── "internet" bridge 198.18.0.0/24
 *   exit 198.18.0.2 ──┘── office LAN 172.26.0.0/20 ── printer 172.26.0.250
 *
 * Nothing is configured by hand on the laptop: it enrols with a key, waits for approval, and gets its
 * peers, tags, policy and exit-node route from the hub. Each step prints the commands a user would type
 * and their real output. Everything (the hub process, agents, namespaces) is torn down at the end, on
 * error and on Ctrl-C.
 */
import type { ChildProcess } from 'node:child_process'
import path from 'node:path'
import { BIN, Lab, type NodeInfo } from '../lab/lab.js'
import { guideSnatArgs } from '../ops/os-footprint.js'
import type { DemoOptions } from './demo.js'

const HUB_ADDR = '198.18.0.100'
const HUB_URL = `http://${HUB_ADDR}:8443`

type Host = { name: string; ns: string }
/** What the demo reads of `status --json`. */
type PeerRoutes = { peers?: Array<{ identity: string; exitNodeFor?: Array<{ route: string }> }> }

export class HubDemo {
  private lab: Lab
  private hubProc?: ChildProcess
  private hubDir = ''
  private nsHub = ''

  constructor(private opts: DemoOptions) {
    this.lab = new Lab('', { kind: 'enchub', onInterrupt: () => this.say('\nInterrupted: cleaning up') })
  }

  private say(s = '') {
    this.opts.out(s)
  }

  private step(title: string) {
    this.say('')
    this.say(process.stdout.isTTY ? `\u001b[1m== ${title}\u001b[0m` : `== ${title}`)
  }

  private async pause() {
    if (this.opts.pauseMs) await new Promise((r) => setTimeout(r, this.opts.pauseMs))
  }

  private print(text: string) {
    for (const line of text.trimEnd().split('\n')) this.say(`  ${line}`)
  }

  /** Runs a command in a namespace and prints it as the user would see it. */
  private async show(host: Host, display: string, cmd: string, args: string[]) {
    this.say(`\n${host.name}$ ${display}`)
    const r = await this.lab.exec(host.ns, cmd, args, 30000)
    this.print(r.stdout + r.stderr)
    return r
  }

  /** `enclave hub …` on the hub host, printed; with `json`, run again quietly for the value the demo needs. */
  private async hub(args: string[]): Promise<string> {
    const shown = `enclave hub ${args.map((a) => (/\s/.test(a) ? `"${a}"` : a)).join(' ')}`
    this.say(`\nhub$ ${shown}`)
    const r = await this.lab.exec(this.nsHub, process.execPath, [BIN, 'hub', ...args, '--data-dir', this.hubDir])
    this.print(r.stdout + r.stderr)
    if (r.code !== 0) throw new Error(`enclave hub ${args[0]} failed (exit ${r.code})`)
    return r.stdout
  }

  private async hubJson(args: string[]): Promise<{ routes?: Array<{ identity: string }> }> {
    const r = await this.lab.exec(this.nsHub, process.execPath, [BIN, 'hub', ...args, '--data-dir', this.hubDir, '--json'])
    if (r.code !== 0) throw new Error(`enclave hub ${args[0]} failed (exit ${r.code}): ${r.stderr}`)
    return JSON.parse(r.stdout)
  }

  private async enclave(node: NodeInfo, args: string[], display = args.join(' ')) {
    this.say(`\n${node.name}$ sudo enclave ${display}`)
    const r = await this.lab.cli(node, args)
    this.print(r.stdout + r.stderr)
    if (r.code !== 0) throw new Error(`enclave ${args[0]} on ${node.name} failed (exit ${r.code})`)
    return r
  }

  private startAgent(node: NodeInfo): Promise<void> {
    const state = path.join(node.dir, 'state')
    return this.lab.startAgent(node, ['-v', '2'], { ENCLAVE_STATE_DIR: state }).waitFor(/control socket ready/, 20000)
  }

  /** Polls `status --json` of `node` until `cond` holds; throws after `ms`. */
  private async waitStatus(node: NodeInfo, what: string, cond: (s: PeerRoutes) => boolean, ms = 15000): Promise<PeerRoutes> {
    const end = Date.now() + ms
    for (;;) {
      const s = await this.lab.statusJson(node).catch(() => undefined)
      if (s && cond(s)) return s
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }

  async run(): Promise<void> {
    this.step("Building the guide's network in namespaces (nothing leaves this machine)")
    const [nsHub, nsL, nsE, nsP, nsSw] = await Promise.all(['hub', 'laptop', 'exit', 'printer', 'sw'].map((n) => this.lab.addNs(n)))
    this.nsHub = nsHub
    await this.lab.sh('ip', ['-n', nsSw, 'link', 'add', 'br0', 'type', 'bridge'])
    await this.lab.sh('ip', ['-n', nsSw, 'link', 'set', 'br0', 'up'])
    let port = 0
    for (const [ns, addr] of [
      [nsHub, HUB_ADDR],
      [nsL, '198.18.0.1'],
      [nsE, '198.18.0.2'],
    ] as const) {
      const sw = `p${port++}`
      await this.lab.link(ns, 'eth0', `${addr}/24`, nsSw, sw, '')
      await this.lab.sh('ip', ['-n', nsSw, 'link', 'set', sw, 'master', 'br0'])
    }
    await this.lab.link(nsE, 'lan0', '172.26.0.3/20', nsP, 'eth0', '172.26.0.250/20')
    this.say(`  hub     ${nsHub}: ${HUB_ADDR} (no agent, no TUN: an ordinary process)`)
    this.say(`  laptop  ${nsL}: 198.18.0.1 ("coffee shop")`)
    this.say(`  exit    ${nsE}: 198.18.0.2, and 172.26.0.3 on the office LAN 172.26.0.0/20`)
    this.say(`  printer ${nsP}: 172.26.0.250 (runs no agent)`)
    const hubHost: Host = { name: 'hub', ns: nsHub }
    const laptop = this.lab.makeNode({ name: 'laptop', ns: nsL })
    const exit = this.lab.makeNode({ name: 'exit', ns: nsE, extra: { ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] } } })

    this.step('Step 1: set up the hub')
    this.hubDir = path.join(this.lab.tmp, 'hub')
    const init = await this.hub(['init', '--listen', `${HUB_ADDR}:8443`])
    const hubKey = /Hub public key: (\S+)/.exec(init)?.[1]
    if (!hubKey) throw new Error('hub init printed no public key')
    this.say('\nhub$ enclave hub serve &')
    this.hubProc = this.lab.spawn(nsHub, process.execPath, [BIN, 'hub', 'serve', '--data-dir', this.hubDir])
    await this.waitHub()
    this.say('  (listening)')
    const keyOf = (out: string) => {
      const k = /^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$/m.exec(out)?.[0]
      if (!k) throw new Error('hub key create printed no key')
      return k
    }
    const exitKey = keyOf(await this.hub(['key', 'create', 'office exit nodes', '--tags', 'exit-node', '--auto-approve', '--uses', '1']))
    this.say('\n  Laptops wait for an admin to approve them:')
    const lapKey = keyOf(await this.hub(['key', 'create', 'laptops', '--tags', 'laptops']))
    await this.pause()

    this.step('Step 2: set up your exit node and enrol it')
    this.say(`  Profile ${this.lab.profilePath(exit)} has:`)
    this.say('    "ExitNode": { "ProvidesRoutes": [ "172.26.0.0/20" ] }')
    await this.show({ name: 'exit', ns: nsE }, 'sudo sysctl -w net.ipv4.ip_forward=1', 'sysctl', ['-w', 'net.ipv4.ip_forward=1'])
    const snat = guideSnatArgs('172.26.0.3', { dst: '172.26.0.0/20' })
    await this.show({ name: 'exit', ns: nsE }, `sudo iptables ${snat.join(' ')}`, 'iptables', snat)
    await this.enclave(
      exit,
      ['enrol', exitKey, '--hub', HUB_URL, '--hub-key', hubKey, '--allow-gateway'],
      `enrol ${exitKey} --hub ${HUB_URL} --hub-key ${hubKey} --allow-gateway`,
    )
    this.say('\nexit$ sudo enclave start')
    await this.startAgent(exit)
    this.say('\n  The exit node advertises its route; the hub holds it until an admin approves it:')
    await this.waitRoutePending(exit.identity)
    await this.hub(['route', 'list', '--pending'])
    await this.hub(['route', 'approve', exit.identity, '172.26.0.0/20'])
    await this.pause()

    this.step('Step 3: enrol the laptop (nothing else is configured on it)')
    await this.enclave(
      laptop,
      ['enrol', lapKey, '--hub', HUB_URL, '--hub-key', hubKey],
      `enrol ${lapKey} --hub ${HUB_URL} --hub-key ${hubKey}`,
    )
    this.say('\nlaptop$ sudo enclave start')
    await this.startAgent(laptop)
    await this.hub(['system', 'list', '--pending'])
    await this.hub(['system', 'approve', laptop.identity])
    await this.pause()

    this.step('Step 4: a policy: laptops may use the printer through the exit node')
    const policy = ['policy', 'create', 'laptops print', '--senders', 'laptops', '--gateway', `${exit.identity}:172.26.0.0/20`]
    const acl = ['--allow-ip', '172.26.0.250', '--acl', 'icmp', '--acl', 'tcp:9100']
    await this.hub([...policy, ...acl, '--dry-run'])
    await this.hub([...policy, ...acl])
    await this.pause()

    this.step('Step 5: verify the connection')
    await this.waitStatus(
      laptop,
      "the exit node's route on the laptop",
      (s) => s.peers?.some((p) => p.identity === exit.identity && p.exitNodeFor?.some((r) => r.route === '172.26.0.0/20')) ?? false,
    )
    await this.enclave(laptop, ['status'])
    await this.pause()

    this.step('Step 6: use your exit node: ping the printer from the coffee shop')
    const ping = await this.show(laptop, 'ping -c 4 172.26.0.250', 'ping', ['-c', '4', '-i', '0.3', '-W', '2', '172.26.0.250'])
    this.say('\n  The policy allows ICMP and TCP 9100 to the printer only; another LAN address is not granted:')
    const other = await this.show(laptop, 'ping -c 1 172.26.0.3', 'ping', ['-c', '1', '-W', '1', '172.26.0.3'])
    await this.pause()

    this.step('Step 7: the hub is only the control plane: stop it, and the tunnel keeps working')
    this.say('\nhub$ kill %1   # enclave hub serve')
    await this.stopHub()
    const still = await this.show(laptop, 'ping -c 3 172.26.0.250', 'ping', ['-c', '3', '-i', '0.3', '-W', '2', '172.26.0.250'])
    await this.show(hubHost, 'enclave hub log --limit 8   # the audit log: who changed what', process.execPath, [
      BIN,
      'hub',
      'log',
      '--limit',
      '8',
      '--data-dir',
      this.hubDir,
    ])

    this.say('')
    const ok = [
      [ping.code === 0, 'the laptop, configured only by the hub, reached the printer through the exit node'],
      [other.code !== 0, 'what no policy grants stayed closed'],
      [still.code === 0, 'with the hub down, the tunnel kept working'],
    ] as const
    for (const [pass, what] of ok) this.say(`  ${pass ? '✔' : '✘'} ${what}`)
    if (ok.some(([pass]) => !pass)) throw new Error('the demo did not behave as the guide says')
  }

  private async waitHub(): Promise<void> {
    let out = ''
    this.hubProc?.stdout?.on('data', (d) => (out += String(d)))
    this.hubProc?.stderr?.on('data', (d) => (out += String(d)))
    const end = Date.now() + 15000
    while (!out.includes('hub listening')) {
      if (this.hubProc?.exitCode !== null && this.hubProc?.exitCode !== undefined) throw new Error(`the hub exited: ${out}`)
      if (Date.now() > end) throw new Error(`the hub did not start: ${out}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  private async waitRoutePending(identity: string): Promise<void> {
    const end = Date.now() + 15000
    for (;;) {
      const r = await this.hubJson(['route', 'list', '--pending'])
      if (r.routes?.some((x: { identity: string }) => x.identity === identity)) return
      if (Date.now() > end) throw new Error('the exit node did not advertise its route to the hub')
      await new Promise((res) => setTimeout(res, 200))
    }
  }

  private async stopHub(): Promise<void> {
    const p = this.hubProc
    if (!p?.pid || p.exitCode !== null) return
    const exited = new Promise((r) => p.once('exit', r))
    p.kill('SIGTERM')
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
  }

  /** Stops the hub and the agents by PID and deletes the namespaces. Safe to call more than once. */
  teardownSync(): void {
    const p = this.hubProc
    if (p?.pid && p.exitCode === null)
      try {
        process.kill(p.pid, 'SIGKILL')
      } catch {
        /* gone */
      }
    this.lab.cleanupSync()
  }
}
