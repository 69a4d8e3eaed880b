/**
 * The agent's control thread: starts the parts, wires them together and stops them.
 *
 * Threads: control (never blocks) + N data-plane workers (workers/dataplane.ts) + the handshake pool.
 * Control -> workers: keys and peer settings in shared memory, routing tables as snapshots.
 * Workers -> control: handshake messages, staged packets and events through one SPSC ring each;
 * counters and timestamps in shared memory (src/ipc/layout.ts says who writes each word).
 *
 * Everything an Agent reads or changes outside itself comes through AgentDeps (src/agent/agent-deps.ts):
 * the devices (a TUN and UDP sockets, or memory queues), the OS's routes and rules, the clock, the
 * resolver and the log's destination. So the same class runs as `enclave run` and, several at once,
 * in one test process over a memory network.
 *
 * Start takes the run directory's lock first (one agent per run directory), then acquires each resource
 * and pushes its undo; stop() runs the undos in reverse, so it works after a start that failed halfway.
 *
 * Parts, each owning its state:
 *   PeerTable (peers by slot, key, index)   KeypairSlots (shared keypair slots, quarantine)
 *   PeerMemory (per-peer shared memory)     Sessions (previous/current/next, control's sends)
 *   Handshakes (initiate, answer, cookies)  PeerTimers (WireGuard's timers per peer)
 *   NetworkState (route tables, failover, policies, OS routes, exit-node checks)
 *   WorkerSupervisor (workers, restarts)    RingDispatcher (worker -> control messages)
 *   ApiServer (control socket, over AgentApi)   MetricsEndpoint   PeerCache (sessions across restarts)
 */
import os from 'node:os'
import path from 'node:path'
import { EnclaveError } from '../errors.js'
import { type Profile, loadProfile, profilePath, stateDir } from '../config/profile.js'
import { mergeHubLayer } from '../config/hub-layer.js'
import type { HubMap } from '../hubproto/map.js'
import { HUB_CACHE_FILE, type HubCache, HubLink, readHubCache } from './hub-link.js'
import { intToIp } from '../common/ipv4.js'
import { type AgentLogger, VERBOSITY_NAMES, createLogger, setVerbosity } from '../log/logger.js'
import {
  G_CONFIG_GEN,
  G_LOG_LEVEL,
  G_STOP,
  KEYPAIR_QUARANTINE_MS,
  type LayoutViews,
  type SharedLayout,
  SharedCookieSecret,
  createLayout,
  views,
  writeHandshakeKeys,
} from '../ipc/layout.js'
import { type RingBuffers, RingConsumer, createRing } from '../ipc/ring.js'
import type { DataplaneTables, WorkerInit } from '../ipc/messages.js'
import { WARMUP_ROUNDS } from '../dataplane/warmup-rounds.js'
import { createConntrack, ctCutPeer, ctPeerCount } from '../dataplane/conntrack.js'
import { PolicyState } from './network/policy-state.js'
import { PathManager } from './network/paths.js'
import { type LocalStatic, localStatic, peerCrypto } from '../protocol/noise.js'
import type { StatusModel } from '../views/status-model.js'
import { VERSION } from '../version.js'
import { ApiServer } from './control-socket.js'
import { MetricsEndpoint } from './observability/metrics.js'
import type { AgentApi, AgentTestHooks, ReloadResult } from './agent-api.js'
import { KeypairSlots } from './peers/keypairs.js'
import { PeerMemory } from './peers/peer-memory.js'
import { type PeerRuntime, PeerTable, newPeer } from './peers/peer-table.js'
import { Sessions } from './peers/sessions.js'
import { Handshakes } from './peers/handshakes.js'
import type { HandshakePool } from './handshake-pool.js'
import { PeerTimers } from './peers/peer-timers.js'
import { WorkerSupervisor } from './supervisor.js'
import { OsRouteInstaller } from '../ops/route-installer.js'
import { NetworkState } from './network/network-state.js'
import { type DeviceSet, fwmarkFor } from './devices.js'
import { OsFootprint } from '../ops/os-footprint.js'
import { type EndpointContext, overrideEndpoint, resolveEndpoint } from './peers/endpoints.js'
import { applyConfig, planReload, restartNeeded } from './peers/reload.js'
import { gatherStatus } from './observability/status-gather.js'
import { RingDispatcher } from './ring-dispatch.js'
import { logFlow } from './observability/flow-log.js'
import { PeerCache, recentPeers, resumeRecentPeers } from './peer-cache.js'
import { type AgentDeps, defaultDeps } from './agent-deps.js'
import { InstanceLock } from '../ops/instance-lock.js'
import { peersNoPolicyNames } from '../config/edit.js'

export interface AgentOptions {
  configDir: string
  runDir: string
  /** The log level given on the command line (it beats the profile's LogLevel); undefined: the profile's, else 1. */
  verbosity?: number
  logFormat?: 'logfmt' | 'json'
  workers?: number
  /** Where the hub's map is cached (default $ENCLAVE_STATE_DIR or /var/lib/enclave). */
  stateDir?: string
  /** Cap of the hub link's reconnect backoff (ms; tests shorten it). */
  hubBackoffMs?: number
}

const TICK_MS = 100
/** How often an exit node enforcing Policies reads its own addresses again (a DHCP lease may move its LAN address). */
export const LOCAL_ADDRESSES_MS = 30_000

interface Undo {
  what: string
  run: () => unknown
  /** Left in place by a stop that fails closed (the OS routes, rules and iptables rules a kill -9 leaves). */
  keepFailingClosed?: boolean
}

export class Agent implements AgentApi {
  readonly log: AgentLogger
  readonly stopped: Promise<void>
  private stoppedResolve!: () => void
  private readonly deps: AgentDeps
  private verbosity: number
  private profile!: Profile
  private local!: LocalStatic
  private layout!: SharedLayout
  private v!: LayoutViews
  private readonly conntrack = createConntrack()
  private epochMs = 0
  private rings: RingBuffers[] = []
  private dev!: DeviceSet
  private peers!: PeerTable
  private keypairs!: KeypairSlots
  private memory!: PeerMemory
  private sessions!: Sessions
  private handshakes!: Handshakes
  private paths!: PathManager
  private timers!: PeerTimers
  private dispatch!: RingDispatcher
  private supervisor!: WorkerSupervisor
  private network!: NetworkState
  private endpoints!: EndpointContext
  private footprint!: OsFootprint
  private spoofWarnings: string[] = []
  private metrics?: MetricsEndpoint
  private api?: ApiServer
  /** The profile as started (settings that need a restart are compared with it at reload). */
  private startedWith!: Profile
  private peerCache?: PeerCache
  /** The hub's layer in force (from the hub, or the cache at start), and the link to the hub. */
  private hubMap: HubMap | null = null
  private hubLink?: HubLink
  private hubNotes: string[] = []
  /** What start acquired, in order; stop() undoes it in reverse. */
  private readonly undo: Undo[] = []
  private stopping = false
  /** The start, the reload and the stop in progress: stop() waits for the first two before it undoes. */
  private starting?: Promise<void>
  private reloading?: Promise<unknown>
  private stopped_?: Promise<void>
  /** Why the agent stopped on its own (its TUN device lost, workers crashing): `enclave run` exits 1. */
  private failure?: string
  /** The stop leaves the OS routes, rules and iptables rules in place, as a kill -9 would (see deviceLost). */
  private failClosed = false

  constructor(
    readonly opts: AgentOptions,
    deps: Partial<AgentDeps> = {},
  ) {
    this.deps = { ...defaultDeps(), ...deps }
    this.verbosity = opts.verbosity ?? 1
    this.log = createLogger(this.verbosity, opts.logFormat, { out: this.deps.logOut, now: () => this.deps.clock.now() })
    this.stopped = new Promise((r) => (this.stoppedResolve = r))
  }

  private acquired(what: string, run: Undo['run'], keepFailingClosed = false): void {
    this.undo.push({ what, run, keepFailingClosed })
  }

  /** Between the steps of a start: a stop asked for meanwhile ends the start (stop then undoes what it got). */
  private assertStarting(): void {
    if (this.stopping) throw new EnclaveError('ESTOPPED', 'stopped while starting')
  }

  /** Starts the agent; on failure, what it had acquired is released again before the error is thrown. */
  async start(): Promise<void> {
    this.starting = this.startParts()
    try {
      await this.starting
    } catch (e) {
      await this.stop(`start failed: ${(e as Error).message}`)
      throw e
    }
  }

  private async startParts(): Promise<void> {
    const deps = this.deps
    if (deps.requireRoot && process.getuid && process.getuid() !== 0)
      throw new EnclaveError('EPERM', 'enclave run needs root (CAP_NET_ADMIN) to create the TUN device and routes; try `sudo enclave run`')
    // One agent per run directory, before anything else is touched (a second `run` changes nothing).
    const lock = InstanceLock.acquire(this.opts.runDir, (pid) =>
      this.log.warn({ pid }, 'an earlier agent of this run directory did not stop cleanly; taking over its lock'),
    )
    this.acquired('instance lock', () => lock.release())
    const local = loadProfile(profilePath(this.opts.configDir))
    let hubCache: HubCache | null = null
    if (local.hub) {
      // Tunnels, policies and routes come back from the cached map when the hub is down.
      const got = readHubCache(this.hubCacheFile(), local.hub.publicKey.toString('base64'))
      if (got.problem) this.log.warn({ problem: got.problem }, 'hub map cache not used')
      hubCache = got.cache
      this.hubMap = hubCache?.map ?? null
      try {
        this.profile = this.effective(local)
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'the cached hub map does not apply; starting from the local profile')
        this.hubMap = null
        hubCache = null
        this.profile = local
      }
    } else this.profile = local
    this.startedWith = this.profile
    const p = this.profile
    if (p.logLevel !== undefined && this.opts.verbosity === undefined) {
      this.verbosity = p.logLevel
      setVerbosity(this.log, p.logLevel)
    }
    this.epochMs = deps.clock.now()
    this.local = localStatic(p.privateKey, p.publicKey)
    const pool: HandshakePool = deps.handshakePool(p.privateKey, p.publicKey)
    this.acquired('handshake pool', () => pool.destroy())
    const nWorkers = this.opts.workers ?? p.workers ?? Math.max(1, Math.min(os.availableParallelism(), 4))
    // A system on a hub gets its peers later: room for them from the start.
    this.layout = createLayout(Math.max(p.hub ? 1024 : 64, p.peers.length * 2 + 16), nWorkers)
    this.v = views(this.layout)
    writeHandshakeKeys(this.layout, this.local.mac1Key, this.local.cookieKey)
    Atomics.store(this.v.global, G_LOG_LEVEL, this.verbosity)
    this.log.info(
      { identity: p.identity, virtualAddress: intToIp(p.virtualAddress), version: VERSION, verbosity: VERBOSITY_NAMES[this.verbosity] },
      'starting enclave agent',
    )
    const footprint = new OsFootprint(p, deps.os, this.log)
    this.footprint = footprint
    this.dev = await deps.openDevices(p, nWorkers, deps.os, deps.deviceOptions)
    this.acquired('devices', () => this.dev.close())
    this.assertStarting()
    // The interface is ours (it did not exist), so NAT rules with its tag are a crashed earlier run's.
    await footprint.removeStaleNat()
    this.assertStarting()
    this.spoofWarnings = await footprint.installAntiSpoof(this.dev.ifname)
    this.acquired('anti-spoofing rules', () => footprint.removeAntiSpoof(), true)
    this.assertStarting()
    this.wire(nWorkers, pool)
    for (const cfg of p.peers) await this.addPeer(cfg)
    this.assertStarting()
    await this.network.apply(p, this.peers)
    for (let i = 0; i < nWorkers; i++) this.rings.push(createRing(256))
    this.acquired('data-plane workers', async () => {
      Atomics.store(this.v.global, G_STOP, 1)
      await this.supervisor.stopAll()
    })
    await this.supervisor.startAll(nWorkers)
    this.assertStarting()
    const d = this.dev
    const offload = d.offload ? (d.uso ? 'tso4+uso4+csum' : 'tso4+csum') : 'off'
    const address = `${intToIp(p.virtualAddress)}/10`
    this.log.info({ interface: d.ifname, address, mtu: p.mtu, port: d.port, workers: nWorkers, offload }, 'data plane up')
    this.acquired('routes and NAT rules', () => this.network.teardown(), true)
    await this.network.applyOs(p, this.peers)
    this.assertStarting()
    for (const r of this.rings) void this.dispatch.consume(new RingConsumer(r), () => this.stopping)
    const tick = deps.clock.setInterval(() => this.tick(), TICK_MS)
    this.acquired('timers', () => tick.clear())
    const addrTick = deps.clock.setInterval(() => void this.refreshLocalAddresses(), LOCAL_ADDRESSES_MS)
    this.acquired('local address checks', () => addrTick.clear())
    resumeRecentPeers(
      this.opts.runDir,
      this.peers,
      this.memory,
      (peer, why) => this.handshakes.initiate(peer, why),
      (m) => this.log.warn(m),
      deps.clock.now(),
    )
    for (const peer of this.peers)
      if (peer.cfg.persistentKeepalive > 0 && peer.ep.configured) this.handshakes.initiate(peer, 'persistent keepalive configured')
    const api = new ApiServer(this, this.opts.runDir, p.controlGroup, deps.testHooks ? this.testHooks : undefined)
    this.api = api
    await api.listen()
    this.acquired('control socket', () => api.close())
    this.assertStarting()
    const cache = new PeerCache(
      this.opts.runDir,
      (now) => recentPeers(this.peers, this.memory, now),
      (msg, err) => this.log.warn({ err }, msg),
    )
    this.peerCache = cache
    this.acquired('peer cache', () => cache.flush(deps.clock.now()))
    this.log.info({ socket: api.path }, 'control socket ready')
    const metrics = new MetricsEndpoint(() => ({ ...this.status(), workerRestarts: this.supervisor.restartsTotal }), this.log)
    this.metrics = metrics
    this.acquired('metrics endpoint', () => metrics.close())
    await metrics.sync(p.metricsListen)
    if (local.hub) this.startHubLink(local, hubCache)
  }

  /** Connects to the hub (at start, or at the reload after `enclave enrol`). */
  private startHubLink(local: Profile, cache: HubCache | null): void {
    const link = new HubLink({
      profile: local,
      cacheFile: this.hubCacheFile(),
      log: this.log,
      apply: (map) => this.applyHubMap(map),
      maxBackoffMs: this.opts.hubBackoffMs,
      sendUdp: (buf, ip, port) => this.dev.send(buf, ip, port),
      onRelay: (id, at, token) => {
        const peer = this.hubPeer(id)
        if (peer) this.paths.relay(peer, at, token)
      },
      onPunch: (id, candidates, hosts) => {
        const peer = this.hubPeer(id)
        if (peer) this.paths.punch(peer, candidates, hosts)
      },
      onRelayTcp: (id) => {
        const peer = this.hubPeer(id)
        if (peer) this.paths.relayTcp(peer)
      },
      // Back on a hub, perhaps another replica: the relay we used may have gone with the old one.
      onReconnected: () => this.paths.hubReconnected(),
      onDatagram: (id, data) => {
        const peer = this.paths.known(id) ?? this.hubPeer(id)
        if (peer) this.paths.fromHub(peer, data)
      },
      localAddresses: async () => (await this.deps.os.localAddresses()).map(intToIp),
    })
    if (cache) {
      link.seed(cache)
      this.log.info({ rev: cache.rev, peers: cache.map.Peers.length, cachedAt: cache.receivedAt }, 'hub map loaded from the cache')
    }
    link.notAccepted = this.hubNotes
    this.hubLink = link
    this.acquired('hub link', () => link.stop())
    link.start()
  }

  /** The peer the hub knows as `identity` (a hub peer, or a local peer the hub also lists). */
  private hubPeer(identity: string): PeerRuntime | undefined {
    for (const p of this.peers) if (p.cfg.identity === identity) return p
    return undefined
  }

  private hubCacheFile(): string {
    return path.join(this.opts.stateDir ?? stateDir(), HUB_CACHE_FILE)
  }

  /** The local profile plus the hub's layer in force (the local profile alone when there is none). */
  private effective(local: Profile): Profile {
    if (!local.hub || !this.hubMap) return local
    const r = mergeHubLayer(local, this.hubMap)
    for (const w of r.skippedLocal) this.log.warn({ peer: w }, 'local peer skipped: it collides with the hub layer')
    for (const w of r.skippedHub) this.log.warn({ peer: w }, 'hub peer skipped or changed')
    this.hubNotes = [
      ...r.notAccepted,
      ...r.skippedLocal.map((w) => `local peer skipped: ${w}`),
      ...r.skippedHub.map((w) => `hub peer: ${w}`),
    ]
    if (this.hubLink) this.hubLink.notAccepted = this.hubNotes
    return r.profile
  }

  /** A map from the hub: applied like a reload; true once every worker enforces it. */
  private async applyHubMap(map: HubMap): Promise<boolean> {
    if (this.stopping) return false
    await this.reloading?.catch(() => undefined)
    const previous = this.hubMap
    this.hubMap = map
    try {
      this.reloading = this.applyReload()
      const r = (await this.reloading) as ReloadResult
      return r.workersApplied
    } catch (e) {
      this.hubMap = previous
      throw e
    }
  }

  /** Builds the parts over the shared layout and the opened devices. */
  private wire(workers: number, pool: HandshakePool): void {
    const log = this.log
    const now = () => this.deps.clock.now()
    this.keypairs = new KeypairSlots(this.v)
    this.memory = new PeerMemory(this.v, this.layout.maxPeers, this.layout.workers)
    this.peers = new PeerTable(this.layout.maxPeers, KEYPAIR_QUARANTINE_MS)
    this.endpoints = { memory: this.memory, log, now, resolve: this.deps.resolve }
    const send = this.dev.send
    this.sessions = new Sessions(this.keypairs, this.memory, this.peers, send, this.profile.mtu)
    const onSessionUp = (peer: PeerRuntime) => this.sessionUp(peer)
    this.handshakes = new Handshakes({
      local: this.local,
      peers: this.peers,
      sessions: this.sessions,
      keypairs: this.keypairs,
      send,
      runTask: pool.runTask,
      log,
      onSessionUp,
      clock: now,
      underLoadPerS: this.deps.underLoadHandshakesPerS,
      cookie: new SharedCookieSecret(this.layout, now()),
    })
    this.acquired('handshakes', () => this.handshakes.close())
    const resolve = (peer: PeerRuntime) => void resolveEndpoint(peer, this.endpoints, true)
    this.timers = new PeerTimers({
      memory: this.memory,
      sessions: this.sessions,
      handshakes: this.handshakes,
      log,
      onHealthChange: () => this.network.refreshFailover(this.profile, this.peers),
      resolveEndpoint: resolve,
    })
    this.supervisor = new WorkerSupervisor(
      {
        init: (i) => this.workerInit(i),
        onFlow: (f) => logFlow(log, f, this.peers),
        onCrashLoop: () => {
          this.failure ??= 'worker crash loop'
          void this.stop('worker crash loop')
        },
        onDeviceLost: (worker, err) => this.deviceLost(worker, err),
      },
      log,
    )
    this.paths = new PathManager({
      privateKey: this.local.privateKey,
      publicKey: this.local.publicKey,
      memory: this.memory,
      send,
      log,
      clock: now,
      request: (identity) => this.hubLink?.requestPath(identity),
      hubDatagram: (identity, data) => this.hubLink?.sendDatagram(identity, data),
      wgPort: this.dev.port,
      initiate: (peer, reason) => this.handshakes.initiate(peer, reason, { now: true }),
    })
    this.acquired('path proxies', () => this.paths.close())
    this.dispatch = new RingDispatcher({
      peers: this.peers,
      sessions: this.sessions,
      handshakes: this.handshakes,
      log,
      onSessionUp,
      clock: now,
      paths: this.paths,
    })
    const publish = (tables: DataplaneTables) => {
      this.supervisor.post({ t: 'tables', tables })
      Atomics.store(this.v.global, G_CONFIG_GEN, tables.gen)
    }
    const routes = new OsRouteInstaller(this.dev.ifname, fwmarkFor(this.profile), log, this.deps.os)
    this.network = new NetworkState(new PolicyState(workers), routes, this.footprint, publish, log, now, () =>
      this.deps.os.localAddresses(),
    )
  }

  private workerInit(i: number): WorkerInit {
    return {
      id: i,
      layout: this.layout,
      ring: this.rings[i],
      conntrack: this.conntrack,
      io: this.dev.workerIo(i),
      clock: this.deps.clock.shared,
      mtu: this.profile.mtu,
      batch: 64,
      epochMs: this.epochMs,
      tables: this.network.tables(),
      offload: this.dev.offload,
      uso: this.dev.uso,
      // Memory devices are simulations (tests, many agents in one process): no warm-up there.
      warmup: this.dev.workerIo(i).kind === 'native' ? (this.deps.warmupRounds ?? WARMUP_ROUNDS) : 0,
    }
  }

  /** The policies judge this machine's own addresses as itself: re-read them, republish when they moved. */
  private async refreshLocalAddresses(): Promise<void> {
    if (this.stopping) return
    await this.reloading?.catch(() => undefined)
    try {
      const r = await this.network.refreshLocalAddresses(this.profile, this.peers, {
        table: this.conntrack,
        nowS: () => Math.floor((this.deps.clock.now() - this.epochMs) / 1000),
      })
      if (!r) return
      const applied = await this.tablesApplied(r.gen)
      this.log.info({ flows: r.cut, applied }, 'local addresses changed: the policies judge them as this system')
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'local address refresh failed')
    }
  }

  private tick(): void {
    const now = this.deps.clock.now()
    this.keypairs.sweep(now)
    this.handshakes.refreshCookieSecret(now)
    this.dispatch.pollConfirmations(now)
    for (const peer of this.peers) {
      try {
        this.timers.tick(peer, now)
      } catch (e) {
        this.log.error({ peer: peer.cfg.identity, err: (e as Error).message }, 'timer tick failed for a peer')
      }
    }
    this.peerCache?.tick(now)
    this.paths.tick((p) => this.peers.get(p.slot) === p)
  }

  private sessionUp(peer: PeerRuntime): void {
    const now = this.deps.clock.now()
    this.timers.sessionUp(peer) // before the failover below reads the peer's health
    const sent = peer.session.staged.length ? this.sessions.flushStaged(peer, now) : 0
    if (sent) this.log.debug({ peer: peer.cfg.identity, packets: sent }, 'sent packets queued during the handshake')
    else if (peer.session.current?.isInitiator && this.sessions.sendTransport(peer, new Uint8Array(0), now))
      this.log.protocol({ peer: peer.cfg.identity }, 'sent keepalive') // confirms the session to the responder
    this.network.refreshFailover(this.profile, this.peers)
  }

  // ---------------------------------------------------------------- peers and routes

  private async addPeer(cfg: Profile['peers'][number]): Promise<void> {
    const slot = this.peers.takeSlot(this.deps.clock.now())
    if (slot === undefined) throw new EnclaveError('EPEERS', 'too many peers for this run; restart the agent to grow the table')
    const peer = newPeer(slot, cfg, peerCrypto(this.local, cfg.publicKey, cfg.presharedKey))
    this.memory.reset(slot)
    this.peers.add(peer)
    await resolveEndpoint(peer, this.endpoints)
  }

  private removePeer(peer: PeerRuntime): void {
    const now = this.deps.clock.now()
    this.sessions.dropAll(peer, now)
    ctCutPeer(new Int32Array(this.conntrack), peer.slot) // the next peer given this slot inherits no flow
    this.peers.remove(peer, now)
  }

  // ---------------------------------------------------------------- operator requests (AgentApi)

  connect(which: string): string | null {
    const peer = this.peers.byName(which)
    if (!peer) return null
    if (!peer.session.current) this.handshakes.initiate(peer, 'connection requested (waitfor)')
    return peer.cfg.identity
  }

  rekeyAll(): string[] {
    const out: string[] = []
    for (const p of this.peers) {
      if (!p.session.current) continue
      this.handshakes.initiate(p, 'rekey requested', { now: true })
      out.push(p.cfg.identity)
    }
    return out
  }

  /** Test hooks (the control socket offers them only when AgentDeps.testHooks is set). */
  readonly testHooks: AgentTestHooks = {
    crashWorker: (i) => this.supervisor.crash(i),
    workerRunning: (i) => this.supervisor.running(i),
    flowsOf: (peer) => {
      const slot = typeof peer === 'number' ? peer : this.peers.byName(peer)?.slot
      return slot === undefined ? 0 : ctPeerCount(new Int32Array(this.conntrack), slot)
    },
    slotOf: (peer) => this.peers.byName(peer)?.slot,
  }

  setVerbosity(level: number): void {
    this.verbosity = level
    setVerbosity(this.log, level)
    Atomics.store(this.v.global, G_LOG_LEVEL, level)
    this.log.warn({ verbosity: VERBOSITY_NAMES[level] }, 'log level changed')
  }

  /** Applies the edited profile; a refusal is logged here too, so the journal shows why a change did not take. */
  async reload(profile?: string): Promise<ReloadResult> {
    try {
      const ours = profilePath(this.opts.configDir)
      if (profile !== undefined && path.resolve(profile) !== path.resolve(ours))
        throw new EnclaveError(
          'EOTHERPROFILE',
          `the running agent runs ${ours}, not ${path.resolve(profile)}: that file was saved but is not applied (point the CLI at ${path.dirname(path.dirname(ours))} with --config-dir, or start an agent for it)`,
        )
      if (this.stopping) throw new EnclaveError('ESTOPPED', 'the agent is stopping')
      this.reloading = this.applyReload()
      return (await this.reloading) as ReloadResult
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'reload refused; still running on the previous profile')
      throw e
    }
  }

  private async applyReload(): Promise<ReloadResult> {
    const local = loadProfile(profilePath(this.opts.configDir)) // throws the usual ProfileError: nothing applied
    const linked = this.hubLink?.hubKey
    if (linked && (!local.hub || linked !== local.hub.publicKey.toString('base64'))) {
      // Unenrolled (or enrolled elsewhere): the hub's layer goes with the link.
      this.hubLink?.stop()
      this.hubLink = undefined
      this.hubMap = null
      this.hubNotes = []
    }
    const next = this.effective(local)
    const refused = restartNeeded(this.profile, next)
    if (refused) throw new EnclaveError('ERELOAD', refused)
    const plan = planReload(this.peers, next)
    for (const peer of plan.removed) this.removePeer(peer)
    for (const c of plan.kept) {
      applyConfig(c, this.local)
      if (!c.edited) continue
      if (c.endpointEdited) await overrideEndpoint(c.peer, this.endpoints)
      else await resolveEndpoint(c.peer, this.endpoints)
    }
    this.profile = next
    for (const cfg of plan.added) await this.addPeer(cfg)
    const nowS = Math.floor((this.deps.clock.now() - this.epochMs) / 1000)
    const { gen } = await this.network.apply(next, this.peers, { table: this.conntrack, nowS })
    // Said to be applied only once every worker runs with the new tables (a revoked flow's next packet
    // is dropped, a granted one's first passes).
    const workersApplied = await this.tablesApplied(gen)
    if (!workersApplied) this.log.warn({ gen }, 'reload: not every data-plane worker took the new tables within 3 s')
    // Until the workers took the tables, packets routed to a removed peer's slot could still make entries
    // (our own flows toward it): cut again now that no table names the slot (it is reused only later).
    for (const peer of plan.removed) ctCutPeer(new Int32Array(this.conntrack), peer.slot)
    await this.network.applyOs(next, this.peers)
    this.api?.setGroup(next.controlGroup)
    await this.metrics?.sync(next.metricsListen)
    if (local.hub && !this.hubLink && !this.stopping) this.startHubLink(local, null)
    const restart: string[] = []
    if ((next.workers ?? null) !== (this.startedWith.workers ?? null)) restart.push('Workers')
    const result: ReloadResult = {
      profile: next.file,
      added: plan.added.map((c) => c.identity),
      removed: plan.removed.map((p) => p.cfg.identity),
      changed: plan.kept.filter((c) => c.edited).map((c) => c.cfg.identity),
      routes: this.status().peers.flatMap((p) => p.exitNodeFor.map((r) => ({ ...r, via: p.identity }))),
      restartNeeded: restart,
      workersApplied,
      exitWarnings: this.network.statusFacts().exitWarnings,
      untaggedPeers: peersNoPolicyNames(next).map((p) => (p.description ? `${p.identity} (${p.description})` : p.identity)),
    }
    this.log.info({ added: result.added, removed: result.removed, changed: result.changed, restartNeeded: restart }, 'profile reloaded')
    return result
  }

  /** Resolves true once every running worker acknowledged tables of generation `gen` (false after 3 s). */
  private async tablesApplied(gen: number): Promise<boolean> {
    const deadline = performance.now() + 3000
    for (;;) {
      let all = true
      for (let i = 0; i < this.layout.workers; i++)
        if (this.supervisor.running(i) && Atomics.load(this.v.tableAcks, i) - gen < 0) all = false
      if (all) return true
      if (performance.now() > deadline || this.stopping) return false
      await new Promise((r) => setTimeout(r, 2))
    }
  }

  private lastRecheckMs = Number.NEGATIVE_INFINITY

  async freshStatus(): Promise<StatusModel> {
    const now = this.deps.clock.now()
    if (now - this.lastRecheckMs >= 2000) {
      this.lastRecheckMs = now
      await this.network.recheck(this.profile)
    }
    return this.status()
  }

  status(): StatusModel {
    const net = this.network.statusFacts()
    const s = this.statusParts(net)
    if (this.hubLink) {
      s.hub = this.hubLink.status()
      const hubPeers = new Set(this.profile.peers.filter((p) => p.source === 'hub').map((p) => p.identity))
      for (const p of s.peers) p.source = hubPeers.has(p.identity) ? 'hub' : 'local'
      const paths = this.paths.status()
      for (const p of s.peers) {
        const ps = paths.get(p.identity)
        if (ps?.path) {
          p.path = ps.path
          p.pathSwitches = ps.switches
          p.relayedBytes = ps.relayedBytes
          const rt = ps.rttMs ?? this.hubPeer(p.identity)?.hs.rttMs
          if (rt !== undefined) p.roundTripMs = Math.round(rt * 10) / 10
        }
      }
      s.pathSwitches = this.paths.switchCount
    }
    return s
  }

  private statusParts(net: ReturnType<NetworkState['statusFacts']>): StatusModel {
    return gatherStatus(
      {
        profile: this.profile,
        peers: this.peers,
        memory: this.memory,
        sessions: this.sessions,
        ...net,
        conntrack: this.conntrack,
        epochMs: this.epochMs,
        interface: this.dev.ifname,
        port: this.dev.port,
        verbosity: this.verbosity,
        exitWarnings: [...this.spoofWarnings, ...net.exitWarnings],
      },
      this.deps.clock.now(),
    )
  }

  // ---------------------------------------------------------------- stop

  /** 0 after a stop that was asked for; 1 after the agent stopped on its own (systemd's Restart=on-failure). */
  get exitCode(): number {
    return this.failure === undefined ? 0 : 1
  }

  /**
   * A worker's TUN queue failed for good: the device was deleted underneath us (`ip link del`) or broke.
   * Nothing can reach the tunnel any more, so the agent stops, failing closed: as after kill -9, the
   * unreachable twins and policy rules stay and refuse what the profile sends through exit nodes (the
   * next start or `enclave stop` removes them), and `enclave run` exits 1 so that systemd starts it again.
   */
  private deviceLost(worker: number, err: string): void {
    if (this.stopping) return
    const dev = this.dev.ifname
    this.failure = `TUN device ${dev} lost`
    this.failClosed = true
    this.log.error(
      { interface: dev, worker, err },
      `TUN device ${dev} is gone or broken (read: ${err}); stopping, failing closed: its fail-closed routes and rules stay until the next start or \`enclave stop\``,
    )
    void this.stop(this.failure)
  }

  /** Undoes what start acquired, in reverse order; works after a start that failed halfway. */
  stop(why = 'requested'): Promise<void> {
    if (!this.stopped_) {
      this.stopping = true
      this.stopped_ = this.undoAll(why)
    }
    return this.stopped_
  }

  private async undoAll(why: string): Promise<void> {
    // A start or reload in progress finishes its current step first (start then gives up): then
    // everything either acquired is on the undo list.
    await this.starting?.catch(() => undefined)
    await this.reloading?.catch(() => undefined)
    // A start refused before it acquired anything (another agent runs) has nothing to stop or report.
    if (this.undo.length === 0 || (this.undo.length === 1 && this.undo[0].what === 'instance lock')) {
      for (const u of this.undo) await u.run()
      this.undo.length = 0
      this.stoppedResolve()
      return
    }
    this.log.info({ reason: why }, 'stopping')
    let failed = 0
    for (const u of this.undo.reverse()) {
      if (this.failClosed && u.keepFailingClosed) continue
      try {
        await u.run()
      } catch (e) {
        failed++
        this.log.error({ part: u.what, err: (e as Error).message }, 'could not undo at stop')
      }
    }
    this.undo.length = 0
    if (failed) this.log.warn({ failed }, 'stopped; some of what this agent added may remain (see the errors above)')
    else if (this.failClosed)
      this.log.warn('stopped, failing closed: routes, policy rules and iptables rules stay until the next start or `enclave stop`')
    else this.log.info('stopped; everything this agent added was removed')
    this.stoppedResolve()
  }
}
