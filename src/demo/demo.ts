/**
 * `enclave demo`: the exit-node guide, live, in network namespaces made for the demo.
 *
 *   laptop (client) ── "internet" 198.18.0.0/30 ── office exit node ── LAN 172.26.0.0/20 ── printer 172.26.0.250
 *
 * Each step prints the commands a user would type and their real output. Everything is torn down
 * at the end, on error and on Ctrl-C: agents are stopped by PID, namespaces deleted.
 */
import { type ChildProcess, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeProfile } from '../control/profile/profile.js'
import { generatePrivateKey, publicKeyFromPrivate } from '../control/keys.js'
import { identityFromPublicKey, virtualAddressFromPublicKey } from '../control/identity.js'
import { intToIp } from '../common/ipv4.js'
import { NetnsSet } from '../platform/linux/netns.js'

const BIN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))

interface Node {
  name: string
  ns: string
  dir: string
  runDir: string
  sk: string
  pk: string
  id: string
  va: string
  proc?: ChildProcess
  log: string[]
}

export interface DemoOptions {
  out: (s: string) => void
  pauseMs: number
}

export class Demo {
  private net = new NetnsSet(`encdemo${process.pid}`)
  private tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-demo-'))
  private nodes: Node[] = []
  private tornDown = false
  constructor(private opts: DemoOptions) {}

  private say(s = '') {
    this.opts.out(s)
  }

  private step(title: string) {
    this.say('')
    this.say(process.stdout.isTTY ? `\u001b[1m== ${title}\u001b[0m` : `== ${title}`)
  }

  private must(cmd: string, args: string[]) {
    return this.net.sh(cmd, args)
  }

  /** Runs a command in a node's namespace and prints it as the user would see it. */
  private async show(node: Node, display: string, cmd: string, args: string[], env: Record<string, string> = {}) {
    this.say(`\n${node.name}$ ${display}`)
    const r = await this.net.exec(node.ns, cmd, args, 30000, env)
    for (const line of (r.stdout + r.stderr).trimEnd().split('\n')) this.say(`  ${line}`)
    return r
  }

  private enclave(node: Node, args: string[]) {
    return this.show(node, `sudo enclave ${args.join(' ')}`, process.execPath, [BIN, ...args, '--config-dir', node.dir], {
      ENCLAVE_RUN_DIR: node.runDir,
    })
  }

  private async pause() {
    if (this.opts.pauseMs) await new Promise((r) => setTimeout(r, this.opts.pauseMs))
  }

  private newNode(name: string, ns: string): Node {
    const sk = generatePrivateKey()
    const pk = publicKeyFromPrivate(sk)
    const dir = path.join(this.tmp, name)
    return {
      name,
      ns,
      dir,
      runDir: path.join(dir, 'run'),
      sk: sk.toString('base64'),
      pk: pk.toString('base64'),
      id: identityFromPublicKey(pk),
      va: intToIp(virtualAddressFromPublicKey(pk)),
      log: [],
    }
  }

  private startAgent(node: Node): Promise<void> {
    const p = this.net.spawn(node.ns, process.execPath, [BIN, 'run', '-v', '2', '--config-dir', node.dir], { ENCLAVE_RUN_DIR: node.runDir })
    node.proc = p
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`agent ${node.name} did not start:\n${node.log.join('')}`)), 20000)
      const on = (d: Buffer) => {
        node.log.push(d.toString())
        if (/control socket ready/.test(node.log.join(''))) {
          clearTimeout(t)
          resolve()
        }
      }
      p.stdout!.on('data', on)
      p.stderr!.on('data', on)
      p.on('exit', (code) => {
        clearTimeout(t)
        if (!/control socket ready/.test(node.log.join('')))
          reject(new Error(`agent ${node.name} exited with ${code}:\n${node.log.join('')}`))
      })
    })
  }

  async run(): Promise<void> {
    this.step("Building the guide's network in namespaces (nothing leaves this machine)")
    const nsL = await this.net.add('laptop')
    const nsE = await this.net.add('exit')
    const nsP = await this.net.add('printer')
    await this.net.link(nsL, 'eth0', '198.18.0.1/30', nsE, 'wan0', '198.18.0.2/30')
    await this.net.link(nsE, 'eth0', '172.26.0.3/20', nsP, 'eth0', '172.26.0.250/20')
    this.say(`  laptop  ${nsL}: 198.18.0.1 ("coffee shop", underlay only)`)
    this.say(`  exit    ${nsE}: 198.18.0.2 on the underlay, 172.26.0.3 on the office LAN 172.26.0.0/20`)
    this.say(`  printer ${nsP}: 172.26.0.250 (runs no agent)`)
    const laptop = this.newNode('laptop', nsL)
    const exit = this.newNode('exit', nsE)
    const printer: Node = { ...this.newNode('printer', nsP) }
    this.nodes.push(laptop, exit)

    this.step('Step 2: set up your exit node')
    writeProfile(path.join(exit.dir, 'profiles', 'Universe.profile'), {
      PrivateKey: exit.sk,
      Peers: [{ PublicKey: laptop.pk, Identity: laptop.id, Description: 'laptop' }],
      ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
    })
    this.say(`  Profile ${exit.dir}/profiles/Universe.profile now has:`)
    this.say('    "ExitNode": { "ProvidesRoutes": [ "172.26.0.0/20" ] }')
    await this.show(exit, 'sudo sysctl -w net.ipv4.ip_forward=1', 'sysctl', ['-w', 'net.ipv4.ip_forward=1'])
    await this.show(exit, 'sudo iptables -t nat -A POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -j SNAT --to 172.26.0.3', 'iptables', [
      '-t',
      'nat',
      '-A',
      'POSTROUTING',
      '-s',
      '100.64.0.0/10',
      '-d',
      '172.26.0.0/20',
      '-j',
      'SNAT',
      '--to',
      '172.26.0.3',
    ])
    this.say('\nexit$ sudo enclave start')
    await this.startAgent(exit)
    await this.enclave(exit, ['status'])
    this.say(`\n  Note the exit node's Local identity: ${exit.id}`)
    await this.pause()

    this.step('Step 3: set up the client')
    writeProfile(path.join(laptop.dir, 'profiles', 'Universe.profile'), {
      PrivateKey: laptop.sk,
      Peers: [{ PublicKey: exit.pk, Identity: exit.id, Endpoint: '198.18.0.2:51820', Description: 'office exit node' }],
      ExitNode: { AvailableRoutes: { [exit.id]: ['172.26.0.0/20'] } },
    })
    this.say(`    "ExitNode": { "AvailableRoutes": { "${exit.id}": [ "172.26.0.0/20" ] } }`)
    this.say('\nlaptop$ sudo enclave start')
    await this.startAgent(laptop)
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
    if (this.tornDown) return
    this.tornDown = true
    for (const n of this.nodes) {
      if (n.proc?.pid && n.proc.exitCode === null)
        try {
          process.kill(n.proc.pid, 'SIGTERM')
        } catch {
          /* gone */
        }
    }
    const deadline = Date.now() + 3000
    for (const n of this.nodes) {
      while (n.proc?.pid && Date.now() < deadline) {
        try {
          process.kill(n.proc.pid, 0)
        } catch {
          break
        }
        execFileSync('sleep', ['0.05'])
      }
    }
    this.net.teardownSync()
    fs.rmSync(this.tmp, { recursive: true, force: true })
  }
}
