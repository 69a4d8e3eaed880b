/**
 * The netns tests' view of the lab (src/lab/lab.ts): the same Lab, with the names the tests use.
 * Root-only files skip with tap's real skip and the reason from rootSkipReason().
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import { type NodeInfo, type NodeSpec, AgentProc, BIN, Lab as BaseLab, peerEntry, ROOT } from '../../src/lab/lab.js'
import { EVENT_REASONS } from '../../src/ipc/layout.js'

export type { ExecOut } from '../../src/lab/lab.js'
export { AgentProc, BIN, peerEntry, ROOT }
export type AgentInfo = NodeInfo
export type AgentSpec = NodeSpec

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

/** A lab whose agents run with the test hooks (`enclave debug ...`) enabled. */
export class Lab extends BaseLab {
  constructor(tag: string) {
    super(tag, { kind: 'enct' })
  }

  makeAgent(spec: AgentSpec): AgentInfo {
    return this.makeNode(spec)
  }

  writeAgentProfile(info: AgentInfo, extra: Record<string, unknown>): void {
    this.writeProfile(info, extra)
  }

  override startAgent(info: AgentInfo, args: string[] = ['-v', '3'], env: Record<string, string> = {}): AgentProc {
    return super.startAgent(info, args, { ENCLAVE_TEST_HOOKS: '1', ...env })
  }
}

export function statusJson(lab: BaseLab, info: AgentInfo): Promise<any> {
  return lab.statusJson(info)
}

/**
 * Kernel SNMP counters of packets dropped for want of buffer or route. Not UdpSndbufErrors (the kernel
 * counts a full socket once per failed send call, the agent per datagram), nor UdpInErrors (it
 * includes UdpRcvbufErrors): counting a drop twice could hide one that nobody counted.
 */
const SNMP_DROPS = ['IpInDiscards', 'IpOutNoRoutes', 'UdpRcvbufErrors']

/**
 * Every place on a path that counts a packet it dropped: the agents' drop reasons, each namespace's
 * links (rx/tx dropped: a full TUN queue, a veth peer's full backlog), queueing disciplines, IP and UDP
 * (full socket buffers, no route) and connection tracking; a veth counts a full backlog of its peer
 * itself. Each drop is counted in one place only. Take it before and after
 * traffic; `dropDelta` says how many packets were counted as dropped between the two, and where.
 */
export async function dropCounters(lab: BaseLab, namespaces: string[], agents: AgentInfo[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const ns of namespaces) {
    for (const l of JSON.parse((await lab.exec(ns, 'ip', ['-j', '-s', 'link', 'show'])).stdout) as any[]) {
      const s = l.stats64
      if (s) out[`${ns}/${l.ifname}`] = s.rx.dropped + s.tx.dropped
    }
    const qdiscs = JSON.parse((await lab.exec(ns, 'tc', ['-s', '-j', 'qdisc', 'show'])).stdout || '[]') as { drops?: number }[]
    out[`${ns}/qdisc`] = qdiscs.reduce((n, q) => n + (q.drops ?? 0), 0)
    const snmp = (await lab.exec(ns, 'nstat', ['-asz', ...SNMP_DROPS])).stdout
    out[`${ns}/ip+udp`] = [...snmp.matchAll(/^(?:Ip|Udp)\w+\s+(\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0)
    // Connection tracking (the exit node's SNAT): per CPU, hex; insert_failed, drop, early_drop.
    const ct = (await lab.exec(ns, 'cat', ['/proc/net/stat/nf_conntrack'])).stdout.trim().split('\n')
    const cols = ct[0]?.split(/\s+/) ?? []
    const pick = ['insert_failed', 'drop', 'early_drop'].map((c) => cols.indexOf(c)).filter((i) => i >= 0)
    out[`${ns}/conntrack`] = ct.slice(1).reduce((n, line) => {
      const v = line.trim().split(/\s+/)
      return n + pick.reduce((m, i) => m + Number.parseInt(v[i], 16), 0)
    }, 0)
  }
  for (const a of agents) {
    const counters: Record<string, number> = (await lab.statusJson(a)).counters ?? {}
    out[`${a.name} agent`] = Object.entries(counters).reduce((n, [r, v]) => (EVENT_REASONS.has(r) ? n : n + v), 0)
  }
  return out
}

/** The counted drops between two dropCounters() readings: the total, and the places that counted any. */
export function dropDelta(before: Record<string, number>, after: Record<string, number>): { total: number; where: string } {
  const parts = Object.entries(after)
    .map(([k, v]) => [k, v - (before[k] ?? 0)] as const)
    .filter(([, d]) => d > 0)
  return { total: parts.reduce((n, [, d]) => n + d, 0), where: parts.map(([k, d]) => `${k} ${d}`).join(', ') || 'nowhere' }
}

export function pingArgs(dst: string, count = 3): string[] {
  return ['-c', String(count), '-i', '0.2', '-W', '2', dst]
}

/** Makes a bridge inside `ns` and returns a function that plugs a new veth from another namespace into it. */
export async function bridge(lab: BaseLab, ns: string, name: string, addr?: string) {
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

/**
 * Pings `addr` from `ns` once a second (one echo each, 1 s to answer) until one is answered; resolves
 * with the number of pings it took, or 0 after `tries`. A wait for a condition, not a ping train.
 */
export async function pingUntil(lab: Lab, ns: string, addr: string, tries = 30): Promise<number> {
  for (let i = 1; i <= tries; i++) {
    const started = Date.now()
    if ((await lab.exec(ns, 'ping', ['-c', '1', '-W', '1', addr])).code === 0) return i
    const left = 1000 - (Date.now() - started)
    if (left > 0) await new Promise((r) => setTimeout(r, left))
  }
  return 0
}

/** Waits until `cond` holds, checking every `everyMs`; throws `timed out waiting for <what>` after `ms`. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number, everyMs = 100): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/** `enclave hub …` in a namespace: `json()` runs a command against its data directory, `serve()` starts it. */
export class HubProc {
  proc?: import('node:child_process').ChildProcess
  readonly out: string[] = []

  constructor(
    private readonly lab: BaseLab,
    readonly ns: string,
    readonly dir: string,
  ) {}

  async json(args: string[]): Promise<any> {
    const r = await this.lab.exec(this.ns, process.execPath, [BIN, 'hub', ...args, '--data-dir', this.dir, '--json'])
    if (r.code !== 0) throw new Error(`hub ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
    return JSON.parse(r.stdout)
  }

  /** `hub serve` (extra arguments after it), resolved once it listens. */
  async serve(extra: string[] = []): Promise<void> {
    this.out.length = 0
    const p = this.lab.spawn(this.ns, process.execPath, [BIN, 'hub', 'serve', '--data-dir', this.dir, ...extra])
    this.proc = p
    p.stdout?.on('data', (d) => this.out.push(String(d)))
    p.stderr?.on('data', (d) => this.out.push(String(d)))
    await until('the hub listens', () => this.out.join('').includes('hub listening'), 15_000)
  }

  /** Ends the hub process this started (by its PID), if it still runs. */
  kill(): void {
    if (this.proc?.pid && this.proc.exitCode === null) this.proc.kill('SIGKILL')
  }
}
