/**
 * Throughput through an exit node, in namespaces made here (deleted afterwards):
 *   client --198.18.0.0/30-- exit --172.26.0.0/20-- lan (iperf3 server at 172.26.0.250)
 * The same topology and iperf3 command for our agent and for stock wireguard-go, back to back,
 * so the ratio compares like with like on this machine.
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

export interface NetnsResult {
  case: string
  impl: 'enclave' | 'wireguard-go'
  test: 'tcp1' | 'tcp4' | 'udp64' | 'ping'
  run: number
  gbps?: number
  retransmits?: number
  /** udp64: packets per second that arrived at the LAN host (iperf3 -u -l 64 -b 0). */
  kpps?: number
  loss_pct?: number
  /** ping: average and worst round trip in ms (200 echoes, 10 ms apart). */
  avg_ms?: number
  max_ms?: number
}

export class ExitPathBench {
  private lab = new Lab('', { kind: 'encb' })
  ns = (n: string) => this.lab.nsName(n)

  async setup(): Promise<void> {
    for (const n of ['client', 'exit', 'lan']) await this.lab.addNs(n)
    await this.lab.link(this.ns('client'), 'wan0', '198.18.0.1/30', this.ns('exit'), 'wan0', '198.18.0.2/30')
    await this.lab.link(this.ns('exit'), 'lan0', '172.26.0.3/20', this.ns('lan'), 'eth0', '172.26.0.250/20')
    await sh('ip', ['netns', 'exec', this.ns('exit'), 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    await sh('ip', [
      'netns',
      'exec',
      this.ns('exit'),
      'iptables',
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
  }

  /** Starts the given implementation on client and exit; returns a function that stops it. */
  async start(impl: 'enclave' | 'wireguard-go', workers?: number): Promise<() => Promise<void>> {
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
      const ea = this.lab.startAgent(e, ['-v', '0', ...extra])
      const ca = this.lab.startAgent(c, ['-v', '1', ...extra])
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

  async udp64(seconds: number): Promise<{ kpps: number; loss: number }> {
    const srv = this.lab.spawn(this.ns('lan'), 'iperf3', ['-s', '-1', '-B', '172.26.0.250'])
    await new Promise((r) => setTimeout(r, 400))
    const r = await sh(
      'ip',
      ['netns', 'exec', this.ns('client'), 'iperf3', '-c', '172.26.0.250', '-u', '-l', '64', '-b', '0', '-t', String(seconds), '-J'],
      (seconds + 20) * 1000,
    )
    if (srv.pid && srv.exitCode === null) process.kill(srv.pid, 'SIGKILL')
    if (r.code !== 0) throw new Error(`iperf3 -u failed: ${r.out.slice(0, 500)}`)
    const s = JSON.parse(r.out).end.sum
    return { kpps: (s.packets - s.lost_packets) / s.seconds / 1000, loss: s.lost_percent }
  }

  async ping(): Promise<{ avg: number; max: number }> {
    const r = await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '200', '-i', '0.01', '-q', '172.26.0.250'], 30000)
    const m = /= ([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(r.out)
    if (!m) throw new Error(`ping failed: ${r.out}`)
    return { avg: Number(m[2]), max: Number(m[3]) }
  }

  teardown(): void {
    this.lab.cleanupSync()
  }
}
