/**
 * `enclave export wireguard` against stock wireguard-go: the exported config, loaded with
 * `wg setconf`, joins our agent and pings through it. Then the route commands on the running
 * agent: exit-node provide and route add/remove apply without a restart.
 */
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

t.test('a stock wireguard-go peer joins with the exported config; route commands apply live', { skip }, async (t) => {
  const lab = new Lab('xw')
  const dev = `wgx${process.pid % 100000}`
  const wgSock = `/var/run/wireguard/${dev}.sock`
  t.teardown(async () => {
    await lab.cleanup()
    fs.rmSync(wgSock, { force: true })
  })
  const nsA = await lab.addNs('a')
  const nsW = await lab.addNs('w')
  await lab.link(nsA, 'eth0', '198.18.0.1/30', nsW, 'eth0', '198.18.0.2/30')
  const wgKey = execFileSync('wg', ['genkey']).toString().trim()
  const wgPub = execFileSync('wg', ['pubkey'], { input: wgKey }).toString().trim()
  const keyFile = path.join(lab.tmp, 'phone.key')
  fs.writeFileSync(keyFile, `${wgKey}\n`, { mode: 0o600 })
  const A = lab.makeAgent({ name: 'agent', ns: nsA })

  const add = await lab.cli(A, ['add', wgPub, '-d', 'phone', '--json'])
  t.equal(add.code, 0, add.stderr)
  const phone = JSON.parse(add.stdout) as { identity: string; virtualAddress: string; applied: boolean }
  t.equal(phone.applied, false, 'no agent yet: saved only')
  const a = lab.startAgent(A)
  await a.waitFor(/control socket ready/)

  const ex = await lab.cli(A, ['export', 'wireguard', phone.identity, '--endpoint', '198.18.0.1:51820', '--private-key-file', keyFile])
  t.equal(ex.code, 0, ex.stderr)
  t.match(ex.stdout, new RegExp(`Address = ${phone.virtualAddress.replace(/\./g, '\\.')}/32`))
  t.match(ex.stdout, new RegExp(`AllowedIPs = ${A.va.replace(/\./g, '\\.')}/32\\n`))
  t.match(ex.stdout, `PublicKey = ${A.publicKey}`)
  const noKey = await lab.cli(A, ['export', 'wireguard', phone.identity])
  t.notMatch(noKey.stdout, wgKey, 'without --private-key-file the config holds no private key')
  t.match(noKey.stderr, /fill in PrivateKey and Endpoint/)

  // wg setconf takes the config without wg-quick's Address line; the address and route are set as wg-quick would.
  const conf = path.join(lab.tmp, 'phone.conf')
  fs.writeFileSync(conf, ex.stdout.replace(/^Address = .*\n/m, ''), { mode: 0o600 })
  t.equal((await lab.exec(nsW, 'wireguard-go', [dev])).code, 0, 'wireguard-go started')
  const set = await lab.exec(nsW, 'wg', ['setconf', dev, conf])
  t.equal(set.code, 0, `wg setconf accepts the exported config ${set.stderr}`)
  await lab.exec(nsW, 'ip', ['addr', 'add', `${phone.virtualAddress}/32`, 'dev', dev])
  await lab.exec(nsW, 'ip', ['link', 'set', dev, 'mtu', '1420', 'up'])
  await lab.exec(nsW, 'ip', ['route', 'add', `${A.va}/32`, 'dev', dev])

  const ping = await lab.exec(nsW, 'ping', ['-I', phone.virtualAddress, ...pingArgs(A.va)])
  t.equal(ping.code, 0, `wireguard-go pings our agent through the tunnel\n${ping.stdout}${ping.stderr}`)
  const back = await lab.exec(nsA, 'ping', pingArgs(phone.virtualAddress))
  t.equal(back.code, 0, 'our agent pings the wireguard-go peer back')
  const st = await statusJson(lab, A)
  t.equal(st.peers[0].state, 'Up')

  // Route commands on the running agent.
  const prov = await lab.cli(A, ['exit-node', 'provide', '10.99.0.0/24'])
  t.equal(prov.code, 0, prov.stderr)
  t.match(prov.stdout, /Applied to the running agent/)
  t.same((await statusJson(lab, A)).exitNode.providesRoutes, ['10.99.0.0/24'])
  const again = await lab.cli(A, ['export', 'wireguard', phone.identity])
  t.match(again.stdout, new RegExp(`AllowedIPs = ${A.va.replace(/\./g, '\\.')}/32, 10\\.99\\.0\\.0/24`), 'export includes provided routes')

  const radd = await lab.cli(A, ['route', 'add', phone.identity, '10.98.0.0/24'])
  t.equal(radd.code, 0, radd.stderr)
  t.match(radd.stdout, /Installed: 10\.98\.0\.0\/24 through \w+\./, 'the route add says the route is installed')
  const peer = (await statusJson(lab, A)).peers[0]
  t.same(
    peer.exitNodeFor.map((r: { route: string }) => r.route),
    ['10.98.0.0/24'],
  )
  const osRoute = await lab.exec(nsA, 'ip', ['route', 'show', '10.98.0.0/24'])
  t.match(osRoute.stdout, /dev enclave0/, 'the OS route is installed without a restart')
  const rrm = await lab.cli(A, ['route', 'remove', phone.identity, '10.98.0.0/24'])
  t.equal(rrm.code, 0, rrm.stderr)
  t.equal((await lab.exec(nsA, 'ip', ['route', 'show', '10.98.0.0/24'])).stdout.trim(), '', 'and removed')
  const unprov = await lab.cli(A, ['exit-node', 'unprovide', '10.99.0.0/24'])
  t.equal(unprov.code, 0, unprov.stderr)
  t.same((await statusJson(lab, A)).exitNode.providesRoutes, [])

  // Metrics: MetricsListen added by hand, applied by reload, scraped over HTTP inside the namespace.
  const file = lab.profilePath(A)
  const raw = JSON.parse(fs.readFileSync(file, 'utf8'))
  fs.writeFileSync(file, JSON.stringify({ ...raw, MetricsListen: '127.0.0.1:9586' }, null, 2), { mode: 0o600 })
  t.equal((await lab.cli(A, ['reload'])).code, 0, 'reload applies MetricsListen')
  const scrape = await lab.exec(nsA, process.execPath, [
    '-e',
    "fetch('http://127.0.0.1:9586/metrics').then(async (r) => { console.log(r.status); console.log(await r.text()) })",
  ])
  t.match(scrape.stdout, /^200\n/, `the metrics endpoint answers ${scrape.stderr}`)
  t.match(scrape.stdout, new RegExp(`enclave_peer_state\\{identity="${phone.identity}",state="Up"\\} 1`), 'the peer is Up')
  const rx = new RegExp(`enclave_peer_rx_bytes_total\\{identity="${phone.identity}"[^}]*\\} (\\d+)`).exec(scrape.stdout)
  t.ok(rx && Number(rx[1]) > 0, `bytes received from the peer are counted (${rx?.[1]})`)
  t.match(scrape.stdout, /enclave_worker_restarts_total 0/)
  t.equal(await a.stop(), 0)
})
