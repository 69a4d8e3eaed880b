/**
 * The guide's one security promise, tried as a LAN host would: hosts behind an exit node may answer
 * peers, never start traffic to them, whatever source address they forge.
 *
 *   client (198.18.0.1) ── underlay veth ── exit (198.18.0.2; lan0 172.26.0.3/20) ── lan host 172.26.0.250/20
 *
 * The LAN host routes 100.64.0.0/10 via the exit node and pings the client's virtual address from
 * forged sources. What reaches the client's TUN is counted by an iptables rule in the client's
 * namespace (INPUT -i enclave0 -s <source>), so a packet that arrives is seen even if no reply
 * could find its way back. Two exit-node setups: ProvidesRoutes 0.0.0.0/0, and a narrower
 * 172.26.0.0/20 while the client's AvailableRoutes also cover 198.51.100.0/24.
 */
import t from 'tap'
import { Lab, type AgentInfo, type AgentProc, haveCommand, peerEntry, pingArgs, rootSkipReason, statusJson } from '../helpers/netns.js'

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)

const FORGED_OVERLAY = '100.64.77.77'
const FORGED_OUTSIDE = '198.51.100.7'
const LAN_HOST = '172.26.0.250'

interface Setup {
  name: string
  provides: string[]
  available: string[]
  /** Forged sources that reached the client before the ingress fix (the test must fail there). */
  leakedBefore: string[]
}

const setups: Setup[] = [
  { name: 'ProvidesRoutes 0.0.0.0/0', provides: ['0.0.0.0/0'], available: ['0.0.0.0/0'], leakedBefore: [FORGED_OVERLAY] },
  {
    name: 'ProvidesRoutes 172.26.0.0/20, client routes also cover 198.51.100.0/24',
    provides: ['172.26.0.0/20'],
    available: ['172.26.0.0/20', '198.51.100.0/24'],
    leakedBefore: [FORGED_OUTSIDE],
  },
]

async function arrivals(lab: Lab, ns: string, src: string): Promise<number> {
  const r = await lab.exec(ns, 'iptables', ['-L', 'INPUT', '-n', '-v', '-x'])
  const line = r.stdout.split('\n').find((l) => l.includes('enclave0') && l.includes(` ${src} `))
  if (!line) throw new Error(`no counting rule for ${src}:\n${r.stdout}`)
  return Number(line.trim().split(/\s+/)[0])
}

for (const s of setups) {
  t.test(`a LAN host cannot reach a client through the exit node (${s.name})`, { skip }, async (t) => {
    const lab = new Lab('ro')
    t.teardown(() => lab.cleanup())
    const [nsC, nsE, nsL] = await Promise.all(['client', 'exit', 'lan'].map((n) => lab.addNs(n)))
    await lab.link(nsC, 'eth0', '198.18.0.1/24', nsE, 'eth0', '198.18.0.2/24')
    await lab.link(nsE, 'lan0', '172.26.0.3/20', nsL, 'eth0', `${LAN_HOST}/20`)
    await lab.guideExitNode(nsE, '172.26.0.3', { out: 'lan0' })
    // The LAN host: forged sources on its loopback, and the overlay (and the outside range) routed via the exit node.
    for (const a of [FORGED_OVERLAY, FORGED_OUTSIDE]) await lab.sh('ip', ['-n', nsL, 'addr', 'add', `${a}/32`, 'dev', 'lo'])
    await lab.sh('ip', ['-n', nsL, 'route', 'add', '100.64.0.0/10', 'via', '172.26.0.3'])

    const C = lab.makeAgent({ name: 'client', ns: nsC })
    const E = lab.makeAgent({ name: 'exit', ns: nsE })
    lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: s.provides } })
    lab.writeAgentProfile(C, {
      Peers: [peerEntry(E, { Endpoint: '198.18.0.2:51820' })],
      ExitNode: { AvailableRoutes: { [E.identity]: s.available } },
    })
    const procs: AgentProc[] = []
    t.teardown(async () => {
      for (const p of procs) await p.stop()
    })
    for (const info of [E, C] as AgentInfo[]) {
      const p = lab.startAgent(info)
      procs.push(p)
      await p.waitFor(/control socket ready/)
    }

    const r = await lab.exec(nsC, 'ping', pingArgs(LAN_HOST, 3))
    t.equal(r.code, 0, `legitimate: the client pings the LAN host and the replies come back\n${r.stdout}`)

    for (const src of [FORGED_OVERLAY, FORGED_OUTSIDE, LAN_HOST])
      await lab.exec(nsC, 'iptables', ['-I', 'INPUT', '-i', 'enclave0', '-s', src, '-j', 'ACCEPT'])
    const pingFromAll = async (layer: string) => {
      // The three sources at once (each of their pings waits out its 1 s timeout); counted per source.
      const sources = [FORGED_OVERLAY, FORGED_OUTSIDE, LAN_HOST]
      await Promise.all(sources.map((src) => lab.exec(nsL, 'ping', ['-c', '3', '-i', '0.2', '-W', '1', '-I', src, C.va])))
      for (const src of sources) {
        const n = await arrivals(lab, nsC, src)
        const was = s.leakedBefore.includes(src) ? ' (reached the client before the ingress check)' : ''
        t.equal(n, 0, `${layer}: echo requests from ${src} that reached the client: ${n} of 3${was}`)
      }
    }
    // Both layers in place: the kernel's reply-only FORWARD rule drops the forwarded ones before NAT.
    const kernelDrops = async () => {
      const d = JSON.parse((await lab.cli(E, ['doctor', '--json'])).stdout)
      const c = d.checks.find((x: { name: string }) => x.name === 'reply-only (FORWARD)')
      return Number(/(\d+) packets so far/.exec(c?.detail ?? '')?.[1] ?? -1)
    }
    const k0 = await kernelDrops()
    await pingFromAll('with the FORWARD rule')
    const k1 = await kernelDrops()
    t.ok(k1 >= k0 + 6, `the FORWARD rule dropped the forwarded ones (${k0} -> ${k1})`)
    // The workers' layer alone (as without iptables): the same pings, counted as unsolicited.
    const del = await lab.exec(nsE, 'iptables', ['-w', '-t', 'mangle', '-F', 'FORWARD'])
    t.equal(del.code, 0, `the FORWARD rule removed by hand ${del.stderr}`)
    const before = (await statusJson(lab, E)).exitNode.unsolicitedDrops as number
    await pingFromAll('workers only')
    const after = (await statusJson(lab, E)).exitNode.unsolicitedDrops as number
    // The forged overlay source never reaches the TUN: the anti-spoofing rule (raw PREROUTING) drops it at lan0.
    t.ok(after >= before + 6, `the exit node counted the others as unsolicited (${before} -> ${after})`)
    const raw = await lab.exec(nsE, 'iptables', ['-w', '-t', 'raw', '-L', 'PREROUTING', '-n', '-v', '-x'])
    const spoof = raw.stdout.split('\n').find((l) => l.includes('100.64.0.0/10') && l.includes('DROP'))
    t.ok(spoof && Number(spoof.trim().split(/\s+/)[0]) >= 6, `the forged overlay source was dropped at ingress, both times:\n${raw.stdout}`)

    const again = await lab.exec(nsC, 'ping', pingArgs(LAN_HOST, 2))
    t.equal(again.code, 0, 'replies to the client still work afterwards')
  })
}
