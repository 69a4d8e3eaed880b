/**
 * The one lab for namespaces and nodes, used by `enclave demo`, the benchmarks and the netns tests:
 * namespaces (named `<kind><tag><pid><n>-<name>`) joined by veths, nodes with fresh keys and a profile in
 * a temporary directory, `enclave run` started inside a namespace, the CLI run against a node, and stock
 * wireguard-go devices. Teardown stops our agents by PID (SIGTERM, then SIGKILL after 3 s), ends every
 * process left in our namespaces, deletes the namespaces, wireguard-go's UAPI sockets for our devices and
 * the temporary directory: at the end, on failure, on process exit and on SIGINT/SIGTERM.
 */
import { type ChildProcess, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { identityFromPublicKey, virtualAddressFromPublicKey } from '../config/identity.js'
import { generatePrivateKey, publicKeyFromPrivate } from '../config/keys.js'
import { intToIp } from '../common/ipv4.js'
import { writeProfile } from '../config/profile.js'
import { guideSnatArgs } from '../ops/os-footprint.js'
import { type ExecOut, NetnsSet } from '../platform/linux/netns.js'

export type { ExecOut }

/** The package root (holds bin/run.js), found from this file whether it runs from src/ (tsx) or lib/src/. */
export const ROOT = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!fs.existsSync(path.join(dir, 'bin', 'run.js')) || !fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir)
    if (up === dir) throw new Error('cannot find bin/run.js above the lab module')
    dir = up
  }
  return dir
})()
export const BIN = path.join(ROOT, 'bin', 'run.js')

export interface NodeSpec {
  name: string
  ns: string
  port?: number
  /** Profile keys written with the node (Peers, ExitNode, ...). */
  extra?: Record<string, unknown>
}

export interface NodeInfo {
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

/** `enclave run` inside a namespace, with its output collected for waitFor. */
export class AgentProc {
  log = ''
  private waiters: Array<{ re: RegExp; resolve: () => void }> = []
  readonly exited: Promise<number | null>
  constructor(
    readonly info: NodeInfo,
    readonly proc: ChildProcess,
  ) {
    const onData = (d: Buffer) => {
      this.log += d.toString()
      this.waiters = this.waiters.filter((w) => (w.re.test(this.log) ? (w.resolve(), false) : true))
    }
    proc.stdout?.on('data', onData)
    proc.stderr?.on('data', onData)
    this.exited = new Promise((r) => proc.on('exit', (code) => r(code)))
  }

  get pid(): number | undefined {
    return this.proc.pid
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** Resolves when the log matches; rejects on timeout or when the agent exits first. */
  waitFor(re: RegExp, timeoutMs = 15000): Promise<void> {
    if (re.test(this.log)) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const fail = (why: string) => reject(new Error(`${why} waiting for ${re} in the log of ${this.info.name}:\n${this.log.slice(-3000)}`))
      const timer = setTimeout(() => fail('timed out'), timeoutMs)
      const onExit = () => setImmediate(() => !re.test(this.log) && (clearTimeout(timer), fail('the agent exited')))
      this.proc.once('exit', onExit)
      this.waiters.push({
        re,
        resolve: () => {
          clearTimeout(timer)
          this.proc.off('exit', onExit)
          resolve()
        },
      })
    })
  }

  /** Stops the agent by its PID; SIGKILL after 8 s. Returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGINT'): Promise<number | null> {
    if (this.running && this.proc.pid) process.kill(this.proc.pid, signal)
    const t = setTimeout(() => this.running && this.proc.pid && process.kill(this.proc.pid, 'SIGKILL'), 8000)
    const code = await this.exited
    clearTimeout(t)
    return code
  }
}

export interface LabOptions {
  /** First part of every namespace name (default 'enct'). */
  kind?: string
  /** Called (synchronously) on SIGINT/SIGTERM before the labs are torn down and the process exits with 130. */
  onInterrupt?: () => void
}

let labCounter = 0
const liveLabs = new Set<Lab>()
let hooked = false
function hookProcess(): void {
  if (hooked) return
  hooked = true
  process.once('exit', () => {
    for (const lab of liveLabs) lab.cleanupSync()
  })
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      for (const lab of liveLabs) lab.opts.onInterrupt?.()
      for (const lab of liveLabs) lab.cleanupSync()
      process.exit(130)
    })
}

export class Lab {
  readonly prefix: string
  readonly tmp: string
  readonly net: NetnsSet
  private agents: AgentProc[] = []
  private wgSockets: string[] = []
  private wgCounter = 0

  constructor(
    tag: string,
    readonly opts: LabOptions = {},
  ) {
    this.prefix = `${opts.kind ?? 'enct'}${tag}${process.pid}${labCounter++}`
    this.net = new NetnsSet(this.prefix)
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${this.prefix}-`))
    liveLabs.add(this)
    hookProcess()
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

  sh(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
    return this.net.sh(cmd, args, timeoutMs)
  }

  spawn(ns: string, cmd: string, args: string[], env?: Record<string, string>): ChildProcess {
    return this.net.spawn(ns, cmd, args, env)
  }

  /** A node with fresh keys and its profile (extra keys merged in) in this lab's temporary directory. */
  makeNode(spec: NodeSpec): NodeInfo {
    const sk = generatePrivateKey()
    const pk = publicKeyFromPrivate(sk)
    const dir = path.join(this.tmp, spec.name)
    const info: NodeInfo = {
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
    this.writeProfile(info, spec.extra ?? {})
    return info
  }

  profilePath(info: NodeInfo): string {
    return path.join(info.dir, 'profiles', 'Universe.profile')
  }

  /** (Re)writes the node's profile: its key and port, no peers and no exit-node settings unless `extra` gives them. */
  writeProfile(info: NodeInfo, extra: Record<string, unknown>): void {
    writeProfile(this.profilePath(info), { PrivateKey: info.privateKey, LocalPort: info.port, Peers: [], ExitNode: {}, ...extra })
  }

  /** Starts `enclave run` for the node inside its namespace; ended by PID at teardown. */
  startAgent(info: NodeInfo, args: string[] = ['-v', '3'], env: Record<string, string> = {}): AgentProc {
    // ENCLAVE_LAB_NODE_ARGS: node flags for the agents a lab starts (investigations: --trace-gc, --cpu-prof).
    const nodeArgs = (process.env.ENCLAVE_LAB_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const p = this.spawn(info.ns, process.execPath, [...nodeArgs, BIN, 'run', '--config-dir', info.dir, ...args], {
      ENCLAVE_RUN_DIR: info.runDir,
      ...env,
    })
    const a = new AgentProc(info, p)
    this.agents.push(a)
    return a
  }

  /** Runs the CLI against a node (inside its namespace, with its config and run directories). */
  cli(info: NodeInfo, args: string[], timeoutMs = 30000): Promise<ExecOut> {
    // The environment, not --config-dir: commands that only use the control socket do not take that flag.
    return this.exec(info.ns, process.execPath, [BIN, ...args], timeoutMs, { ENCLAVE_RUN_DIR: info.runDir, ENCLAVE_CONFIG_DIR: info.dir })
  }

  async statusJson(info: NodeInfo): Promise<any> {
    const r = await this.cli(info, ['status', '--json'])
    if (r.code !== 0) throw new Error(`status failed (${r.code}): ${r.stderr}${r.stdout}`)
    return JSON.parse(r.stdout)
  }

  /**
   * The guide's exit-node setup done by hand in `ns`: IP forwarding on, and one SNAT rule translating
   * overlay sources (100.64.0.0/10) to `to` for traffic to the CIDR `dst`, or out of the interface `out`.
   */
  async guideExitNode(ns: string, to: string, where: { dst: string } | { out: string }): Promise<void> {
    const fwd = await this.exec(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1'])
    const nat = await this.exec(ns, 'iptables', guideSnatArgs(to, where))
    for (const r of [fwd, nat]) if (r.code !== 0) throw new Error(`exit-node setup in ${ns} failed: ${r.stderr}`)
  }

  /** A device name for stock wireguard-go unique to this process (its UAPI socket in /var/run/wireguard is not namespaced). */
  wgDeviceName(): string {
    return `wg${process.pid % 100000}x${this.wgCounter++}`
  }

  /** Starts stock wireguard-go for `dev` in `ns`; its UAPI socket is removed at teardown. */
  async wireguardGo(ns: string, dev: string): Promise<ExecOut> {
    this.wgSockets.push(path.join('/var/run/wireguard', `${dev}.sock`))
    return this.exec(ns, 'wireguard-go', [dev])
  }

  async cleanup(): Promise<void> {
    this.cleanupSync()
  }

  /** Safe to call more than once; synchronous for signal and exit handlers. */
  cleanupSync(): void {
    if (!liveLabs.has(this)) return
    liveLabs.delete(this)
    for (const a of this.agents)
      if (a.running && a.pid)
        try {
          process.kill(a.pid, 'SIGTERM')
        } catch {
          /* gone */
        }
    const deadline = Date.now() + 3000
    for (const a of this.agents) while (a.pid && alive(a.pid) && Date.now() < deadline) execFileSync('sleep', ['0.05'])
    this.net.teardownSync()
    for (const s of this.wgSockets) fs.rmSync(s, { force: true })
    fs.rmSync(this.tmp, { recursive: true, force: true })
  }
}

/** True while the process runs (a zombie, exited but not yet reaped by our blocked event loop, counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

export function peerEntry(info: NodeInfo, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { PublicKey: info.publicKey, Identity: info.identity, Description: info.name, ...extra }
}
