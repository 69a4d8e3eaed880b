/**
 * The opt-in Prometheus endpoint (profile key MetricsListen, e.g. "127.0.0.1:9586").
 *
 * Every metric is read at scrape time through prom-client collect() callbacks from one status
 * snapshot, taken once per scrape from a provider function: this module needs no access to the
 * agent's internals, only to the status model that `enclave status --json` prints.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Registry } from 'prom-client'
import type { StatusModel } from '../../views/status-model.js'
import { EVENT_REASONS } from '../../ipc/layout.js'

/** The status model, plus what the agent may add for metrics (worker restarts since start). */
export type MetricsStatus = StatusModel & { workerRestarts?: number }

/** Counters in `status.counters` that count events, not drops. */
const NOT_DROPS = EVENT_REASONS
const STATES = ['Up', 'Connecting', 'Down', 'Configured'] as const

export interface MetricsServer {
  /** The bound address, e.g. 127.0.0.1:9586 (useful with port 0). */
  address: string
  close(): Promise<void>
}

export interface MetricsLog {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

/** The registry with every enclave metric, reading `snapshot()` when scraped. */
export function enclaveRegistry(snapshot: () => MetricsStatus): Registry {
  const registry = new Registry()
  const registers = [registry]
  const peerLabels = ['identity'] as const
  const perPeer = (name: string, help: string, pick: (p: StatusModel['peers'][number]) => number) =>
    new Counter({
      name,
      help,
      labelNames: peerLabels,
      registers,
      collect() {
        this.reset()
        for (const p of snapshot().peers) this.inc({ identity: p.identity }, pick(p))
      },
    })
  perPeer('enclave_peer_rx_bytes_total', 'Bytes received from the peer (decrypted payload)', (p) => p.rxBytes)
  perPeer('enclave_peer_tx_bytes_total', 'Bytes sent to the peer (payload before encryption)', (p) => p.txBytes)
  perPeer('enclave_peer_rx_packets_total', 'Packets received from the peer', (p) => p.rxPackets)
  perPeer('enclave_peer_tx_packets_total', 'Packets sent to the peer', (p) => p.txPackets)
  new Gauge({
    name: 'enclave_peer_last_handshake_age_seconds',
    help: 'Seconds since the last completed handshake with the peer (absent: never)',
    labelNames: peerLabels,
    registers,
    collect() {
      this.reset()
      for (const p of snapshot().peers)
        if (p.lastHandshakeSecondsAgo !== null) this.set({ identity: p.identity }, p.lastHandshakeSecondsAgo)
    },
  })
  new Gauge({
    name: 'enclave_peer_state',
    help: 'Session state of the peer: 1 for its current state, 0 for the others',
    labelNames: ['identity', 'state'],
    registers,
    collect() {
      this.reset()
      for (const p of snapshot().peers) for (const s of STATES) this.set({ identity: p.identity, state: s }, p.state === s ? 1 : 0)
    },
  })
  new Counter({
    name: 'enclave_drops_total',
    help: 'Packets dropped by the data plane, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset()
      for (const [reason, n] of Object.entries(snapshot().counters ?? {})) if (!NOT_DROPS.has(reason)) this.inc({ reason }, n)
    },
  })
  new Counter({
    name: 'enclave_events_total',
    help: 'Data-plane events that are not drops (keepalives, packets staged for a handshake, handshake messages)',
    labelNames: ['event'],
    registers,
    collect() {
      this.reset()
      for (const [event, n] of Object.entries(snapshot().counters ?? {})) if (NOT_DROPS.has(event)) this.inc({ event }, n)
    },
  })
  new Gauge({
    name: 'enclave_conntrack_entries',
    help: 'Live exit-node connection-tracking entries',
    registers,
    collect() {
      this.set(snapshot().exitNode.activeFlows)
    },
  })
  new Counter({
    name: 'enclave_unsolicited_lan_drops_total',
    help: 'Packets from provided routes (the LAN) that tried to start traffic into the overlay, dropped',
    registers,
    collect() {
      this.reset()
      this.inc(snapshot().exitNode.unsolicitedDrops)
    },
  })
  new Counter({
    name: 'enclave_path_switches_total',
    help: 'Switches of a hub peer between its direct path and the relay (issue 20)',
    registers,
    collect() {
      this.reset()
      this.inc(snapshot().pathSwitches ?? 0)
    },
  })
  perPeer(
    'enclave_peer_relayed_bytes_total',
    'Payload bytes (in and out) moved while the path to the peer was a relay',
    (p) => p.relayedBytes ?? 0,
  )
  new Gauge({
    name: 'enclave_peer_path',
    help: 'The path to a hub peer: 1 for the path in use (direct, local, relay-udp)',
    labelNames: ['identity', 'path'],
    registers,
    collect() {
      this.reset()
      for (const p of snapshot().peers) if (p.path) this.set({ identity: p.identity, path: p.path }, 1)
    },
  })
  new Counter({
    name: 'enclave_worker_restarts_total',
    help: 'Data-plane worker threads restarted after an unexpected exit',
    registers,
    collect() {
      this.reset()
      const n = snapshot().workerRestarts
      if (n !== undefined) this.inc(n)
    },
  })
  return registry
}

/** Parses "a.b.c.d:port" (validated in the profile as MetricsListen). */
function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':')
  return { host: listen.slice(0, i), port: Number(listen.slice(i + 1)) }
}

/**
 * What one client may hold of the endpoint. Anyone who can reach the address can connect, so
 * connections are capped (beyond the cap they are closed as they arrive) and idle ones are closed:
 * holding sockets open costs the agent no more than this many file descriptors.
 */
export interface MetricsLimits {
  maxConnections: number
  /** A connection idle this long (no request, or between keep-alive requests) is closed. */
  idleMs: number
}
export const METRICS_LIMITS: MetricsLimits = { maxConnections: 32, idleMs: 5000 }

/**
 * Serves GET /metrics on `listen` until close(). `status` is called once per scrape.
 * Rejects when the address cannot be bound (in use, not local).
 */
export async function startMetrics(
  listen: string,
  status: () => MetricsStatus,
  log?: MetricsLog,
  limits: MetricsLimits = METRICS_LIMITS,
): Promise<MetricsServer> {
  let current: MetricsStatus | undefined
  let queue: Promise<unknown> = Promise.resolve()
  const registry = enclaveRegistry(() => {
    if (!current) throw new Error('metrics read outside a scrape')
    return current
  })
  const server = http.createServer(
    {
      headersTimeout: limits.idleMs,
      requestTimeout: 2 * limits.idleMs,
      keepAliveTimeout: limits.idleMs,
      connectionsCheckingInterval: Math.min(1000, limits.idleMs), // Node's default checks only every 30 s
    },
    (req, res) => {
      const url = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' || (url !== '/metrics' && url !== '/')) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('enclave metrics are at /metrics\n')
        return
      }
      // Scrapes run one at a time: each reads its own snapshot.
      const scrape = queue.then(async () => {
        current = status()
        try {
          return await registry.metrics()
        } finally {
          current = undefined
        }
      })
      queue = scrape.then(
        () => undefined,
        () => undefined,
      )
      scrape.then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        (e: Error) => {
          log?.warn({ err: e.message }, 'metrics scrape failed')
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`)
        },
      )
    },
  )
  server.maxConnections = limits.maxConnections
  server.setTimeout(limits.idleMs) // an idle socket is destroyed (no 'timeout' listener)
  const { host, port } = splitListen(listen)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const a = server.address() as AddressInfo
  const address = `${a.address}:${a.port}`
  log?.info({ address }, 'metrics endpoint listening')
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/** The agent's endpoint: started, moved or stopped to match the profile's MetricsListen (start and reload). */
export class MetricsEndpoint {
  private server?: MetricsServer
  private listen?: string

  constructor(
    private readonly status: () => MetricsStatus,
    private readonly log: MetricsLog & { info(o: object, msg: string): void; error(o: object, msg: string): void },
  ) {}

  async sync(want: string | undefined): Promise<void> {
    if (want === this.listen && (this.server || !want)) return
    await this.close()
    this.listen = want
    if (!want) return
    try {
      this.server = await startMetrics(want, this.status, this.log)
      this.log.info({ listen: want }, 'metrics endpoint ready')
      if (!metricsOnLoopback(want))
        this.log.warn(
          { listen: want },
          'the metrics endpoint has no authentication and listens beyond loopback: anyone who reaches it sees your peers and traffic (use 127.0.0.1, or a firewall)',
        )
    } catch (e) {
      this.log.error({ listen: want, err: (e as Error).message }, 'metrics endpoint could not start')
    }
  }

  async close(): Promise<void> {
    await this.server?.close()
    this.server = undefined
  }
}

/** Whether a MetricsListen address (host:port) is on loopback only. */
export function metricsOnLoopback(listen: string): boolean {
  const host = listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')
  return host === 'localhost' || host === '::1' || /^127\./.test(host)
}
