/**
 * Enrolment to first ping, with real agents in network namespaces made here and a real hub:
 * `enclave hub serve` and two agents on one bridge. lap1 is enrolled and running; lap2's agent runs
 * (not enrolled). The clock starts when `enclave enrol <auto-approve key>` is typed on lap2 and stops at
 * the first echo reply lap2 gets from lap1's virtual address (pings every 50 ms, each waiting 200 ms):
 * the enrolment, the reload it makes, the map to lap2 and the delta to lap1, both data planes, and a
 * WireGuard handshake. Several rounds, each with a fresh lap2 key.
 */
import type { ChildProcess } from 'node:child_process'
import path from 'node:path'
import { BIN, Lab, type NodeInfo } from '../src/lab/lab.js'

export interface HubEnrolResult {
  case: 'hub-enrol-to-ping'
  rounds: number
  medianMs: number
  maxMs: number
  samplesMs: number[]
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export async function runHubEnrolBench(rounds = 5): Promise<HubEnrolResult> {
  const lab = new Lab('he', { kind: 'encb' })
  let hub: ChildProcess | undefined
  try {
    const [nsHub, nsA, nsSw] = await Promise.all(['hub', 'a', 'sw'].map((n) => lab.addNs(n)))
    await lab.sh('ip', ['-n', nsSw, 'link', 'add', 'br0', 'type', 'bridge'])
    await lab.sh('ip', ['-n', nsSw, 'link', 'set', 'br0', 'up'])
    let port = 0
    const plug = async (ns: string, addr: string) => {
      const p = `p${port++}`
      await lab.link(ns, 'eth0', `${addr}/24`, nsSw, p, '')
      await lab.sh('ip', ['-n', nsSw, 'link', 'set', p, 'master', 'br0'])
    }
    await plug(nsHub, '198.18.0.100')
    await plug(nsA, '198.18.0.1')
    const dir = path.join(lab.tmp, 'hub')
    const hubCli = async (args: string[]) => {
      const r = await lab.exec(nsHub, process.execPath, [BIN, 'hub', ...args, '--data-dir', dir, '--json'])
      if (r.code !== 0) throw new Error(`hub ${args[0]}: ${r.stderr}`)
      return JSON.parse(r.stdout)
    }
    const hubKey: string = (await hubCli(['init', '--listen', '198.18.0.100:8443'])).publicKey
    let out = ''
    hub = lab.spawn(nsHub, process.execPath, [BIN, 'hub', 'serve', '--data-dir', dir])
    hub.stdout?.on('data', (d) => (out += d))
    hub.stderr?.on('data', (d) => (out += d))
    await until('the hub', () => out.includes('hub listening'), 15000)
    const key: string = (await hubCli(['key', 'create', 'fleet', '--tags', 'fleet', '--auto-approve'])).key
    await hubCli(['policy', 'create', 'fleet mesh', '--senders', 'fleet', '--receivers', 'fleet', '--acl', 'icmp'])
    const enrol = (n: NodeInfo) => lab.cli(n, ['enrol', key, '--hub', 'http://198.18.0.100:8443', '--hub-key', hubKey])
    const start = (n: NodeInfo) =>
      lab.startAgent(n, ['-v', '1'], { ENCLAVE_STATE_DIR: path.join(n.dir, 'state') }).waitFor(/control socket ready/, 20000)
    const a = lab.makeNode({ name: 'a', ns: nsA })
    if ((await enrol(a)).code !== 0) throw new Error('lap1 did not enrol')
    await start(a)
    const aVa = (await lab.statusJson(a)).virtualAddress as string
    const samples: number[] = []
    for (let i = 0; i < rounds; i++) {
      const nsB = await lab.addNs(`b${i}`)
      await plug(nsB, `198.18.0.${10 + i}`)
      const b = lab.makeNode({ name: `b${i}`, ns: nsB })
      await start(b)
      const t0 = performance.now()
      const r = await enrol(b)
      if (r.code !== 0) throw new Error(`enrol: ${r.stderr}`)
      let ok = false
      while (!ok && performance.now() - t0 < 20000) ok = (await lab.exec(nsB, 'ping', ['-c', '1', '-W', '0.2', aVa])).code === 0
      if (!ok) throw new Error('no ping within 20 s of enrolment')
      samples.push(Math.round(performance.now() - t0))
    }
    const sorted = [...samples].sort((x, y) => x - y)
    return {
      case: 'hub-enrol-to-ping',
      rounds,
      medianMs: sorted[Math.floor(sorted.length / 2)],
      maxMs: sorted[sorted.length - 1],
      samplesMs: samples,
    }
  } finally {
    if (hub?.pid && hub.exitCode === null) hub.kill('SIGKILL')
    lab.cleanupSync()
  }
}

if (import.meta.url === `file://${process.argv[1]}`)
  runHubEnrolBench(Number(process.argv[2] ?? 5)).then((r) => console.log(JSON.stringify(r)))
