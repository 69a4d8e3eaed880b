/**
 * The NAT lab of issue 20 (src/lab/nat.ts, hub spec §4.5): each router profile behaves as the spec's table
 * says, seen from outside with python3 UDP probes in the namespaces.
 *
 *   [hN 10.N.0.2] ── lan0 ── [natN 10.N.0.1 | 198.51.100.(10+N)] ── inet0 ── [hub .10] [p1 .20] [p2 .21] [p3 .22]
 *
 * Sites: 1 easy, 2 fullcone, 3 masq (a second host 10.3.0.3), 4 hard, 5 udp-blocked, 6 short-timeout
 * (the spec's 10 s / 15 s), 7 short-timeout with 2 s / 3 s to watch a mapping expire. Public hosts echo
 * every datagram with the source address and port they saw.
 */
import t from 'tap'
import { type NatHost, NatLab, type NatProfile, type NatSite, UdpPeer } from '../../src/lab/nat.js'
import { Lab, haveCommand, rootSkipReason } from '../helpers/netns.js'

const skip =
  rootSkipReason() ||
  (!haveCommand('iptables') ? 'iptables is not installed' : false) ||
  (!haveCommand('python3') ? 'python3 is not installed' : false) ||
  (!haveCommand('conntrack') ? 'conntrack is not installed (apt-get install conntrack)' : false)

const PROFILES: NatProfile[] = ['easy', 'fullcone', 'masq', 'hard', 'udp-blocked', 'short-timeout']
const ECHO = 7000
const ECHO2 = 7001
const HOST_PORT = 51820

t.test('NAT router profiles in namespaces', { skip }, async (t) => {
  const lab = new Lab('nat')
  t.teardown(() => lab.cleanup())
  const nat = new NatLab(lab)

  // One after another: a namespace still being made when a failure tears the lab down would be left behind.
  const hub = await nat.publicHost('hub', '198.51.100.10')
  const p1 = await nat.publicHost('p1', '198.51.100.20')
  const p2 = await nat.publicHost('p2', '198.51.100.21')
  const p3 = await nat.publicHost('p3', '198.51.100.22')
  const pub = new Map<NatHost, UdpPeer>()
  for (const h of [hub, p1, p2, p3]) pub.set(h, await UdpPeer.start(lab, h.ns, { udp: [ECHO, ECHO2], tcp: [ECHO], echo: true }))
  const P1 = pub.get(p1) as UdpPeer
  const P3 = pub.get(p3) as UdpPeer

  const site: Record<string, NatSite> = {}
  const host: Record<string, UdpPeer> = {}
  for (const [i, profile] of PROFILES.entries()) {
    site[profile] = await nat.site(i + 1, profile)
    const h = await nat.siteHost(site[profile], `h${i + 1}`)
    host[profile] = await UdpPeer.start(lab, h.ns, { udp: [HOST_PORT] })
  }

  // A second host on the masq LAN (10.3.0.3), and site 7: short-timeout with 2 s / 3 s timeouts to see expiry quickly.
  const h3b = await nat.siteHost(site.masq, 'h3b')
  const lanPeer = await UdpPeer.start(lab, h3b.ns, { udp: [HOST_PORT], echo: true })
  const quick = await nat.site(7, 'short-timeout', { udpTimeout: 2, udpStreamTimeout: 3 })
  const quickHost = await UdpPeer.start(lab, (await nat.siteHost(quick, 'h7')).ns, { udp: [HOST_PORT] })

  // Ground-truth counters on the easy router, set before any traffic: p2 gets traffic, p3 (in) and the hub none yet.
  await nat.watchPeer(site.easy, p2.addr)
  await nat.watchPeer(site.easy, hub.addr)

  await t.test('mapped source port seen from three destinations: one mapping (EIM) except hard', async (t) => {
    for (const profile of ['easy', 'fullcone', 'masq', 'hard', 'short-timeout'] as const) {
      const s = site[profile]
      const seen = []
      for (const [ip, port] of [
        [p1.addr, ECHO],
        [p1.addr, ECHO2],
        [p2.addr, ECHO],
      ] as const) {
        const o = await host[profile].observe(ip, port)
        if (!o) t.fail(`${profile}: no answer from ${ip}:${port}`)
        else seen.push(o)
      }
      t.equal(seen.length, 3, `${profile}: all three destinations answered`)
      t.same(
        seen.map((o) => o.addr),
        [s.wanAddr, s.wanAddr, s.wanAddr],
        `${profile}: every destination sees the router's WAN address ${s.wanAddr}`,
      )
      const ports = new Set(seen.map((o) => o.port))
      if (profile === 'hard')
        // --random-fully: a fresh random port per destination; all three equal by chance has odds ~1e-9.
        t.ok(ports.size > 1, `hard: the destinations see different ports (${seen.map((o) => o.port).join(', ')})`)
      else t.same([...ports], [HOST_PORT], `${profile}: every destination sees port ${HOST_PORT} (${seen.map((o) => o.port).join(', ')})`)
    }
  })

  await t.test('unsolicited datagrams from a third host: fullcone passes them, easy and hard do not', async (t) => {
    // Every host has sent from HOST_PORT to p1 and p2 above (the mapping exists); p3 never talked to any.
    for (const profile of ['easy', 'fullcone', 'hard'] as const) {
      const s = site[profile]
      const text = `unsolicited-to-${profile}`
      // For hard, aim at the port p1 saw (the mapping exists, but only for p1).
      const o = await host[profile].observe(p1.addr, ECHO)
      if (!o) {
        t.fail(`${profile}: p1 did not answer`)
        continue
      }
      P3.send(s.wanAddr, o.port, text)
      const got = await host[profile].waitFor((e) => e.ev === 'recv' && e.data === text, 1000)
      if (profile === 'fullcone')
        t.equal(got?.from, p3.addr, `fullcone: p3's datagram to ${s.wanAddr}:${o.port} reached the host from ${p3.addr}`)
      else t.notOk(got, `${profile}: p3's datagram to ${s.wanAddr}:${o.port} was dropped (the solicited answer from p1 came through)`)
    }
  })

  await t.test('udp-blocked drops UDP out but lets TCP through', async (t) => {
    const s = site['udp-blocked']
    const o = await host['udp-blocked'].observe(p1.addr, ECHO, 0, 1000)
    t.notOk(o, 'no UDP answer from p1')
    t.same(P1.received(s.wanAddr), [], 'p1 received no datagram from the router')
    const tcp = await host['udp-blocked'].tcpConnect(p1.addr, ECHO)
    t.match(
      tcp,
      new RegExp(`^seen ${s.wanAddr.replaceAll('.', '\\.')}:\\d+$`),
      `TCP to p1 connects, seen from the router's address (${tcp})`,
    )
  })

  await t.test("the easy router's WAN counters grow with the packets sent to a peer, and only for that peer", async (t) => {
    const before = await nat.wanCounters(site.easy)
    const N = 20
    const texts = Array.from({ length: N }, (_, i) => `count-${i}`)
    for (const x of texts) host.easy.send(p2.addr, ECHO, x)
    for (const x of texts)
      t.ok(await host.easy.waitFor((e) => e.ev === 'recv' && e.from === p2.addr && e.data?.endsWith(` ${x}`) === true), `answer ${x}`)
    const after = await nat.wanCounters(site.easy)
    const d = (peer: string, k: 'inPackets' | 'outPackets') => (after[peer]?.[k] ?? 0) - (before[peer]?.[k] ?? 0)
    t.equal(d(p2.addr, 'outPackets'), N, `out to p2: ${d(p2.addr, 'outPackets')} packets for ${N} sent`)
    t.equal(d(p2.addr, 'inPackets'), N, `in from p2: ${d(p2.addr, 'inPackets')} packets for ${N} answers`)
    t.ok(after[p2.addr].outBytes > before[p2.addr].outBytes, 'bytes out to p2 grew')
    t.same(after[hub.addr], { inPackets: 0, inBytes: 0, outPackets: 0, outBytes: 0 }, 'the hub, sent nothing, counts nothing')
  })

  await t.test('short-timeout: conntrack UDP timeouts of the router namespace only', async (t) => {
    const read = async (ns: string, key: string) => (await lab.exec(ns, 'sysctl', ['-n', `net.netfilter.${key}`])).stdout.trim()
    t.equal(await read(site['short-timeout'].router, 'nf_conntrack_udp_timeout'), '10', 'short-timeout router: udp_timeout 10')
    t.equal(
      await read(site['short-timeout'].router, 'nf_conntrack_udp_timeout_stream'),
      '15',
      'short-timeout router: udp_timeout_stream 15',
    )
    const other = await read(site.easy.router, 'nf_conntrack_udp_timeout')
    t.not(other, '10', `the easy router keeps its own (${other}): the sysctl is per namespace`)
    // The entries' remaining lifetimes (3rd field of conntrack -L): at most the namespace's timeouts.
    const o1 = await host['short-timeout'].observe(p3.addr, ECHO2)
    const o2 = await host.easy.observe(p3.addr, ECHO2)
    t.ok(o1 && o2, 'both hosts reached p3')
    const ttl = async (s: NatSite) => {
      const line = (await nat.conntrackUdp(s)).find((l) => l.includes(`dst=${p3.addr}`) && l.includes(`dport=${ECHO2}`))
      return Number(line?.split(/\s+/)[2] ?? Number.NaN)
    }
    const short = await ttl(site['short-timeout'])
    const easy = await ttl(site.easy)
    t.ok(short > 0 && short <= 15, `short-timeout entry expires in ${short} s (≤ 15)`)
    t.ok(easy > 15, `easy entry expires in ${easy} s (the default, > 15)`)
  })

  await t.test('short conntrack timeouts: an idle mapping closes, one kept alive stays open', async (t) => {
    const P2 = pub.get(p2) as UdpPeer
    t.ok(await quickHost.observe(p1.addr, ECHO), 'the host reached p1 (mapping 1)')
    t.ok(await quickHost.observe(p2.addr, ECHO), 'the host reached p2 (mapping 2)')
    P1.send(quick.wanAddr, HOST_PORT, 'p1-early')
    t.ok(await quickHost.waitFor((e) => e.data === 'p1-early', 1000), 'p1 gets through its fresh mapping')
    // 3.5 s with a keepalive to p2 every 0.5 s and nothing to or from p1: p1's entry (≤ 3 s) expires.
    for (let i = 0; i < 7; i++) {
      await new Promise((r) => setTimeout(r, 500))
      quickHost.send(p2.addr, ECHO, `keepalive-${i}`)
    }
    P1.send(quick.wanAddr, HOST_PORT, 'p1-late')
    P2.send(quick.wanAddr, HOST_PORT, 'p2-late')
    t.ok(await quickHost.waitFor((e) => e.data === 'p2-late', 1000), 'p2, kept alive, still gets through')
    t.notOk(await quickHost.waitFor((e) => e.data === 'p1-late', 500), "p1's idle mapping expired: its datagram is dropped")
  })

  await t.test('two hosts on one LAN reach each other directly (no NAT, no hairpin)', async (t) => {
    const o = await host.masq.observe(h3b.addr, HOST_PORT)
    t.same(o && [o.addr, o.port], [site.masq.hosts[0].addr, HOST_PORT], `the LAN neighbour sees ${o?.addr}:${o?.port}`)
    t.equal(lanPeer.received(site.masq.wanAddr).length, 0, 'and nothing from the router address')
  })

  await t.test('rebinding changes the mapping a peer observes', async (t) => {
    const before = await host.easy.observe(p1.addr, ECHO)
    t.same(before && [before.addr, before.port], [site.easy.wanAddr, HOST_PORT], `easy before: ${before?.addr}:${before?.port}`)
    const deleted = await nat.rebind(site.easy, { port: 51821 })
    t.ok(deleted >= 1, `conntrack -D -p udp deleted ${deleted} entries`)
    const after = await host.easy.observe(p1.addr, ECHO)
    t.same(after && [after.addr, after.port], [site.easy.wanAddr, 51821], `easy after a new SNAT port: ${after?.addr}:${after?.port}`)

    // masq: only an address change of wan0, no conntrack tool: MASQUERADE drops its entries itself.
    const m0 = await host.masq.observe(p1.addr, ECHO)
    t.equal(m0?.addr, site.masq.wanAddr, `masq before: ${m0?.addr}:${m0?.port}`)
    await nat.rebind(site.masq, { addr: '198.51.100.113', flush: false })
    // MASQUERADE drops the entries of a deleted address from a work queue: allow it a moment (≤ 2 s).
    let m1 = await host.masq.observe(p1.addr, ECHO, 0, 200)
    for (let i = 0; i < 10 && !m1; i++) m1 = await host.masq.observe(p1.addr, ECHO, 0, 200)
    t.equal(m1?.addr, '198.51.100.113', `masq after the wan0 address change: ${m1?.addr}:${m1?.port}`)
  })

  await t.test('a delay on the hub link shows in the round trip', async (t) => {
    const DELAY = 20
    const base = await host.easy.observe(hub.addr, ECHO)
    const how = await nat.delay(hub.ns, hub.dev, DELAY)
    const slow = await host.easy.observe(hub.addr, ECHO)
    t.ok(
      slow && slow.rttMs >= DELAY,
      `round trip to the hub ${slow?.rttMs.toFixed(1)} ms with ${DELAY} ms delay by ${how} (${base?.rttMs.toFixed(2)} ms before)`,
    )
  })
})
