/**
 * Throughput through an exit node, in namespaces made here (deleted afterwards):
 *   client --198.18.0.0/30-- exit --172.26.0.0/20-- lan (iperf3 server at 172.26.0.250)
 * The same topology and iperf3 command for our agent and for stock wireguard-go, back to back,
 * so the ratio compares like with like on this machine.
 */
import { type ChildProcess, execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeProfile } from '../src/control/profile/profile.js'
import { generatePrivateKey, publicKeyFromPrivate } from '../src/control/keys.js'
import { identityFromPublicKey } from '../src/control/identity.js'
import { NetnsSet } from '../src/platform/linux/netns.js'

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))

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
  private net = new NetnsSet(`encb${process.pid}`)
  private tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-bench-'))
  ns = (n: string) => this.net.name(n)

  async setup(): Promise<void> {
    for (const n of ['client', 'exit', 'lan']) await this.net.add(n)
    await this.net.link(this.ns('client'), 'wan0', '198.18.0.1/30', this.ns('exit'), 'wan0', '198.18.0.2/30')
    await this.net.link(this.ns('exit'), 'lan0', '172.26.0.3/20', this.ns('lan'), 'eth0', '172.26.0.250/20')
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

  private spawnIn(ns: string, cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
    return this.net.spawn(ns, cmd, args, env)
  }

  private waitLog(p: ChildProcess, re: RegExp, ms = 20000): Promise<void> {
    let buf = ''
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for ${re}: ${buf}`)), ms)
      const on = (d: Buffer) => {
        buf += d
        if (re.test(buf)) {
          clearTimeout(t)
          resolve()
        }
      }
      p.stdout!.on('data', on)
      p.stderr!.on('data', on)
    })
  }

  /** Starts the given implementation on client and exit; returns a function that stops it. */
  async start(impl: 'enclave' | 'wireguard-go', workers?: number): Promise<() => Promise<void>> {
    const keys = [0, 1].map(() => {
      const sk = generatePrivateKey()
      return {
        sk: sk.toString('base64'),
        pk: publicKeyFromPrivate(sk).toString('base64'),
        id: identityFromPublicKey(publicKeyFromPrivate(sk)),
      }
    })
    const [kc, ke] = keys
    if (impl === 'enclave') {
      const cdir = path.join(this.tmp, 'c')
      const edir = path.join(this.tmp, 'e')
      writeProfile(path.join(cdir, 'profiles', 'Universe.profile'), {
        PrivateKey: kc.sk,
        VirtualAddress: '100.64.0.1',
        Peers: [{ PublicKey: ke.pk, VirtualAddress: '100.64.0.2', Endpoint: '198.18.0.2:51820' }],
        ExitNode: { AvailableRoutes: { [ke.id]: ['172.26.0.0/20'] } },
      })
      writeProfile(path.join(edir, 'profiles', 'Universe.profile'), {
        PrivateKey: ke.sk,
        VirtualAddress: '100.64.0.2',
        Peers: [{ PublicKey: kc.pk, VirtualAddress: '100.64.0.1' }],
        ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
      })
      const extra = workers ? ['--workers', String(workers)] : []
      const e = this.spawnIn(this.ns('exit'), process.execPath, [BIN, 'run', '-v', '0', '--config-dir', edir, ...extra], {
        ENCLAVE_RUN_DIR: path.join(edir, 'run'),
      })
      const c = this.spawnIn(this.ns('client'), process.execPath, [BIN, 'run', '-v', '1', '--config-dir', cdir, ...extra], {
        ENCLAVE_RUN_DIR: path.join(cdir, 'run'),
      })
      await this.waitLog(c, /control socket ready/)
      await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '2', '-W', '3', '172.26.0.250'])
      return async () => {
        for (const p of [c, e]) if (p.pid && p.exitCode === null) process.kill(p.pid, 'SIGTERM')
        await Promise.all([c, e].map((p) => (p.exitCode === null ? new Promise((r) => p.on('exit', r)) : undefined)))
      }
    }
    const kf = (k: string) => {
      const f = path.join(this.tmp, `wg-${Math.random()}`)
      fs.writeFileSync(f, k + '\n', { mode: 0o600 })
      return f
    }
    const wgKeys = [0, 1].map(() => {
      const k = execFileSync('wg', ['genkey']).toString().trim()
      return { k, p: execFileSync('wg', ['pubkey'], { input: k }).toString().trim() }
    })
    const [wc, we] = wgKeys
    for (const [ns, dev, me, peer, allowed, ep, addr] of [
      [this.ns('client'), 'wgbc0', wc, we, '100.64.0.2/32,172.26.0.0/20', '198.18.0.2:51820', '100.64.0.1/10'],
      [this.ns('exit'), 'wgbe0', we, wc, '100.64.0.1/32', undefined, '100.64.0.2/10'],
    ] as const) {
      await sh('ip', ['netns', 'exec', ns, 'wireguard-go', dev])
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
    await sh('ip', ['-n', this.ns('client'), 'route', 'add', '172.26.0.0/20', 'dev', 'wgbc0'])
    await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '2', '-W', '3', '172.26.0.250'])
    return async () => {
      // wireguard-go's UAPI sockets live in /var/run/wireguard (not namespaced): hence distinct names.
      await sh('ip', ['-n', this.ns('client'), 'link', 'del', 'wgbc0'])
      await sh('ip', ['-n', this.ns('exit'), 'link', 'del', 'wgbe0'])
    }
  }

  async iperf(streams: number, seconds: number): Promise<{ gbps: number; retransmits: number }> {
    const srv = this.spawnIn(this.ns('lan'), 'iperf3', ['-s', '-1', '-B', '172.26.0.250'])
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
    const srv = this.spawnIn(this.ns('lan'), 'iperf3', ['-s', '-1', '-B', '172.26.0.250'])
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
    this.net.teardownSync()
    fs.rmSync(this.tmp, { recursive: true, force: true })
  }
}
