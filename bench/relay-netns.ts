/**
 * One TCP stream (iperf3) between two agents behind real kernel NAT, through the hub's UDP relay
 * (two hard NATs: MASQUERADE --random-fully), directly (an easy and a masq router, which punch
 * through), and over the hub connections (relay-tcp: one side's UDP blocked), in the same run,
 * alternating: issue 20's targets are relayed >= 0.5x direct, and relay-tcp >= 300 Mbit/s. Namespaces and
 * routers from src/lab/nat.ts; a real `enclave hub serve`; agents enrolled with `enclave enrol`.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { BIN, Lab, type NodeInfo } from '../src/lab/lab.js'
import { NatLab } from '../src/lab/nat.js'

export interface RelayNetnsResult {
  case: 'relay-tcp1'
  seconds: number
  runs: number
  directMbit: number[]
  relayMbit: number[]
  /** relay-tcp: a UDP-blocked agent and a hard-NAT one, over the hub connections. */
  tcpMbit: number[]
  ratio: number
}

const HUB = '198.51.100.10'

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]

export async function runRelayNetnsBench(seconds = 5, runs = 3): Promise<RelayNetnsResult> {
  const lab = new Lab('rl', { kind: 'encb' })
  let hubProc: ChildProcess | undefined
  try {
    const nat = new NatLab(lab)
    const hub = await nat.publicHost('hub', HUB)
    const s1 = await nat.site(1, 'easy')
    const s2 = await nat.site(2, 'masq')
    const s3 = await nat.site(3, 'hard')
    const s4 = await nat.site(4, 'hard')
    const s5 = await nat.site(5, 'udp-blocked')
    const s6 = await nat.site(6, 'hard')
    const hosts = {
      d1: await nat.siteHost(s1, 'd1'),
      d2: await nat.siteHost(s2, 'd2'),
      r1: await nat.siteHost(s3, 'r1'),
      r2: await nat.siteHost(s4, 'r2'),
      t1: await nat.siteHost(s5, 't1'),
      t2: await nat.siteHost(s6, 't2'),
    }
    const hubDir = path.join(lab.tmp, 'hub')
    const json = async (args: string[]) => {
      const r = await lab.exec(hub.ns, process.execPath, [BIN, 'hub', ...args, '--data-dir', hubDir, '--json'])
      if (r.code !== 0) throw new Error(`hub ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
      return JSON.parse(r.stdout)
    }
    const hubKey: string = (await json(['init', '--listen', `${HUB}:8443`])).publicKey
    // Capacity, not policy: the relay's default per-pair cap (1 Gbit/s) would be what this measures.
    const cfgFile = path.join(hubDir, 'hub.json')
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'))
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, Relay: { PairMbit: 40_000, TotalMbit: 80_000 } }, null, 2))
    hubProc = lab.spawn(hub.ns, process.execPath, [BIN, 'hub', 'serve', '--data-dir', hubDir])
    const out: string[] = []
    hubProc.stdout?.on('data', (d) => out.push(String(d)))
    await until('the hub listens', () => out.join('').includes('hub listening'), 15_000)
    const key = (await json(['key', 'create', 'bench', '--tags', 'b', '--auto-approve'])).key
    await json(['policy', 'create', 'b', '--senders', 'b', '--receivers', 'b', '--acl', 'any'])
    const nodes: Record<string, NodeInfo> = {}
    for (const [name, h] of Object.entries(hosts)) {
      nodes[name] = lab.makeNode({ name, ns: h.ns })
      const r = await lab.cli(nodes[name], ['enrol', key, '--hub', `http://${HUB}:8443`, '--hub-key', hubKey])
      if (r.code !== 0) throw new Error(`enrol ${name}: ${r.stdout}${r.stderr}`)
      const p = lab.startAgent(nodes[name], ['-v', '2'], { ENCLAVE_STATE_DIR: path.join(nodes[name].dir, 'state') })
      await p.waitFor(/control socket ready/)
    }
    for (const n of Object.values(nodes))
      await until(`${n.name}'s NAT class`, async () => (await lab.statusJson(n)).hub?.nat !== undefined, 20_000)
    const va = async (n: NodeInfo) => (await lab.statusJson(n)).virtualAddress as string
    const pathOf = async (a: NodeInfo, b: NodeInfo) =>
      ((await lab.statusJson(a)).peers as Array<{ identity: string; path?: string }>).find((p) => p.identity === b.identity)?.path
    const ready = async (a: string, b: string, want: string) => {
      const target = await va(nodes[b])
      await until(
        `${a} -> ${b} ${want}`,
        async () => {
          await lab.exec(hosts[a as keyof typeof hosts].ns, 'ping', ['-c', '1', '-W', '1', target])
          return (await pathOf(nodes[a], nodes[b])) === want && (await pathOf(nodes[b], nodes[a])) === want
        },
        20_000,
      )
      return target
    }
    const directTo = await ready('d1', 'd2', 'direct')
    const relayTo = await ready('r1', 'r2', 'relay-udp')
    const tcpTo = await ready('t1', 't2', 'relay-tcp')
    const iperf = async (from: string, server: string, target: string) => {
      const srv = lab.spawn(hosts[server as keyof typeof hosts].ns, 'iperf3', ['-s', '-1', '-B', target])
      await new Promise((r) => setTimeout(r, 300))
      const r = await lab.exec(
        hosts[from as keyof typeof hosts].ns,
        'iperf3',
        ['-c', target, '-t', String(seconds), '-J'],
        (seconds + 20) * 1000,
      )
      srv.kill('SIGKILL')
      const j = JSON.parse(r.stdout)
      return (j.end?.sum_received?.bits_per_second ?? 0) / 1e6
    }
    const directMbit: number[] = []
    const relayMbit: number[] = []
    const tcpMbit: number[] = []
    for (let i = 0; i < runs; i++) {
      tcpMbit.push(await iperf('t1', 't2', tcpTo))
      directMbit.push(await iperf('d1', 'd2', directTo))
      relayMbit.push(await iperf('r1', 'r2', relayTo))
    }
    return { case: 'relay-tcp1', seconds, runs, directMbit, relayMbit, tcpMbit, ratio: median(relayMbit) / median(directMbit) }
  } finally {
    if (hubProc?.pid && hubProc.exitCode === null) hubProc.kill('SIGKILL')
    await lab.cleanup()
  }
}
