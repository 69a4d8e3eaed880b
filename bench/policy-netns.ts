/**
 * Policies on the exit-node path, in namespaces made here (deleted afterwards):
 *   client --198.18.0.0/30-- exit --172.26.0.0/20-- lan (iperf3 and a TCP accept-and-close server)
 * The exit node's profile lists 1,000 peers (the client and 999 others with tags) and, in the
 * "policies" case, 100 policies; the client's tags make all 100 candidates, and only the last one
 * allows (the evaluator's worst case). The "none" case is the same profile without Policies.
 * Measured, alternating the two cases: TCP throughput client -> LAN (iperf3, 1 stream) and the
 * new-flow rate (TCP connections per second through the exit node, 8 at a time).
 * Run: node lib/bench/policy-netns.js [seconds] [runs]   (root, iperf3)
 */
import { type ChildProcess, execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeProfile } from '../src/config/profile.js'
import { generatePrivateKey, publicKeyFromPrivate } from '../src/config/keys.js'
import { identityFromPublicKey, virtualAddressFromPublicKey } from '../src/config/identity.js'
import { NetnsSet } from '../src/platform/linux/netns.js'
import { A_VA, B_VA, HEADROOM, LAN, deliver, ipv4udp, sessionPair } from './testbed.js'
import { compilePolicies, policyTablesFor } from '../src/compile/policy.js'
import type { PolicyConfig } from '../src/config/policies.js'
import { compatPolicyTable } from '../src/dataplane/policy.js'

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))
const LAN_HOST = '172.26.0.250'
const PEERS = 1000
const POLICIES = 100

export interface PolicyNetnsResult {
  case: 'policy-exit-path'
  policies: number
  peers: number
  test: 'tcp1' | 'new-flows'
  run: number
  gbps?: number
  retransmits?: number
  /** new-flows: TCP connections per second completed through the exit node. */
  cps?: number
  failed?: number
}

function sh(cmd: string, args: string[], timeoutMs = 60000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, so, se) =>
      resolve({ code: err ? 1 : 0, out: String(so) + String(se) }),
    ),
  )
}

const ACCEPT_CLOSE = `require('node:net').createServer((s) => { s.on('error', () => {}); s.destroy() }).listen(9100)`
const CONNECT_RATE = `
const net = require('node:net');
const [host, port, secs, par] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
let ok = 0, failed = 0, running = par;
const t0 = Date.now(), end = t0 + secs * 1000;
function one() {
  if (Date.now() >= end) { if (--running === 0) console.log(JSON.stringify({ ok, failed, ms: Date.now() - t0 })); return }
  const s = net.connect(port, host);
  s.setTimeout(2000);
  s.on('connect', () => { ok++; s.destroy(); one() });
  s.on('error', () => { failed++; one() });
  s.on('timeout', () => { failed++; s.destroy(); one() });
}
for (let i = 0; i < par; i++) one();`

/** Virtual addresses (and identities) handed out in this run: 1,000 random keys can collide in the /10. */
const taken = new Set<string>()

function key(): { sk: string; pk: string; id: string } {
  for (;;) {
    const sk = generatePrivateKey()
    const pk = publicKeyFromPrivate(sk)
    const id = identityFromPublicKey(pk)
    const va = virtualAddressFromPublicKey(pk)
    if (taken.has(id) || taken.has(`va${va}`)) continue
    taken.add(id)
    taken.add(`va${va}`)
    return { sk: sk.toString('base64'), pk: pk.toString('base64'), id }
  }
}

/** 100 policies: 99 for team tags on ports nobody uses, then the one that allows the client. */
function benchPolicies() {
  const out: unknown[] = []
  for (let i = 0; i < POLICIES - 1; i++)
    out.push({
      Description: `team ${i}`,
      SenderTags: [`team${i % 10}`],
      ReceiverTags: ['exit-node'],
      Acls: [
        { Protocol: 'Tcp', Ports: String(10000 + i) },
        { Protocol: 'Udp', Ports: `${20000 + i}-${20010 + i}` },
      ],
      GatewayRoutes: ['172.26.0.0/20'],
    })
  out.push({
    Description: 'laptops to the LAN',
    SenderTags: ['laptops'],
    ReceiverTags: ['exit-node'],
    Acls: [{ Protocol: 'Icmp' }, { Protocol: 'Tcp', Ports: '5201' }, { Protocol: 'Tcp', Ports: '9100' }],
    GatewayRoutes: ['172.26.0.0/20'],
  })
  return out
}

export class PolicyExitBench {
  private net = new NetnsSet(`encpb${process.pid}`)
  private tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-policy-bench-'))
  private procs: ChildProcess[] = []
  ns = (n: string) => this.net.name(n)

  async setup(): Promise<void> {
    for (const n of ['client', 'exit', 'lan']) await this.net.add(n)
    await this.net.link(this.ns('client'), 'wan0', '198.18.0.1/30', this.ns('exit'), 'wan0', '198.18.0.2/30')
    await this.net.link(this.ns('exit'), 'lan0', '172.26.0.3/20', this.ns('lan'), 'eth0', `${LAN_HOST}/20`)
    await sh('ip', ['netns', 'exec', this.ns('exit'), 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    await sh('ip', ['-n', this.ns('lan'), 'route', 'add', '100.64.0.0/10', 'via', '172.26.0.3'])
    this.procs.push(this.net.spawn(this.ns('lan'), process.execPath, ['-e', ACCEPT_CLOSE]))
  }

  private waitLog(p: ChildProcess, re: RegExp, ms = 60000): Promise<void> {
    let buf = ''
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for ${re}: ${buf.slice(-2000)}`)), ms)
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

  /** Starts client and exit agents; `policies` false = the same profile without Policies. */
  async start(policies: boolean): Promise<() => Promise<void>> {
    const [kc, ke] = [key(), key()]
    const others = Array.from({ length: PEERS - 1 }, (_, i) => ({ ...key(), tags: [`team${i % 10}`] }))
    const cdir = path.join(this.tmp, `c${policies ? 1 : 0}`)
    const edir = path.join(this.tmp, `e${policies ? 1 : 0}`)
    writeProfile(path.join(cdir, 'profiles', 'Universe.profile'), {
      PrivateKey: kc.sk,
      Peers: [{ PublicKey: ke.pk, Endpoint: '198.18.0.2:51820', Tags: ['exit-node'] }],
      ExitNode: { AvailableRoutes: { [ke.id]: ['172.26.0.0/20'] } },
    })
    const clientTags = ['laptops', ...Array.from({ length: 10 }, (_, i) => `team${i}`)]
    writeProfile(path.join(edir, 'profiles', 'Universe.profile'), {
      PrivateKey: ke.sk,
      Tags: ['exit-node'],
      Peers: [{ PublicKey: kc.pk, Tags: clientTags }, ...others.map((o) => ({ PublicKey: o.pk, Tags: o.tags }))],
      ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] },
      ...(policies ? { Policies: benchPolicies() } : {}),
    })
    const e = this.net.spawn(this.ns('exit'), process.execPath, [BIN, 'run', '-v', '1', '--config-dir', edir], {
      ENCLAVE_RUN_DIR: path.join(edir, 'run'),
    })
    const c = this.net.spawn(this.ns('client'), process.execPath, [BIN, 'run', '-v', '1', '--config-dir', cdir], {
      ENCLAVE_RUN_DIR: path.join(cdir, 'run'),
    })
    await Promise.all([this.waitLog(e, /control socket ready/), this.waitLog(c, /control socket ready/)])
    for (let i = 0; i < 20; i++)
      if ((await sh('ip', ['netns', 'exec', this.ns('client'), 'ping', '-c', '1', '-W', '1', LAN_HOST])).code === 0) break
    return async () => {
      for (const p of [c, e]) if (p.pid && p.exitCode === null) process.kill(p.pid, 'SIGTERM')
      await Promise.all([c, e].map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r)) : undefined)))
    }
  }

  async iperf(seconds: number): Promise<{ gbps: number; retransmits: number }> {
    const srv = this.net.spawn(this.ns('lan'), 'iperf3', ['-s', '-1', '-B', LAN_HOST])
    await new Promise((r) => setTimeout(r, 300))
    const r = await sh(
      'ip',
      ['netns', 'exec', this.ns('client'), 'iperf3', '-c', LAN_HOST, '-t', String(seconds), '-J'],
      (seconds + 20) * 1000,
    )
    if (srv.pid && srv.exitCode === null) process.kill(srv.pid, 'SIGKILL')
    if (r.code !== 0) throw new Error(`iperf3 failed: ${r.out.slice(0, 500)}`)
    const j = JSON.parse(r.out)
    return { gbps: j.end.sum_received.bits_per_second / 1e9, retransmits: j.end.sum_sent.retransmits ?? 0 }
  }

  async connectRate(seconds: number): Promise<{ cps: number; failed: number }> {
    const r = await sh(
      'ip',
      ['netns', 'exec', this.ns('client'), process.execPath, '-e', CONNECT_RATE, LAN_HOST, '9100', String(seconds), '8'],
      (seconds + 20) * 1000,
    )
    const j = JSON.parse(r.out.trim().split('\n').pop() ?? '{}') as { ok: number; failed: number; ms: number }
    return { cps: (j.ok * 1000) / j.ms, failed: j.failed }
  }

  teardown(): void {
    for (const p of this.procs) if (p.pid && p.exitCode === null) process.kill(p.pid, 'SIGKILL')
    this.net.teardownSync()
    fs.rmSync(this.tmp, { recursive: true, force: true })
  }
}

/** Alternates the no-policy and the 100-policy exit node (order swapped every run), `runs` times each. */
export async function runPolicyNetnsBench(seconds = 5, runs = 2): Promise<PolicyNetnsResult[]> {
  const b = new PolicyExitBench()
  const out: PolicyNetnsResult[] = []
  try {
    await b.setup()
    for (let run = 0; run < runs; run++)
      for (const policies of run % 2 === 0 ? [false, true] : [true, false]) {
        const stop = await b.start(policies)
        try {
          const base = { case: 'policy-exit-path' as const, policies: policies ? POLICIES : 0, peers: PEERS, run }
          const t = await b.iperf(seconds)
          out.push({ ...base, test: 'tcp1', gbps: +t.gbps.toFixed(3), retransmits: t.retransmits })
          const c = await b.connectRate(seconds)
          out.push({ ...base, test: 'new-flows', cps: Math.round(c.cps), failed: c.failed })
        } finally {
          await stop()
        }
      }
  } finally {
    b.teardown()
  }
  return out
}

export interface PolicyHotpathResult {
  case: 'policy-hotpath'
  policies: number
  peers: number
  test: 'established-1400B' | 'new-flows-64B'
  inbound_pps: number
}

/** The exit node's compiled tables for the in-process case: 1,000 peer slots, 100 policies, the last allows the client. */
function hotpathPolicies() {
  const lan = { addr: LAN, len: 20, text: '172.26.0.0/20' }
  const policies: PolicyConfig[] = Array.from({ length: POLICIES }, (_, i) => ({
    index: i,
    enabled: true,
    senderTags: i === POLICIES - 1 ? ['laptops'] : [`team${i % 10}`],
    receiverTags: ['exit-node'],
    acls:
      i === POLICIES - 1 ? [{ protocol: 'Udp', portLo: 8000, portHi: 8100 }] : [{ protocol: 'Tcp', portLo: 10000 + i, portHi: 10000 + i }],
    gatewayRoutes: [lan],
    appliesHere: true,
  }))
  const clientTags = ['laptops', ...Array.from({ length: 10 }, (_, i) => `team${i}`)]
  const peers = Array.from({ length: PEERS }, (_, slot) => ({ slot, tags: slot === 0 ? clientTags : [`team${slot % 10}`] }))
  return policyTablesFor(compilePolicies({ selfTags: ['exit-node'], selfAddress: B_VA, providesRoutes: [lan], peers, policies }), 1, 1)
}

/**
 * In process, no syscalls: the exit node's inbound packets per second (decrypt + checks + policy)
 * with no policies and with 100, alternating `rounds` times; medians. Established: 1400-byte packets
 * of 64 tracked flows. New flows: 64-byte packets, each with a new source port.
 */
export function runPolicyHotpath(seconds = 1, rounds = 5): PolicyHotpathResult[] {
  const enforce = hotpathPolicies()
  const measure = (policies: boolean, fresh: boolean): number => {
    const batch = 64
    const size = fresh ? 64 : 1400
    const { client: c, exit: e } = sessionPair(batch)
    if (policies) e.tables = { ...e.tables, ...enforce }
    else e.tables = { ...e.tables, policy: compatPolicyTable() }
    const template = new Uint8Array(c.slot * batch)
    for (let i = 0; i < batch; i++) ipv4udp(template, i * c.slot + HEADROOM, size, A_VA, LAN + 250, 40000 + i)
    let port = 1024
    let ns = 0
    let packets = 0
    const until = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9))
    while (process.hrtime.bigint() < until) {
      const now = Date.now()
      c.setClock(now)
      e.setClock(now)
      c.oSlab.set(template)
      for (let i = 0; i < batch; i++) {
        c.oLens[i] = size
        if (fresh) {
          const o = i * c.slot + HEADROOM
          port = port === 65535 ? 1024 : port + 1
          c.oSlab[o + 20] = port >> 8
          c.oSlab[o + 21] = port & 255
        }
      }
      if (c.outbound(batch) !== batch) throw new Error('outbound dropped packets')
      deliver(c, e, batch)
      const t0 = process.hrtime.bigint()
      const w = e.inbound(batch)
      ns += Number(process.hrtime.bigint() - t0)
      if (w !== batch) throw new Error(`inbound accepted ${w}/${batch}`)
      packets += batch
    }
    return packets / (ns / 1e9)
  }
  const out: PolicyHotpathResult[] = []
  for (const fresh of [false, true]) {
    const pps: Record<string, number[]> = { 0: [], [POLICIES]: [] }
    measure(false, fresh) // warm-up
    measure(true, fresh)
    for (let r = 0; r < rounds; r++)
      for (const policies of r % 2 === 0 ? [false, true] : [true, false]) pps[policies ? POLICIES : 0].push(measure(policies, fresh))
    for (const n of [0, POLICIES]) {
      const xs = pps[n].sort((a, b) => a - b)
      out.push({
        case: 'policy-hotpath',
        policies: n,
        peers: PEERS,
        test: fresh ? 'new-flows-64B' : 'established-1400B',
        inbound_pps: Math.round(xs[Math.floor(xs.length / 2)]),
      })
    }
  }
  return out
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  for (const r of runPolicyHotpath()) console.log(JSON.stringify(r))
  if (process.env.BENCH_NETNS === '0') process.exit(0)
  const results = await runPolicyNetnsBench(Number(process.argv[2] ?? 5), Number(process.argv[3] ?? 2))
  for (const r of results) console.log(JSON.stringify(r))
  for (const test of ['tcp1', 'new-flows'] as const) {
    const avg = (pol: number) => {
      const xs = results.filter((r) => r.test === test && r.policies === pol).map((r) => (test === 'tcp1' ? r.gbps! : r.cps!))
      return xs.reduce((a, b) => a + b, 0) / xs.length
    }
    const [none, with100] = [avg(0), avg(POLICIES)]
    console.log(
      `${test}: no policies ${none.toFixed(3)}, ${POLICIES} policies ${with100.toFixed(3)} (${((with100 / none - 1) * 100).toFixed(1)}%)`,
    )
  }
}
