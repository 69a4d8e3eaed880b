/**
 * Throughput through an exit node, in namespaces made here (deleted afterwards):
 *   client --198.18.0.0/30-- exit --172.26.0.0/20-- lan (iperf3 server at 172.26.0.250)
 * The same topology and iperf3 command for our agent, stock wireguard-go and nebula (Debian's
 * packages, default settings), back to back, so the ratios compare like with like on this machine.
 * Besides what the LAN host receives, it reads the CPU time of every process in the exit node's
 * namespace (only the VPN runs there) to give packets per CPU-second at the exit node.
 */
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { Lab } from '../src/lab/lab.js'

function sh(cmd: string, args: string[], timeoutMs = 60000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, so, se) =>
      resolve({ code: err ? 1 : 0, out: String(so) + String(se) }),
    ),
  )
}

export const IMPLS = ['enclave', 'nebula', 'wireguard-go'] as const
export type Impl = (typeof IMPLS)[number]

/** Whether a comparator can run here, or why not. */
export function implMissing(impl: Impl): string | undefined {
  const need: Record<Impl, string[]> = { enclave: ['iperf3'], nebula: ['nebula', 'nebula-cert'], 'wireguard-go': ['wireguard-go', 'wg'] }
  const missing = need[impl].filter(
    (b) => !['/usr/bin', '/usr/sbin', '/usr/local/bin', '/bin', '/sbin'].some((d) => fs.existsSync(path.join(d, b))),
  )
  return missing.length
    ? `${missing.join(' and ')} not installed (apt-get install ${impl === 'nebula' ? 'nebula' : 'wireguard-go wireguard-tools'})`
    : undefined
}

/** CPU seconds (user + system) used so far by every process in the namespace. */
export function nsCpuSeconds(ns: string): number {
  let ticks = 0
  let pids: string[] = []
  try {
    pids = execFileSync('ip', ['netns', 'pids', ns]).toString().split(/\s+/).filter(Boolean)
  } catch {
    return 0
  }
  for (const pid of pids) {
    try {
      // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(f[11]) + Number(f[12])
    } catch {
      /* exited meanwhile */
    }
  }
  return ticks / 100 // USER_HZ is 100 on Linux
}

export interface NetnsResult {
  case: string
  impl: Impl
  test: 'tcp1' | 'tcp4' | 'udp64' | 'ping'
  run: number
  gbps?: number
  retransmits?: number
  /** udp64: packets per second that arrived at the LAN host (iperf3 -u -l 64 -b 0). */
  kpps?: number
  loss_pct?: number
  /** udp64: delivered packets per CPU-second spent by the exit node's processes (its VPN). */
  kpps_per_core?: number
  /** ping: average, 99th percentile and worst round trip in ms (1,000 echoes, 10 ms apart). */
  avg_ms?: number
  p99_ms?: number
  max_ms?: number
}

export class ExitPathBench {
  private lab = new Lab('', { kind: 'encb' })
  ns = (n: string) => this.lab.nsName(n)

  async setup(): Promise<void> {
    for (const n of ['client', 'exit', 'lan']) await this.lab.addNs(n)
    await this.lab.link(this.ns('client'), 'wan0', '198.18.0.1/30', this.ns('exit'), 'wan0', '198.18.0.2/30')
    await this.lab.link(this.ns('exit'), 'lan0', '172.26.0.3/20', this.ns('lan'), 'eth0', '172.26.0.250/20')
    await this.lab.guideExitNode(this.ns('exit'), '172.26.0.3', { dst: '172.26.0.0/20' })
  }

  /** Starts the given implementation on client and exit; returns a function that stops it. */
  /** The enclave agents of the last start (their output, for investigations). */
  agents: Array<{ name: string; log: string }> = []

  async start(impl: Impl, workers?: number, env: Record<string, string> = {}): Promise<() => Promise<void>> {
    if (impl === 'nebula') return this.startNebula()
    if (impl === 'enclave') {
      const c = this.lab.makeNode({ name: 'c', ns: this.ns('client') })
      const e = this.lab.makeNode({ name: 'e', ns: this.ns('exit') })
      this.lab.writeProfile(c, {
        VirtualAddress: '100.64.0.1',
        Peers: [{ PublicKey: e.publicKey, VirtualAddress: '100.64.0.2', Endpoint: '198.18.0.2:51820' }],
        ExitNode: { AvailableRoutes: { [e.identity]: ['172.26.0.0/20'] } },
      })
      this.lab.writeProfile(e, {
        VirtualAddress: '100.64.0.2',
        Peers: [{ PublicKey: c.publicKey, VirtualAddress: '100.64.0.1' }],
        ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
      })
      const extra = workers ? ['--workers', String(workers)] : []
      const ea = this.lab.startAgent(e, ['-v', '0', ...extra], env)
      const ca = this.lab.startAgent(c, ['-v', '1', ...extra], env)
      this.agents = [
        { name: 'exit', log: '' },
        { name: 'client', log: '' },
      ]
      Object.defineProperty(this.agents[0], 'log', { get: () => ea.log })
      Object.defineProperty(this.agents[1], 'log', { get: () => ca.log })
      await ca.waitFor(/control socket ready/, 20000)
      await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '2', '-W', '3', '172.26.0.250'])
      return async () => {
        await Promise.all([ca.stop('SIGTERM'), ea.stop('SIGTERM')])
      }
    }
    const kf = (k: string) => {
      const f = path.join(this.lab.tmp, `wg-${Math.random()}`)
      fs.writeFileSync(f, k + '\n', { mode: 0o600 })
      return f
    }
    const wgKeys = [0, 1].map(() => {
      const k = execFileSync('wg', ['genkey']).toString().trim()
      return { k, p: execFileSync('wg', ['pubkey'], { input: k }).toString().trim() }
    })
    const [wc, we] = wgKeys
    const devC = this.lab.wgDeviceName()
    const devE = this.lab.wgDeviceName()
    for (const [ns, dev, me, peer, allowed, ep, addr] of [
      [this.ns('client'), devC, wc, we, '100.64.0.2/32,172.26.0.0/20', '198.18.0.2:51820', '100.64.0.1/10'],
      [this.ns('exit'), devE, we, wc, '100.64.0.1/32', undefined, '100.64.0.2/10'],
    ] as const) {
      await this.lab.wireguardGo(ns, dev)
      const args = [
        'netns',
        'exec',
        ns,
        'wg',
        'set',
        dev,
        'listen-port',
        '51820',
        'private-key',
        kf(me.k),
        'peer',
        peer.p,
        'allowed-ips',
        allowed,
      ]
      if (ep) args.push('endpoint', ep)
      await sh('ip', args)
      await sh('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev])
      await sh('ip', ['-n', ns, 'link', 'set', dev, 'mtu', '1420', 'up'])
    }
    await sh('ip', ['-n', this.ns('client'), 'route', 'add', '172.26.0.0/20', 'dev', devC])
    await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '2', '-W', '3', '172.26.0.250'])
    return async () => {
      // wireguard-go's UAPI sockets live in /var/run/wireguard (not namespaced): the lab names devices per process.
      await sh('ip', ['-n', this.ns('client'), 'link', 'del', devC])
      await sh('ip', ['-n', this.ns('exit'), 'link', 'del', devE])
    }
  }

  /**
   * Nebula 1.6 with its defaults (MTU 1300, one routine): a self-made CA, a certificate per host, the
   * exit node's carrying the LAN subnet, and the client's `unsafe_routes` sending that subnet to it.
   */
  private async startNebula(): Promise<() => Promise<void>> {
    const dir = fs.mkdtempSync(path.join(this.lab.tmp, 'nebula-'))
    const f = (n: string) => path.join(dir, n)
    const cert = async (args: string[]) => {
      const r = await sh('nebula-cert', args)
      if (r.code !== 0) throw new Error(`nebula-cert ${args[0]} failed: ${r.out}`)
    }
    await cert(['ca', '-name', 'enclave bench', '-out-crt', f('ca.crt'), '-out-key', f('ca.key')])
    const sign = (me: 'c' | 'e', ip: string, extra: string[] = []) =>
      cert([
        'sign',
        '-ca-crt',
        f('ca.crt'),
        '-ca-key',
        f('ca.key'),
        '-name',
        me,
        '-ip',
        ip,
        '-out-crt',
        f(`${me}.crt`),
        '-out-key',
        f(`${me}.key`),
        ...extra,
      ])
    await sign('c', '100.64.0.1/10')
    await sign('e', '100.64.0.2/10', ['-subnets', '172.26.0.0/20'])
    const dev = (c: string) => `neb${process.pid % 100000}${c}`
    const anyRule = '    - port: any\n      proto: any\n      host: any\n'
    const config = (me: 'c' | 'e') =>
      [
        `pki:\n  ca: ${f('ca.crt')}\n  cert: ${f(`${me}.crt`)}\n  key: ${f(`${me}.key`)}`,
        me === 'c' ? 'static_host_map:\n  "100.64.0.2": ["198.18.0.2:4242"]' : 'static_host_map: {}',
        'lighthouse:\n  am_lighthouse: false\n  hosts: []',
        'listen:\n  host: 0.0.0.0\n  port: 4242',
        'punchy:\n  punch: false',
        `tun:\n  dev: ${dev(me)}` + (me === 'c' ? '\n  unsafe_routes:\n    - route: 172.26.0.0/20\n      via: 100.64.0.2' : ''),
        'logging:\n  level: warning',
        `firewall:\n  outbound:\n${anyRule}  inbound:\n${anyRule}`,
      ].join('\n') + '\n'
    const procs = (['e', 'c'] as const).map((me) => {
      fs.writeFileSync(f(`${me}.yml`), config(me))
      return this.lab.spawn(this.ns(me === 'c' ? 'client' : 'exit'), 'nebula', ['-config', f(`${me}.yml`)])
    })
    const up = async () => {
      for (let i = 0; i < 50; i++) {
        const r = await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '1', '-W', '1', '172.26.0.250'])
        if (r.code === 0) return
        await new Promise((r) => setTimeout(r, 200))
      }
      throw new Error('nebula: no reply from the LAN host through the exit node')
    }
    await up()
    return async () => {
      for (const p of procs) if (p.pid && p.exitCode === null && p.signalCode === null) p.kill('SIGTERM')
      await Promise.all(
        procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : undefined)),
      )
    }
  }

  async iperf(streams: number, seconds: number): Promise<{ gbps: number; retransmits: number }> {
    const srv = this.lab.spawn(this.ns('lan'), 'iperf3', ['-s', '-1', '-B', '172.26.0.250'])
    await new Promise((r) => setTimeout(r, 400))
    const r = await sh(
      'ip',
      ['netns', 'exec', this.ns('client'), 'iperf3', '-c', '172.26.0.250', '-t', String(seconds), '-P', String(streams), '-J'],
      (seconds + 20) * 1000,
    )
    if (srv.pid && srv.exitCode === null) process.kill(srv.pid, 'SIGKILL')
    if (r.code !== 0) throw new Error(`iperf3 failed: ${r.out.slice(0, 500)}`)
    const j = JSON.parse(r.out)
    return { gbps: j.end.sum_received.bits_per_second / 1e9, retransmits: j.end.sum_sent.retransmits ?? 0 }
  }

  async udp64(seconds: number): Promise<{ kpps: number; loss: number; kppsPerCore: number }> {
    const srv = this.lab.spawn(this.ns('lan'), 'iperf3', ['-s', '-1', '-B', '172.26.0.250'])
    await new Promise((r) => setTimeout(r, 400))
    const cpu0 = nsCpuSeconds(this.ns('exit'))
    const r = await sh(
      'ip',
      ['netns', 'exec', this.ns('client'), 'iperf3', '-c', '172.26.0.250', '-u', '-l', '64', '-b', '0', '-t', String(seconds), '-J'],
      (seconds + 20) * 1000,
    )
    if (srv.pid && srv.exitCode === null) process.kill(srv.pid, 'SIGKILL')
    // The client's iperf3 has returned, so the exit node has forwarded everything it will.
    const cpu = nsCpuSeconds(this.ns('exit')) - cpu0
    if (r.code !== 0) throw new Error(`iperf3 -u failed: ${r.out.slice(0, 500)}`)
    const s = JSON.parse(r.out).end.sum
    const delivered = s.packets - s.lost_packets
    return { kpps: delivered / s.seconds / 1000, loss: s.lost_percent, kppsPerCore: cpu > 0 ? delivered / cpu / 1000 : 0 }
  }

  /** 1,000 echoes 10 ms apart through the exit node to the LAN host (a p99 of 10 samples, not 5): average, 99th percentile and worst, in ms. */
  async ping(count = 1000): Promise<{ avg: number; p99: number; max: number }> {
    const r = await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', String(count), '-i', '0.01', '172.26.0.250'], 60000)
    const rtts = [...r.out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b)
    if (rtts.length < count * 0.9) throw new Error(`ping: ${rtts.length} of ${count} replies: ${r.out.slice(-300)}`)
    const avg = rtts.reduce((a, b) => a + b, 0) / rtts.length
    const p99 = rtts[Math.min(rtts.length - 1, Math.ceil(rtts.length * 0.99) - 1)]
    return { avg: +avg.toFixed(3), p99, max: rtts[rtts.length - 1] }
  }

  teardown(): void {
    this.lab.cleanupSync()
  }
}
