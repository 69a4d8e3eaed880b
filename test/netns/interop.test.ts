import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { Lab, haveCommand, pingArgs, rootSkipReason, statusJson } from '../helpers/netns.js'

const skip =
  rootSkipReason() ||
  (!haveCommand('wireguard-go') || !haveCommand('wg')
    ? 'wireguard-go and wireguard-tools are not installed (apt-get install wireguard-go wireguard-tools)'
    : false)
if (skip) {
  t.skip(`wireguard-go interop tests: ${skip}`)
} else {
  for (const initiator of ['agent', 'wireguard-go'] as const) {
    t.test(`interop with stock wireguard-go, ${initiator} initiates`, async (t) => {
      const lab = new Lab(initiator === 'agent' ? 'ia' : 'iw')
      t.teardown(() => lab.cleanup())
      const nsA = await lab.addNs('a')
      const nsW = await lab.addNs('w')
      await lab.link(nsA, 'eth0', '198.18.0.1/30', nsW, 'eth0', '198.18.0.2/30')
      const wgKey = execFileSync('wg', ['genkey']).toString().trim()
      const wgPub = execFileSync('wg', ['pubkey'], { input: wgKey }).toString().trim()
      const A = lab.makeAgent({ name: 'agent', ns: nsA })
      const wgVa = '100.64.0.2'
      // Only the initiating side knows the other's endpoint.
      lab.writeAgentProfile(A, {
        Peers: [
          {
            PublicKey: wgPub,
            VirtualAddress: wgVa,
            Description: 'wireguard-go',
            ...(initiator === 'agent' ? { Endpoint: '198.18.0.2:51820' } : {}),
          },
        ],
      })
      const keyFile = path.join(lab.tmp, 'wg.key')
      fs.writeFileSync(keyFile, wgKey + '\n', { mode: 0o600 })
      const dev = lab.wgDeviceName()
      const r = await lab.wireguardGo(nsW, dev)
      t.equal(r.code, 0, `wireguard-go started${r.code ? ': ' + r.stderr : ''}`)
      const setArgs = ['set', dev, 'listen-port', '51820', 'private-key', keyFile, 'peer', A.publicKey, 'allowed-ips', `${A.va}/32`]
      if (initiator === 'wireguard-go') setArgs.push('endpoint', '198.18.0.1:51820')
      t.equal((await lab.exec(nsW, 'wg', setArgs)).code, 0, 'wg set')
      await lab.exec(nsW, 'ip', ['addr', 'add', `${wgVa}/10`, 'dev', dev])
      await lab.exec(nsW, 'ip', ['link', 'set', dev, 'mtu', '1420', 'up'])
      const a = lab.startAgent(A)
      await a.waitFor(/control socket ready/)

      const first = initiator === 'agent' ? await lab.exec(nsA, 'ping', pingArgs(wgVa)) : await lab.exec(nsW, 'ping', pingArgs(A.va))
      t.equal(first.code, 0, `${initiator} side pings first and the handshake completes\n${first.stdout}`)
      const second = initiator === 'agent' ? await lab.exec(nsW, 'ping', pingArgs(A.va)) : await lab.exec(nsA, 'ping', pingArgs(wgVa))
      t.equal(second.code, 0, 'the other side pings back over the same session')
      const show = await lab.exec(nsW, 'wg', ['show', dev, 'latest-handshakes'])
      const ts = Number(show.stdout.trim().split(/\s+/)[1])
      t.ok(ts > 0, 'wireguard-go reports a completed handshake with our agent')
      await a.waitFor(initiator === 'agent' ? /handshake complete \(we initiated\)/ : /handshake complete \(peer initiated\)/)
      if (haveCommand('iperf3')) {
        const srv = lab.spawn(nsW, 'iperf3', ['-s', '-1', '-B', wgVa])
        await new Promise((res) => setTimeout(res, 400))
        const ip = await lab.exec(nsA, 'iperf3', ['-c', wgVa, '-t', '2', '-J'], 30000)
        t.equal(ip.code, 0, 'TCP between agent and wireguard-go')
        if (ip.code === 0)
          t.comment(`agent -> wireguard-go TCP: ${(JSON.parse(ip.stdout).end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s`)
        srv.kill('SIGKILL')
      }
      const st = await statusJson(lab, A)
      t.equal(st.peers[0].state, 'Up')
      t.equal(st.peers[0].endpoint, '198.18.0.2:51820', 'endpoint learned or configured')
      t.equal(await a.stop(), 0)
    })
  }
}
