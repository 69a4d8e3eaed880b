import t from 'tap'
import { until } from '../helpers/until.js'
import http from 'node:http'
import net from 'node:net'
import { METRICS_LIMITS, startMetrics, type MetricsStatus } from '../../src/agent/observability/metrics.js'
import { STATUS_VERSION } from '../../src/views/status-model.js'

function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = ''
        res.on('data', (d) => {
          body += d
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }))
      })
      .on('error', reject)
  })
}

function fake(rx: number): MetricsStatus {
  const peer = (identity: string, state: 'Up' | 'Down', hs: number | null, n: number) => ({
    identity,
    publicKey: 'x',
    state,
    virtualAddress: '100.64.0.2',
    lastHandshakeSecondsAgo: hs,
    lastActivitySecondsAgo: null,
    rxBytes: n,
    txBytes: 2 * n,
    rxPackets: 3,
    txPackets: 4,
    exitNodeFor: [],
  })
  return {
    version: STATUS_VERSION,
    running: true,
    releaseVersion: '0',
    localIdentity: 'AAAAA',
    publicKey: 'x',
    profileLocation: '/x',
    virtualAddress: '100.64.0.1',
    interface: 'enclave0',
    exitNode: { providesRoutes: [], activeFlows: 7, unsolicitedDrops: 11, users: [], warnings: [] },
    counters: { replay: 5, bad_mac: 0, keepalive: 9 },
    peers: [peer('G982V', 'Up', 12.5, rx), peer('7QK2M', 'Down', null, 0)],
    workerRestarts: 2,
  }
}

t.test('the metrics endpoint serves the status model over real HTTP', async (t) => {
  let rx = 1000
  let calls = 0
  const m = await startMetrics('127.0.0.1:0', () => {
    calls++
    return fake(rx)
  })
  t.teardown(() => m.close())
  t.match(m.address, /^127\.0\.0\.1:\d+$/)
  const r = await get(`http://${m.address}/metrics`)
  t.equal(r.status, 200)
  t.match(r.type, /^text\/plain; version=0\.0\.4/)
  t.equal(calls, 1, 'one status snapshot per scrape')
  const lines = r.body.split('\n')
  const has = (l: string) => t.ok(lines.includes(l), l)
  has('enclave_peer_rx_bytes_total{identity="G982V"} 1000')
  has('enclave_peer_tx_bytes_total{identity="G982V"} 2000')
  has('enclave_peer_rx_packets_total{identity="7QK2M"} 3')
  has('enclave_peer_tx_packets_total{identity="7QK2M"} 4')
  has('enclave_peer_last_handshake_age_seconds{identity="G982V"} 12.5')
  t.notOk(r.body.includes('enclave_peer_last_handshake_age_seconds{identity="7QK2M"}'), 'no handshake yet: no sample')
  has('enclave_peer_state{identity="G982V",state="Up"} 1')
  has('enclave_peer_state{identity="G982V",state="Down"} 0')
  has('enclave_peer_state{identity="7QK2M",state="Down"} 1')
  has('enclave_drops_total{reason="replay"} 5')
  has('enclave_drops_total{reason="bad_mac"} 0')
  t.notOk(r.body.includes('reason="keepalive"'), 'keepalives are not drops')
  has('enclave_events_total{event="keepalive"} 9')
  has('enclave_conntrack_entries 7')
  has('enclave_unsolicited_lan_drops_total 11')
  has('enclave_worker_restarts_total 2')
  has('# TYPE enclave_drops_total counter')

  rx = 5000
  const again = await get(`http://${m.address}/metrics`)
  t.ok(again.body.split('\n').includes('enclave_peer_rx_bytes_total{identity="G982V"} 5000'), 'values are read at scrape time')
  t.equal((await get(`http://${m.address}/other`)).status, 404)
})

t.test('connections held open are capped and idle ones closed', async (t) => {
  const limits = { maxConnections: METRICS_LIMITS.maxConnections, idleMs: 400 }
  const m = await startMetrics('127.0.0.1:0', () => fake(0), undefined, limits)
  t.teardown(() => m.close())
  const [host, port] = [m.address.split(':')[0], Number(m.address.split(':')[1])]
  let closed = 0
  const socks = Array.from({ length: 100 }, () => {
    const s = net.createConnection(port, host)
    s.on('error', () => undefined)
    s.on('close', () => closed++)
    return s
  })
  t.teardown(() => {
    for (const s of socks) s.destroy()
  })
  // Before the idle timeout: only the connections beyond the cap are closed.
  await until(() => closed >= 100 - limits.maxConnections, limits.idleMs / 2)
  t.equal(closed, 100 - limits.maxConnections, `beyond ${limits.maxConnections} the endpoint closes connections as they arrive`)
  t.ok(await until(() => closed === 100, 5000), `idle connections are closed (${closed} of 100)`)
  t.equal((await get(`http://${m.address}/metrics`)).status, 200, 'a scrape works again')
})

t.test('a provider that throws gives 500, and a busy port is an error', async (t) => {
  const m = await startMetrics('127.0.0.1:0', () => {
    throw new Error('agent stopping')
  })
  t.teardown(() => m.close())
  const r = await get(`http://${m.address}/metrics`)
  t.equal(r.status, 500)
  t.match(r.body, /agent stopping/)
  await t.rejects(
    startMetrics(m.address, () => fake(0)),
    { code: 'EADDRINUSE' },
  )
})

t.test('a metrics endpoint beyond loopback is warned about (it has no authentication)', async (t) => {
  const { metricsOnLoopback } = await import('../../src/agent/observability/metrics.js')
  t.ok(metricsOnLoopback('127.0.0.1:9586'))
  t.ok(metricsOnLoopback('localhost:9586'))
  t.ok(metricsOnLoopback('[::1]:9586'))
  t.notOk(metricsOnLoopback('0.0.0.0:9586'), '0.0.0.0 is every interface')
  t.notOk(metricsOnLoopback('198.18.0.1:9586'))
})
