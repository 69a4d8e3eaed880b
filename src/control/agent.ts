/**
 * The agent's control thread: starts the parts, wires them together and stops them.
 *
 * Threads: control (never blocks) + N data-plane workers (workers/dataplane.ts).
 * Control -> workers: keys and peer settings in shared memory, routing tables as snapshots.
 * Workers -> control: handshake messages, staged packets and events through one SPSC ring each;
 * counters and timestamps in shared memory.
 *
 * Parts, each owning its state:
 *   PeerTable (peers by slot, key, index)   KeypairSlots (shared keypair slots, quarantine)
 *   PeerMemory (per-peer shared memory)     Sessions (previous/current/next, control's sends)
 *   Handshakes (initiate, answer, cookies)  PeerTimers (WireGuard's timers per peer)
 *   routes/compiler (pure tables, failover) OsRouteInstaller (OS routes and rules)
 *   exit-node (ip_forward, NAT)             status/builder (pure status model)
 *   WorkerSupervisor (workers, restarts)    ApiServer (control socket, over AgentApi)
 *   policy/compile (tags + Policies -> integer tables, compiled at start and reload, sent with the routes)
 */
import os from 'node:os'
import { EnclaveError } from '../errors.js'
import { type Profile, loadProfile, profilePath } from './profile/profile.js'
import { intToIp } from '../common/ipv4.js'
import { type AgentLogger, VERBOSITY_NAMES, createLogger, setVerbosity } from './logger.js'
import {
  G_CONFIG_GEN,
  G_LOG_LEVEL,
  G_STOP,
  KEYPAIR_QUARANTINE_MS,
  type LayoutViews,
  type SharedLayout,
  createLayout,
  views,
} from '../ipc/layout.js'
import { type RingBuffers, RingConsumer, createRing } from '../ipc/ring.js'
import type { DataplaneTables, WorkerInit } from '../ipc/messages.js'
import { createConntrack, ctCutPeer } from '../dataplane/conntrack.js'
import { PolicyState } from './policy/state.js'
import { type LocalStatic, localStatic, peerCrypto } from '../protocol/noise.js'
import * as net from '../platform/linux/net.js'
import type { StatusModel } from './status/model.js'
import { VERSION } from '../version.js'
import { ApiServer } from './api/server.js'
import { MetricsEndpoint } from './metrics.js'
import type { AgentApi, ReloadResult } from './api/agent-api.js'
import { KeypairSlots } from './keypairs.js'
import { PeerMemory } from './peer-memory.js'
import { type PeerRuntime, PeerTable, newPeer } from './peer-table.js'
import { Sessions } from './sessions.js'
import { Handshakes } from './handshakes.js'
import { type HandshakePool, startHandshakePool } from './handshake-pool.js'
import { PeerTimers } from './peer-timers.js'
import { WorkerSupervisor } from './supervisor.js'
import { UdpSender } from './udp-sender.js'
import { OsRouteInstaller } from './routes/installer.js'
import { NetworkState } from './network-state.js'
import { Devices, fwmarkFor } from './devices.js'
import { natTag } from './exit-node.js'
import { installAntiSpoof, removeAntiSpoof } from './anti-spoof.js'
import { resolveEndpoint } from './endpoints.js'
import { applyConfig, planReload, restartNeeded } from './reload.js'
import { gatherStatus } from './status/gather.js'
import { RingDispatcher } from './ring-dispatch.js'
import { logFlow } from './flow-log.js'
import { PeerCache, recentPeers, resumeRecentPeers } from './peer-cache.js'

export interface AgentOptions {
  configDir: string
  runDir: string
  verbosity: number
  logFormat?: 'logfmt' | 'json'
  workers?: number
}

const TICK_MS = 100

export class Agent implements AgentApi {
  readonly log: AgentLogger
  readonly stopped: Promise<void>
  private stoppedResolve!: () => void
  private verbosity: number
  private profile!: Profile
  private local!: LocalStatic
  private layout!: SharedLayout
  private v!: LayoutViews
  private readonly conntrack = createConntrack()
  private readonly epochMs = Date.now()
  private rings: RingBuffers[] = []
  private dev!: Devices
  private peers!: PeerTable
  private keypairs!: KeypairSlots
  private memory!: PeerMemory
  private sessions!: Sessions
  private handshakes!: Handshakes
  private timers!: PeerTimers
  private dispatch!: RingDispatcher
  private supervisor!: WorkerSupervisor
  private network!: NetworkState
  private spoofWarnings: string[] = []
  private hsPool?: HandshakePool
  private api?: ApiServer
  private metrics?: MetricsEndpoint
  private tickTimer?: NodeJS.Timeout
  private peerCache?: PeerCache
  private stopping = false

  constructor(readonly opts: AgentOptions) {
    this.verbosity = opts.verbosity
    this.log = createLogger(opts.verbosity, opts.logFormat)
    this.stopped = new Promise((r) => (this.stoppedResolve = r))
  }

  async start(): Promise<void> {
    if (process.getuid && process.getuid() !== 0)
      throw new EnclaveError('EPERM', 'enclave run needs root (CAP_NET_ADMIN) to create the TUN device and routes; try `sudo enclave run`')
    this.profile = loadProfile(profilePath(this.opts.configDir))
    const p = this.profile
    if (p.logLevel !== undefined && this.opts.verbosity === 1) {
      this.verbosity = p.logLevel
      setVerbosity(this.log, p.logLevel)
    }
    this.local = localStatic(p.privateKey, p.publicKey)
    this.hsPool = startHandshakePool(p.privateKey, p.publicKey)
    const nWorkers = this.opts.workers ?? p.workers ?? Math.max(1, Math.min(os.availableParallelism(), 4))
    this.layout = createLayout(Math.max(64, p.peers.length * 2 + 16), nWorkers)
    this.v = views(this.layout)
    Atomics.store(this.v.global, G_LOG_LEVEL, this.verbosity)
    this.log.info(
      { identity: p.identity, virtualAddress: intToIp(p.virtualAddress), version: VERSION, verbosity: VERBOSITY_NAMES[this.verbosity] },
      'starting enclave agent',
    )
    await this.cleanupStale()
    this.dev = await Devices.open(p, nWorkers)
    this.spoofWarnings = await installAntiSpoof(this.dev.ifname, intToIp(p.virtualAddress), natTag(p), this.log)
    this.wire(nWorkers)
    for (const cfg of p.peers) await this.addPeer(cfg)
    this.network.compilePolicy(p, this.peers)
    this.network.rebuild(p, this.peers)
    for (let i = 0; i < nWorkers; i++) this.rings.push(createRing(256))
    await this.supervisor.startAll(nWorkers)
    const d = this.dev
    const offload = d.offload ? (d.uso ? 'tso4+uso4+csum' : 'tso4+csum') : 'off'
    const address = `${intToIp(p.virtualAddress)}/10`
    this.log.info({ interface: d.ifname, address, mtu: p.mtu, port: d.port, workers: nWorkers, offload }, 'data plane up')
    await this.network.applyOs(p, this.peers)
    for (const r of this.rings) void this.dispatch.consume(new RingConsumer(r), () => this.stopping)
    this.tickTimer = setInterval(() => this.tick(), TICK_MS)
    resumeRecentPeers(
      this.opts.runDir,
      this.peers,
      this.memory,
      (peer, why) => this.handshakes.initiate(peer, why),
      (m) => this.log.warn(m),
    )
    for (const peer of this.peers)
      if (peer.cfg.persistentKeepalive > 0 && peer.configuredEndpoint) this.handshakes.initiate(peer, 'persistent keepalive configured')
    this.api = new ApiServer(this, this.opts.runDir, p.controlGroup)
    await this.api.listen()
    this.peerCache = new PeerCache(
      this.opts.runDir,
      (now) => recentPeers(this.peers, this.memory, now),
      (msg, err) => this.log.warn({ err }, msg),
    )
    this.log.info({ socket: this.api.path }, 'control socket ready')
    this.metrics = new MetricsEndpoint(() => ({ ...this.status(), workerRestarts: this.supervisor.restartsTotal }), this.log)
    await this.metrics.sync(p.metricsListen)
  }

  /** Builds the parts over the shared layout and the opened sockets. */
  private wire(workers: number): void {
    const log = this.log
    this.keypairs = new KeypairSlots(this.v)
    this.memory = new PeerMemory(this.v, this.layout.maxPeers, this.layout.workers)
    this.peers = new PeerTable(this.layout.maxPeers, KEYPAIR_QUARANTINE_MS)
    const send = new UdpSender(this.dev.udpFds[0]).send
    this.sessions = new Sessions(this.keypairs, this.memory, this.peers, send, this.profile.mtu)
    const runTask = this.hsPool!.runTask
    const onSessionUp = (peer: PeerRuntime) => this.sessionUp(peer)
    this.handshakes = new Handshakes({
      local: this.local,
      peers: this.peers,
      sessions: this.sessions,
      keypairs: this.keypairs,
      send,
      runTask,
      log,
      onSessionUp,
    })
    const resolve = (peer: PeerRuntime) => void resolveEndpoint(peer, this.memory, log, true)
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
        onCrashLoop: () => void this.stop('worker crash loop'),
      },
      log,
    )
    this.dispatch = new RingDispatcher({ peers: this.peers, sessions: this.sessions, handshakes: this.handshakes, log, onSessionUp })
    const publish = (tables: DataplaneTables) => {
      this.supervisor.post({ t: 'tables', tables })
      Atomics.store(this.v.global, G_CONFIG_GEN, tables.gen)
    }
    const routes = new OsRouteInstaller(this.dev.ifname, fwmarkFor(this.profile), log)
    this.network = new NetworkState(new PolicyState(workers), routes, publish, log)
  }

  /**
   * Removes the NAT rules a crashed earlier run of this profile may have left. Its policy rules and
   * fail-closed routes stay until the first route sync has installed ours (no leak while starting).
   */
  private async cleanupStale(): Promise<void> {
    const n = await net.removeTaggedNatRules(natTag(this.profile))
    if (n) this.log.warn({ rules: n }, 'removed NAT rules left by an earlier run that did not stop cleanly')
  }

  private workerInit(i: number): WorkerInit {
    const [tunFd, udpFd, ring] = [this.dev.tunFds[i], this.dev.udpFds[i], this.rings[i]]
    return {
      id: i,
      layout: this.layout,
      ring,
      conntrack: this.conntrack,
      tunFd,
      udpFd,
      mtu: this.profile.mtu,
      batch: 64,
      epochMs: this.epochMs,
      tables: this.network.tables(),
      offload: this.dev.offload,
      uso: this.dev.uso,
    }
  }

  private tick(): void {
    const now = Date.now()
    this.keypairs.sweep(now)
    this.dispatch.pollConfirmations(now)
    for (const peer of this.peers) {
      try {
        this.timers.tick(peer, now)
      } catch (e) {
        this.log.error({ peer: peer.cfg.identity, err: (e as Error).message }, 'timer tick failed for a peer')
      }
    }
    this.peerCache?.tick(now)
  }

  private sessionUp(peer: PeerRuntime): void {
    const now = Date.now()
    const sent = peer.staged.length ? this.sessions.flushStaged(peer, now) : 0
    if (sent) this.log.debug({ peer: peer.cfg.identity, packets: sent }, 'sent packets queued during the handshake')
    else if (peer.current?.isInitiator && this.sessions.sendTransport(peer, new Uint8Array(0), now))
      this.log.protocol({ peer: peer.cfg.identity }, 'sent keepalive') // confirms the session to the responder
    this.network.refreshFailover(this.profile, this.peers)
  }

  // ---------------------------------------------------------------- peers and routes

  private async addPeer(cfg: Profile['peers'][number]): Promise<void> {
    const slot = this.peers.takeSlot(Date.now())
    if (slot === undefined) throw new EnclaveError('EPEERS', 'too many peers for this run; restart the agent to grow the table')
    const peer = newPeer(slot, cfg, peerCrypto(this.local, cfg.publicKey, cfg.presharedKey))
    this.memory.reset(slot)
    this.peers.add(peer)
    await resolveEndpoint(peer, this.memory, this.log)
  }

  private removePeer(peer: PeerRuntime): void {
    const now = Date.now()
    this.sessions.dropAll(peer, now)
    ctCutPeer(new Int32Array(this.conntrack), peer.slot) // the next peer given this slot inherits no flow
    this.peers.remove(peer, now)
  }

  // ---------------------------------------------------------------- operator requests (AgentApi)

  connect(which: string): string | null {
    const peer = this.peers.byName(which)
    if (!peer) return null
    if (!peer.current) this.handshakes.initiate(peer, 'connection requested (waitfor)')
    return peer.cfg.identity
  }

  rekeyAll(): string[] {
    const out: string[] = []
    for (const p of this.peers) {
      if (!p.current) continue
      p.lastInitiationSentMs = -Infinity
      this.handshakes.initiate(p, 'rekey requested')
      out.push(p.cfg.identity)
    }
    return out
  }

  crashWorkerForTest(i: number): void {
    this.supervisor.crash(i)
  }

  setVerbosity(level: number): void {
    this.verbosity = level
    setVerbosity(this.log, level)
    Atomics.store(this.v.global, G_LOG_LEVEL, level)
    this.log.warn({ verbosity: VERBOSITY_NAMES[level] }, 'log level changed')
  }

  /** Applies the edited profile; a refusal is logged here too, so the journal shows why a change did not take. */
  async reload(): Promise<ReloadResult> {
    try {
      return await this.applyReload()
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'reload refused; still running on the previous profile')
      throw e
    }
  }

  private async applyReload(): Promise<ReloadResult> {
    const next = loadProfile(profilePath(this.opts.configDir)) // throws the usual ProfileError: nothing applied
    const refused = restartNeeded(this.profile, next)
    if (refused) throw new EnclaveError('ERELOAD', refused)
    const plan = planReload(this.peers, next)
    for (const peer of plan.removed) this.removePeer(peer)
    for (const c of plan.kept) {
      applyConfig(c, this.local)
      if (!c.edited) continue
      if (c.endpointEdited) {
        // The admin's new Endpoint wins over a roamed one.
        c.peer.configuredEndpoint = undefined
        this.memory.setEndpoint(c.peer.slot, undefined)
      }
      await resolveEndpoint(c.peer, this.memory, this.log)
    }
    this.profile = next
    for (const cfg of plan.added) await this.addPeer(cfg)
    this.network.compilePolicy(next, this.peers)
    const cut = this.network.policy.cutDisallowedFlows(this.conntrack, Math.floor((Date.now() - this.epochMs) / 1000))
    if (cut) this.log.info({ flows: cut }, 'policy reload: cut flows the new policy no longer allows')
    this.network.rebuild(next, this.peers)
    await this.network.applyOs(next, this.peers)
    const result = {
      added: plan.added.map((c) => c.identity),
      removed: plan.removed.map((p) => p.cfg.identity),
      changed: plan.kept.filter((c) => c.edited).map((c) => c.cfg.identity),
    }
    await this.metrics?.sync(next.metricsListen)
    this.log.info(result, 'profile reloaded')
    return result
  }

  status(): StatusModel {
    return gatherStatus({
      profile: this.profile,
      peers: this.peers,
      memory: this.memory,
      sessions: this.sessions,
      routes: this.network.routes,
      active: this.network.routing.choice,
      conntrack: this.conntrack,
      epochMs: this.epochMs,
      interface: this.dev.ifname,
      port: this.dev.port,
      verbosity: this.verbosity,
      exitWarnings: [...this.spoofWarnings, ...this.network.exitWarnings],
      policy: this.network.policy.compiled,
      policyTables: this.network.policy.tables,
      workers: this.layout.workers,
    })
  }

  // ---------------------------------------------------------------- stop

  async stop(why = 'requested'): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.log.info({ reason: why }, 'stopping')
    if (this.tickTimer) clearInterval(this.tickTimer)
    this.handshakes?.close()
    Atomics.store(this.v.global, G_STOP, 1)
    await this.supervisor?.stopAll()
    this.peerCache?.flush(Date.now())
    await this.network?.routes.removeAll()
    if (this.profile.exitNode.manageNat) {
      const n = await net.removeTaggedNatRules(natTag(this.profile))
      this.log.info({ rules: n }, 'ManageNat: removed our SNAT rules')
    }
    if (this.dev) await removeAntiSpoof(natTag(this.profile), this.log)
    await this.api?.close()
    await this.metrics?.close()
    await this.hsPool?.destroy()
    this.dev.close() // the TUN device disappears with its last queue
    this.log.info('stopped; everything this agent added was removed')
    this.stoppedResolve()
  }
}
