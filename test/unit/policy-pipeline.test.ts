/**
 * Policies in the real Pipeline, without root (bench/testbed.ts: a client, peer slot 0 on the exit
 * node, and an exit node providing 172.26.0.0/20). The exit node enforces: only new flows are
 * judged, its own flows are tracked so that replies pass, a newer policy generation judges
 * established flows again, and every drop is counted per reason and per policy.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { A_VA, B_VA, HEADROOM, LAN, deliver, sessionPair } from '../../bench/testbed.js'
import { type Cidr, parseCidr } from '../../src/common/ipv4.js'
import { REASONS } from '../../src/ipc/layout.js'
import { PROTO_UDP } from '../../src/dataplane/conntrack.js'
import { compilePolicies, policyTablesFor, sumPolicyCounters } from '../../src/compile/policy.js'
import type { AclConfig, PolicyConfig } from '../../src/config/policies.js'

type Pair = ReturnType<typeof sessionPair>
const cidr = (s: string) => parseCidr(s) as Cidr
const PRINTER = LAN + 250

function ip4(b: Uint8Array, o: number, a: number): void {
  for (let i = 0; i < 4; i++) b[o + i] = (a >>> (24 - 8 * i)) & 255
}

function udp(src: number, dst: number, sport: number, dport: number, size = 60): Uint8Array {
  const b = new Uint8Array(size)
  b[0] = 0x45
  b[2] = size >> 8
  b[3] = size & 255
  b[8] = 64
  b[9] = PROTO_UDP
  ip4(b, 12, src)
  ip4(b, 16, dst)
  b[20] = sport >> 8
  b[21] = sport & 255
  b[22] = dport >> 8
  b[23] = dport & 255
  return b
}

const udpAcl = (lo: number, hi = lo): AclConfig => ({ protocol: 'Udp', portLo: lo, portHi: hi })

function policy(index: number, acls: AclConfig[], gateway?: string): PolicyConfig {
  return {
    index,
    description: `p${index}`,
    enabled: true,
    senderTags: ['laptops'],
    receiverTags: ['exit-node'],
    acls,
    gatewayRoutes: gateway ? [cidr(gateway)] : undefined,
    appliesHere: true,
  }
}

/** Installs compiled policies on the exit node as a new generation (what a reload posts). */
function enforce(p: Pair, policies: PolicyConfig[], gen: number) {
  const c = compilePolicies({
    selfTags: ['exit-node'],
    selfAddress: B_VA,
    providesRoutes: [cidr('172.26.0.0/20')],
    peers: [{ slot: 0, tags: ['laptops'] }],
    policies,
  })
  const pt = policyTablesFor(c, 1, gen)
  p.exit.tables = { ...p.exit.tables, ...pt }
  p.exit.setClock(Date.now())
  return pt
}

/** Client -> exit node: returns whether the exit node delivered it. */
function send(p: Pair, pkt: Uint8Array): boolean {
  p.client.oSlab.set(pkt, HEADROOM)
  p.client.oLens[0] = pkt.length
  if (p.client.outbound(1) !== 1) throw new Error('the client did not seal it')
  deliver(p.client, p.exit, 1)
  return p.exit.inbound(1) === 1
}

/** Exit node -> client: returns whether the client delivered it. */
function reply(p: Pair, pkt: Uint8Array): boolean {
  p.exit.oSlab.set(pkt, HEADROOM)
  p.exit.oLens[0] = pkt.length
  if (p.exit.outbound(1) !== 1) return false
  deliver(p.exit, p.client, 1)
  return p.client.inbound(1) === 1
}

function reason(p: Pair, name: (typeof REASONS)[number]): number {
  return p.e.v.reasons[REASONS.indexOf(name)]
}

t.test('only new flows are judged; hits and drops are counted per policy', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  const pt = enforce(p, [policy(0, [udpAcl(9100)], '172.26.0.0/20'), policy(1, [udpAcl(5000, 5010)])], 1)
  t.ok(send(p, udp(A_VA, PRINTER, 40000, 9100)), 'UDP 9100 to the printer: allowed by p0')
  t.ok(send(p, udp(A_VA, PRINTER, 40000, 9100)), 'the same flow again')
  t.ok(send(p, udp(A_VA, B_VA, 40000, 5005)), 'UDP 5005 to the exit node itself: allowed by p1 (port range)')
  t.notOk(send(p, udp(A_VA, PRINTER, 40000, 9101)), 'UDP 9101 to the printer: dropped')
  t.notOk(send(p, udp(A_VA, B_VA, 40000, 9100)), 'UDP 9100 to the exit node itself: p0 grants the LAN only')
  t.notOk(send(p, udp(A_VA, PRINTER, 40000, 5005)), 'UDP 5005 to the printer: p1 grants the exit node only')
  const c = sumPolicyCounters(pt, 1)
  t.same(c.hits, [1, 1], 'one hit per new flow, none for the established packet')
  t.same(c.drops, [2, 1], 'drops counted against the policy that matched peer and destination but not its Acls')
  t.equal(reason(p, 'policy_no_policy'), 3, 'each drop counted by reason')
})

t.test('the receiver only replies: its own flows are tracked so the answers pass', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  enforce(p, [policy(0, [udpAcl(9100)], '172.26.0.0/20')], 1)
  t.notOk(send(p, udp(A_VA, B_VA, 7000, 53)), 'the client cannot start a flow to the exit node itself')
  t.ok(reply(p, udp(B_VA, A_VA, 53, 7000)), "the exit node's own flow to the client leaves")
  t.ok(send(p, udp(A_VA, B_VA, 7000, 53)), "the client's answer to it passes")
  t.notOk(send(p, udp(A_VA, B_VA, 7001, 53)), 'another port pair is still a new flow, dropped')
})

t.test('a newer policy generation judges established flows again: denied ones are cut, allowed ones continue', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  enforce(p, [policy(0, [udpAcl(9100), udpAcl(631)], '172.26.0.0/20')], 1)
  t.ok(send(p, udp(A_VA, PRINTER, 40000, 9100)), 'flow to 9100 established')
  t.ok(send(p, udp(A_VA, PRINTER, 40001, 631)), 'flow to 631 established')
  enforce(p, [policy(0, [udpAcl(631)], '172.26.0.0/20')], 2)
  t.notOk(send(p, udp(A_VA, PRINTER, 40000, 9100)), 'reload removed 9100: the established flow is cut')
  t.notOk(reply(p, udp(PRINTER, A_VA, 9100, 40000)), 'and the LAN can no longer answer it')
  t.ok(send(p, udp(A_VA, PRINTER, 40001, 631)), 'the flow to 631 continues')
  enforce(p, [policy(0, [udpAcl(631), udpAcl(9100)], '172.26.0.0/20')], 3)
  t.ok(send(p, udp(A_VA, PRINTER, 40000, 9100)), 'reload adds 9100 back: the flow opens again')
})

t.test('the first fragment is judged; a later fragment goes only where its first fragment went', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  enforce(p, [policy(0, [udpAcl(9100)], '172.26.0.0/20')], 1)
  const first = udp(A_VA, PRINTER, 40000, 22)
  first[6] = 0x20 // more fragments
  t.notOk(send(p, first), 'a first fragment to a port no policy allows is dropped')
  const later = udp(A_VA, PRINTER, 0, 0)
  later[7] = 185 // offset 1480 bytes
  t.notOk(send(p, later), 'so is its later fragment (fragments.test.ts has the rest)')
  t.equal(reason(p, 'fragment_orphan'), 1, 'counted as fragment_orphan')
})

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')

t.test(
  'with 100 policies, established packets, new flows and own flows allocate nothing',
  { skip: fs.existsSync(path.join(ROOT, 'lib/bench/testbed.js')) ? false : 'run `npm run build` first (npm test does)' },
  async (t) => {
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        'env',
        ['-i', `PATH=${process.env.PATH}`, process.execPath, '--expose-gc', path.join(ROOT, 'test/helpers/policy-pipeline-probe.mjs')],
        { cwd: ROOT, timeout: 60000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      )
    })
    const r = JSON.parse(out) as { gcs: number; kinds: number[]; heapGrowth: number; packets: number }
    t.equal(r.gcs, 0, `garbage collections during ${r.packets} packets: ${r.gcs} (kinds ${r.kinds.join(',')})`)
    t.ok(r.heapGrowth / r.packets < 0.25, `heap growth ${(r.heapGrowth / 1024).toFixed(0)} KiB`)
  },
)

t.test('-v 5: a drop is logged with the policy whose Acls did not match, or "no policy allows"', async (t) => {
  const msgs: Array<{ t: string; verdict?: string }> = []
  const p = sessionPair(4, (m) => msgs.push(m as { t: string; verdict?: string }))
  p.client.setClock(Date.now())
  enforce(p, [policy(0, [udpAcl(9100)], '172.26.0.0/20')], 1)
  p.exit.logLevel = 5
  send(p, udp(A_VA, PRINTER, 40000, 22))
  send(p, udp(A_VA, B_VA, 40000, 22))
  const verdicts = msgs.filter((m) => m.t === 'flow').map((m) => m.verdict)
  t.match(verdicts, [/^drop: no policy allows \(Policies\[0\] "p0": protocol or port not in its Acls\)$/, /^drop: no policy allows$/])
})

t.test('an ICMP error from the peer passes only when it quotes a flow tracked with that peer', async (t) => {
  const p = sessionPair(4)
  p.client.setClock(Date.now())
  enforce(p, [policy(0, [udpAcl(9100)], '172.26.0.0/20')], 1)
  const ours = udp(B_VA, A_VA, 30000, 53)
  t.ok(reply(p, ours), "the exit node's own flow to the client")
  const error = (quoted: Uint8Array) => {
    const b = new Uint8Array(20 + 8 + 28)
    b[0] = 0x45
    b[3] = b.length
    b[8] = 64
    b[9] = 1
    ip4(b, 12, A_VA)
    ip4(b, 16, B_VA)
    b[20] = 3
    b[21] = 3
    b.set(quoted.subarray(0, 28), 28)
    return b
  }
  t.ok(send(p, error(ours)), 'port unreachable quoting it passes')
  t.notOk(send(p, error(udp(B_VA, A_VA, 30001, 53))), 'quoting a packet of no tracked flow: dropped (no policy allows Icmp here)')
})
