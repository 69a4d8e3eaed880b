/**
 * TUN-side fuzzing of an exit node: a LAN host sends hostile raw Ethernet frames (test/helpers/lan-fuzz.py)
 * at the exit node's LAN interface while the client pings through the exit node. The exit node's kernel
 * drops what is not valid IPv4 and forwards the rest towards the overlay, i.e. into the agent's TUN.
 * The agent stays up, forwards none of it to the client, the ping keeps working, and its memory stays flat.
 */
import fs from 'node:fs'
import t from 'tap'
import { haveCommand, Lab, peerEntry, ROOT, rootSkipReason, statusJson } from '../helpers/netns.js'

const FRAMES = Number(process.env.ENCLAVE_LAN_FUZZ_FRAMES ?? 100_000)
const skip =
  rootSkipReason() ||
  (!haveCommand('iptables') ? 'iptables is not installed' : false) ||
  (!haveCommand('python3') ? 'python3 is not installed (the LAN fuzzer uses AF_PACKET from Python)' : false)

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : Number.NaN
}

if (skip) {
  t.skip(`LAN-side fuzzing of an exit node: ${skip}`)
} else {
  t.test('malformed and unsolicited IPv4 from the LAN into an exit node', async (t) => {
    const lab = new Lab('lf')
    t.teardown(() => lab.cleanup())
    const [nsC, nsE, nsL] = await Promise.all(['client', 'exit', 'lan'].map((n) => lab.addNs(n)))
    await lab.link(nsC, 'eth0', '198.18.0.1/30', nsE, 'wan0', '198.18.0.2/30')
    await lab.link(nsE, 'lan0', '172.26.0.3/20', nsL, 'eth0', '172.26.0.250/20')
    await lab.guideExitNode(nsE, '172.26.0.3', { dst: '172.26.0.0/20' })
    // Forged sources must reach the agent (the kernel's reverse-path filter would otherwise hide them).
    for (const k of ['all', 'default', 'lan0']) await lab.exec(nsE, 'sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=0`])
    const C = lab.makeAgent({ name: 'client', ns: nsC })
    const E = lab.makeAgent({ name: 'exit', ns: nsE })
    lab.writeAgentProfile(E, { Peers: [peerEntry(C)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] } })
    lab.writeAgentProfile(C, {
      Peers: [peerEntry(E, { Endpoint: '198.18.0.2:51820' })],
      ExitNode: { AvailableRoutes: { [E.identity]: ['172.26.0.0/20'] } },
    })
    const e = lab.startAgent(E, ['-v', '2'])
    const c = lab.startAgent(C, ['-v', '2'])
    await e.waitFor(/control socket ready/)
    await c.waitFor(/control socket ready/)
    const warm = await lab.exec(nsC, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '172.26.0.250'])
    t.equal(warm.code, 0, `the client reaches the LAN host through the exit node\n${warm.stdout}`)

    const exitMac = JSON.parse((await lab.exec(nsE, 'ip', ['-j', 'link', 'show', 'lan0'])).stdout)[0].address
    const fuzz = (sources: 'lan' | 'forged', frames: number, kinds?: string) =>
      lab.exec(
        nsL,
        'python3',
        [`${ROOT}/test/helpers/lan-fuzz.py`, 'eth0', exitMac, '172.26.0.250', C.va, String(frames), sources, ...(kinds ? [kinds] : [])],
        180000,
      )
    const rssStart = rssMb(e.pid!)

    /** One round: the client pings the LAN host while the LAN host fuzzes; returns what got through. */
    const round = async (sources: 'lan' | 'forged', frames: number) => {
      const eBefore = await statusJson(lab, E)
      const cBefore = await statusJson(lab, C)
      const rssBefore = rssMb(e.pid!)
      const ping = lab.spawn(nsC, 'ping', ['-i', '0.1', '-W', '1', '172.26.0.250'])
      let pingOut = ''
      ping.stdout!.on('data', (d) => (pingOut += d))
      const pingDone = new Promise((r) => ping.on('exit', r))
      const started = Date.now()
      const fz = await fuzz(sources, frames)
      const seconds = (Date.now() - started) / 1000
      await new Promise((r) => setTimeout(r, 1000))
      process.kill(ping.pid!, 'SIGINT')
      await pingDone
      t.equal(fz.code, 0, `the LAN fuzzer ran (${sources} sources): ${fz.stdout.trim()} ${fz.stderr.slice(0, 500)}`)
      const sent = fz.code === 0 ? JSON.parse(fz.stdout).sent : 0
      t.comment(`LAN fuzz, ${sources} sources: ${sent} frames in ${seconds.toFixed(1)} s (${Math.round(sent / seconds / 1000)} k frames/s)`)
      const eAfter = await statusJson(lab, E)
      const cAfter = await statusJson(lab, C)
      const m = /(\d+) packets transmitted, (\d+) received/.exec(pingOut)
      const [txd, rcvd] = m ? [Number(m[1]), Number(m[2])] : [0, 0]
      const drops = Object.fromEntries(
        Object.keys(eAfter.counters)
          .map((k) => [k, eAfter.counters[k] - eBefore.counters[k]])
          .filter(([, v]) => v),
      )
      return {
        sent,
        txd,
        rcvd,
        running: eAfter.running === true && e.running,
        // Everything the client received from the exit node: the echo replies, at most a few keepalives, and any fuzz let through.
        cRx: cAfter.peers[0].rxPackets - cBefore.peers[0].rxPackets,
        eTx: eAfter.peers[0].txPackets - eBefore.peers[0].txPackets,
        unsolicited: eAfter.counters.unsolicited - eBefore.counters.unsolicited,
        drops,
        rssBefore,
        rssAfter: rssMb(e.pid!),
      }
    }

    // Sources inside ProvidesRoutes (the LAN host's own address and its neighbours'): the reply-only check applies.
    const lan = await round('lan', FRAMES / 2)
    t.ok(lan.sent >= (FRAMES / 2) * 0.99, `${lan.sent} frames sent`)
    t.ok(lan.running, 'the exit node survived the LAN fuzzing')
    t.ok(lan.txd > 0 && lan.rcvd >= lan.txd * 0.8, `the ping kept working during the fuzz: ${lan.rcvd}/${lan.txd} answered`)
    t.ok(
      lan.cRx <= lan.rcvd + 3,
      `the client received ${lan.cRx} packets from the exit node for ${lan.rcvd} echo replies: none of the fuzz`,
    )
    t.ok(
      lan.unsolicited > 1000,
      `fuzz that reached the TUN was dropped as unsolicited (${lan.unsolicited}); drops ${JSON.stringify(lan.drops)}`,
    )

    // Forged sources outside ProvidesRoutes (overlay addresses, the client's own, public ones).
    const forged = await round('forged', FRAMES / 2)
    t.ok(forged.running, 'the exit node survived the forged-source fuzzing')
    const leak = forged.cRx - forged.rcvd
    t.ok(leak <= 3, `the client received ${forged.cRx} packets for ${forged.rcvd} echo replies: none of the forged fuzz`)
    t.ok(forged.rcvd >= forged.txd * 0.8, `the ping kept working during the forged fuzz: ${forged.rcvd}/${forged.txd} answered`)
    const rssEnd = rssMb(e.pid!)
    t.ok(rssEnd < rssStart + 48, `the exit node's memory stays flat: RSS ${rssStart.toFixed(1)} MB before, ${rssEnd.toFixed(1)} MB after`)
    t.comment(
      `exit node RSS: ${rssStart.toFixed(1)} MB at start, ${lan.rssAfter.toFixed(1)} after the LAN round, ${rssEnd.toFixed(1)} at the end; ` +
        `drops ${JSON.stringify(lan.drops)} / ${JSON.stringify(forged.drops)}`,
    )
    const after = await lab.exec(nsC, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '172.26.0.250'])
    t.equal(after.code, 0, 'the client still reaches the LAN host after the fuzz')
    t.equal(await c.stop(), 0, 'the client exits cleanly')
    t.equal(await e.stop(), 0, 'the exit node exits cleanly')
  })
}
