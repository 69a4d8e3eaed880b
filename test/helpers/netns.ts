/**
 * Network-namespace lab for tests: namespaces and veths made here, named with a prefix and the
 * test process id, and deleted on teardown (also on SIGINT/SIGTERM and process exit). Every
 * packet stays inside these namespaces. Processes are started here and ended by their PID only.
 */
import { type ChildProcess, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { writeProfile } from '../../src/control/profile/profile.js'
import { generatePrivateKey, publicKeyFromPrivate } from '../../src/control/keys.js'
import { identityFromPublicKey, virtualAddressFromPublicKey } from '../../src/control/identity.js'
import { intToIp } from '../../src/common/ipv4.js'
import { type ExecOut, NetnsSet } from '../../src/platform/linux/netns.js'

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
export const BIN = path.join(ROOT, 'bin', 'run.js')

export function rootSkipReason(): string | false {
  if (process.platform !== 'linux') return 'Linux only'
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, TUN devices): run the suite with sudo'
  if (!fs.existsSync('/dev/net/tun')) return 'no /dev/net/tun on this machine'
  return false
}

export function haveCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export type { ExecOut }

let labCounter = 0
const liveLabs = new Set<Lab>()
function cleanupAllSync() {
  for (const lab of liveLabs) lab.cleanupSync()
}
process.once('exit', cleanupAllSync)
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    cleanupAllSync()
    process.exit(130)
  })

export interface AgentSpec {
  name: string
  ns: string
  port?: number
  extra?: Record<string, unknown>
}

export interface AgentInfo {
  name: string
  ns: string
  dir: string
  runDir: string
  privateKey: string
  publicKey: string
  identity: string
  va: string
  port: number
}

export class AgentProc {
  log = ''
  private waiters: Array<{ re: RegExp; resolve: () => void }> = []
  exited: Promise<number | null>
  constructor(
    readonly info: AgentInfo,
    readonly proc: ChildProcess,
  ) {
    const onData = (d: Buffer) => {
      this.log += d.toString()
      this.waiters = this.waiters.filter((w) => (w.re.test(this.log) ? (w.resolve(), false) : true))
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', onData)
    this.exited = new Promise((r) => proc.on('exit', (code) => r(code)))
  }

  waitFor(re: RegExp, timeoutMs = 15000): Promise<void> {
    if (re.test(this.log)) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for ${re} in the log of ${this.info.name}:\n${this.log.slice(-3000)}`)),
        timeoutMs,
      )
      this.waiters.push({
        re,
        resolve: () => {
          clearTimeout(timer)
          resolve()
        },
      })
    })
  }

  async stop(signal: NodeJS.Signals = 'SIGINT'): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.pid) process.kill(this.proc.pid, signal)
    const t = setTimeout(() => this.proc.pid && this.proc.exitCode === null && process.kill(this.proc.pid, 'SIGKILL'), 8000)
    const code = await this.exited
    clearTimeout(t)
    return code
  }
}

export class Lab {
  readonly prefix: string
  readonly tmp: string
  readonly net: NetnsSet
  constructor(tag: string) {
    this.prefix = `enct${tag}${process.pid}${labCounter++}`
    this.net = new NetnsSet(this.prefix)
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${this.prefix}-`))
    liveLabs.add(this)
  }

  nsName(n: string): string {
    return this.net.name(n)
  }

  addNs(n: string): Promise<string> {
    return this.net.add(n)
  }

  link(nsA: string, ifA: string, addrA: string, nsB: string, ifB: string, addrB: string): Promise<void> {
    return this.net.link(nsA, ifA, addrA, nsB, ifB, addrB)
  }

  exec(ns: string, cmd: string, args: string[], timeoutMs = 30000, env?: Record<string, string>): Promise<ExecOut> {
    return this.net.exec(ns, cmd, args, timeoutMs, env)
  }

  sh(cmd: string, args: string[]): Promise<string> {
    return this.net.sh(cmd, args)
  }

  spawn(ns: string, cmd: string, args: string[], env?: Record<string, string>): ChildProcess {
    return this.net.spawn(ns, cmd, args, env)
  }

  /** Creates a profile for an agent (keys fresh) in this lab's temp dir. */
  makeAgent(spec: AgentSpec): AgentInfo {
    const sk = generatePrivateKey()
    const pk = publicKeyFromPrivate(sk)
    const dir = path.join(this.tmp, spec.name)
    const info: AgentInfo = {
      name: spec.name,
      ns: spec.ns,
      dir,
      runDir: path.join(dir, 'run'),
      privateKey: sk.toString('base64'),
      publicKey: pk.toString('base64'),
      identity: identityFromPublicKey(pk),
      va: intToIp(virtualAddressFromPublicKey(pk)),
      port: spec.port ?? 51820,
    }
    this.writeAgentProfile(info, { ...(spec.extra ?? {}) })
    return info
  }

  writeAgentProfile(info: AgentInfo, extra: Record<string, unknown>): void {
    writeProfile(path.join(info.dir, 'profiles', 'Universe.profile'), {
      PrivateKey: info.privateKey,
      LocalPort: info.port,
      Peers: [],
      ExitNode: {},
      ...extra,
    })
  }

  startAgent(info: AgentInfo, args: string[] = ['-v', '3']): AgentProc {
    const p = this.spawn(info.ns, process.execPath, [BIN, 'run', '--config-dir', info.dir, ...args], {
      ENCLAVE_RUN_DIR: info.runDir,
      ENCLAVE_TEST_HOOKS: '1',
    })
    return new AgentProc(info, p)
  }

  cli(info: AgentInfo, args: string[]): Promise<ExecOut> {
    return this.exec(info.ns, process.execPath, [BIN, ...args, '--config-dir', info.dir], 30000, { ENCLAVE_RUN_DIR: info.runDir })
  }

  async cleanup(): Promise<void> {
    this.cleanupSync()
  }

  cleanupSync(): void {
    if (!liveLabs.has(this)) return
    liveLabs.delete(this)
    this.net.teardownSync()
    fs.rmSync(this.tmp, { recursive: true, force: true })
  }
}

export function peerEntry(info: AgentInfo, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { PublicKey: info.publicKey, Identity: info.identity, Description: info.name, ...extra }
}

export async function statusJson(lab: Lab, info: AgentInfo): Promise<any> {
  const r = await lab.cli(info, ['status', '--json'])
  if (r.code !== 0) throw new Error(`status failed (${r.code}): ${r.stderr}${r.stdout}`)
  return JSON.parse(r.stdout)
}

export function pingArgs(dst: string, count = 3): string[] {
  return ['-c', String(count), '-i', '0.2', '-W', '2', dst]
}

/** Makes a bridge inside `ns` and returns a function that plugs a new veth from another namespace into it. */
export async function bridge(lab: Lab, ns: string, name: string, addr?: string) {
  await lab.sh('ip', ['-n', ns, 'link', 'add', name, 'type', 'bridge'])
  if (addr) await lab.sh('ip', ['-n', ns, 'addr', 'add', addr, 'dev', name])
  await lab.sh('ip', ['-n', ns, 'link', 'set', name, 'up'])
  let n = 0
  return async (other: string, ifname: string, otherAddr: string) => {
    const port = `${name}p${n++}`
    await lab.link(other, ifname, otherAddr, ns, port, '')
    await lab.sh('ip', ['-n', ns, 'link', 'set', port, 'master', name])
  }
}

/** A tiny UDP echo server that answers with the address it saw (to check SNAT from the LAN side). */
export const UDP_WHOAMI = `
const d = require('node:dgram').createSocket('udp4');
d.on('message', (m, r) => d.send(r.address, r.port, r.address));
d.bind(Number(process.argv[1]));`

export const UDP_ASK = `
const d = require('node:dgram').createSocket('udp4');
const t = setTimeout(() => { console.log('timeout'); process.exit(1) }, 3000);
d.on('message', (m) => { console.log(m.toString()); clearTimeout(t); d.close() });
d.send('who am i', Number(process.argv[2]), process.argv[1]);`
