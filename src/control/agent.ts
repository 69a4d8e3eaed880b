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
import { Piscina } from 'piscina'
import os from 'node:os'
import { EnclaveError } from '../errors.js'
import { type Profile, loadProfile, profilePath } from './profile/profile.js'
import { intToIp } from '../common/ipv4.js'
import { type AgentLogger, VERBOSITY_NAMES, createLogger, setVerbosity } from './logger.js'
import { native, openTunQueues, openUdp } from '../native/io.js'
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
import type { DataplaneTables, PolicyTables, WorkerInit } from '../ipc/messages.js'
import { createConntrack, ctCutFlows } from '../dataplane/conntrack.js'
import { evaluatePolicy } from '../dataplane/policy.js'
import { type CompiledPolicies, compilePolicies, policyModeLine, policyTablesFor } from './policy/compile.js'
import { type LocalStatic, localStatic, peerCrypto } from '../protocol/noise.js'
import * as net from '../platform/linux/net.js'
import type { StatusModel } from './status/model.js'
import { VERSION } from '../version.js'
import { ApiServer } from './api/server.js'
import type { AgentApi, ReloadResult } from './api/agent-api.js'
import { KeypairSlots } from './keypairs.js'
import { PeerMemory } from './peer-memory.js'
import { type PeerRuntime, PeerTable, newPeer } from './peer-table.js'
import { Sessions } from './sessions.js'
import { Handshakes, type HandshakeTaskRunner } from './handshakes.js'
import { PeerTimers } from './peer-timers.js'
import { WorkerSupervisor } from './supervisor.js'
import { UdpSender } from './udp-sender.js'
import { OsRouteInstaller } from './routes/installer.js'
import { type RoutePeer, chooseRoutes, compileTables, failovers, sameChoice, wantedRoutes } from './routes/compiler.js'
import { checkExitNode, natTag } from './exit-node.js'
import { resolveEndpoint } from './endpoints.js'
import { planReload, restartNeeded } from './reload.js'
import { gatherStatus } from './status/gather.js'
import { RingDispatcher } from './ring-dispatch.js'
import { logFlow } from './flow-log.js'

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
  private tunFds: number[] = []
  private udpFds: number[] = []
  private ifname = ''
  private offload = false
  private port = 0
  private peers!: PeerTable
  private keypairs!: KeypairSlots
  private memory!: PeerMemory
  private sessions!: Sessions
  private handshakes!: Handshakes
  private timers!: PeerTimers
  private supervisor!: WorkerSupervisor
  private routes!: OsRouteInstaller
  private tables!: DataplaneTables
  private policy!: CompiledPolicies
  private policyTables!: PolicyTables
  private active = new Map<string, number>() // route text -> peer slot carrying it
  private exitWarnings: string[] = []
  private hsPool?: Piscina
  private api?: ApiServer
  private tickTimer?: NodeJS.Timeout
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
    this.hsPool = new Piscina({
      filename: new URL('../../workers/handshake.js', import.meta.url).href,
      minThreads: 1,
      maxThreads: 1,
      idleTimeout: Infinity,
    })
    // Warm the pool (module load, JIT) so the first peer's handshake is not the one that pays for it.
    void this.hsPool
      .run({ op: 'consume', msg: new Uint8Array(148), privateKey: p.privateKey, publicKey: p.publicKey, nowMs: 0 })
      .catch(() => undefined)
    const nWorkers = this.opts.workers ?? p.workers ?? Math.max(1, Math.min(os.availableParallelism(), 4))
    this.layout = createLayout(Math.max(64, p.peers.length * 2 + 16), nWorkers)
    this.v = views(this.layout)
    Atomics.store(this.v.global, G_LOG_LEVEL, this.verbosity)
    this.log.info(
      { identity: p.identity, virtualAddress: intToIp(p.virtualAddress), version: VERSION, verbosity: VERBOSITY_NAMES[this.verbosity] },
      'starting enclave agent',
    )
    await this.cleanupStale()
    await this.openDevices(nWorkers)
    this.wire()
    for (const cfg of p.peers) await this.addPeer(cfg)
    this.compilePolicy()
    this.rebuildTables()
    for (let i = 0; i < nWorkers; i++) this.rings.push(createRing(256))
    await this.supervisor.startAll(nWorkers)
    const offload = this.offload ? 'tso4+csum' : 'off'
    this.log.info(
      { interface: this.ifname, address: `${intToIp(p.virtualAddress)}/10`, mtu: p.mtu, port: this.port, workers: nWorkers, offload },
      'data plane up',
    )
    await this.routes.sync(wantedRoutes(this.routePeers()), p.exitNode.forceRoutes, (r) => this.carrierName(r))
    this.exitWarnings = await checkExitNode(p, this.log)
    const dispatch = new RingDispatcher({
      peers: this.peers,
      sessions: this.sessions,
      handshakes: this.handshakes,
      log: this.log,
      onSessionUp: (peer) => this.sessionUp(peer),
    })
    for (const r of this.rings) void dispatch.consume(new RingConsumer(r), () => this.stopping)
    this.tickTimer = setInterval(() => this.tick(), TICK_MS)
    for (const peer of this.peers)
      if (peer.cfg.persistentKeepalive > 0 && peer.configuredEndpoint) this.handshakes.initiate(peer, 'persistent keepalive configured')
    this.api = new ApiServer(this, this.opts.runDir, p.controlGroup)
    await this.api.listen()
    this.log.info({ socket: this.api.path }, 'control socket ready')
  }

  /** Builds the parts over the shared layout and the opened sockets. */
  private wire(): void {
    const log = this.log
    this.keypairs = new KeypairSlots(this.v)
    this.memory = new PeerMemory(this.v, this.layout.maxPeers, this.layout.workers)
    this.peers = new PeerTable(this.layout.maxPeers, KEYPAIR_QUARANTINE_MS)
    const send = new UdpSender(this.udpFds[0]).send
    this.sessions = new Sessions(this.keypairs, this.memory, this.peers, send, this.profile.mtu)
    const pool = this.hsPool!
    const runTask = ((task) => pool.run(task)) as HandshakeTaskRunner
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
      onHealthChange: () => this.refreshFailover(),
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
    this.routes = new OsRouteInstaller(this.ifname, this.fwmark(), log)
  }

  private async openDevices(nWorkers: number): Promise<void> {
    const p = this.profile
    const tun = openTunQueues(p.interface, nWorkers, process.env.ENCLAVE_TUN_OFFLOAD !== '0')
    this.tunFds = tun.fds
    this.ifname = tun.name
    this.offload = tun.offload
    try {
      await net.configureInterface(this.ifname, p.virtualAddress, p.mtu)
    } catch (e) {
      this.closeFds()
      throw new EnclaveError('EIFACE', `cannot configure ${this.ifname}: ${(e as Error).message}`)
    }
    try {
      for (let i = 0; i < nWorkers; i++) {
        const fd = openUdp(0, i === 0 ? p.localPort : this.port, true, this.fwmark())
        if (i === 0) this.port = native.udpLocalPort(fd)
        this.udpFds.push(fd)
      }
    } catch (e) {
      this.closeFds()
      throw new EnclaveError('EBIND', `${(e as Error).message} (is another agent or WireGuard using it? set LocalPort in the profile)`)
    }
  }

  /** Also the routing table number for 0.0.0.0/0; distinct per LocalPort so that agents can coexist. */
  private fwmark(): number {
    return 0xec0000 + this.profile.localPort
  }

  /** Removes what a crashed earlier run of this profile may have left: policy rules and NAT rules. */
  private async cleanupStale(): Promise<void> {
    await net.removeDefaultRouteRules(this.fwmark())
    const n = await net.removeTaggedNatRules(natTag(this.profile))
    if (n) this.log.warn({ rules: n }, 'removed NAT rules left by an earlier run that did not stop cleanly')
  }

  private workerInit(i: number): WorkerInit {
    const [tunFd, udpFd, ring] = [this.tunFds[i], this.udpFds[i], this.rings[i]]
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
      tables: this.tables,
      offload: this.offload,
    }
  }

  private tick(): void {
    const now = Date.now()
    for (const peer of this.peers) {
      try {
        this.timers.tick(peer, now)
      } catch (e) {
        this.log.error({ peer: peer.cfg.identity, err: (e as Error).message }, 'timer tick failed for a peer')
      }
    }
  }

  private sessionUp(peer: PeerRuntime): void {
    const now = Date.now()
    const sent = peer.staged.length ? this.sessions.flushStaged(peer, now) : 0
    if (sent) this.log.debug({ peer: peer.cfg.identity, packets: sent }, 'sent packets queued during the handshake')
    else if (peer.current?.isInitiator && this.sessions.sendTransport(peer, new Uint8Array(0), now))
      this.log.protocol({ peer: peer.cfg.identity }, 'sent keepalive') // confirms the session to the responder
    this.refreshFailover()
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
    this.peers.remove(peer, now)
  }

  private routePeers(): RoutePeer[] {
    return this.peers.list().map((p) => ({
      slot: p.slot,
      identity: p.cfg.identity,
      virtualAddress: p.cfg.virtualAddress,
      availableRoutes: p.cfg.availableRoutes,
      unresponsive: p.unresponsiveSinceMs !== undefined,
      handshakeStartedMs: p.handshakeStartedMs,
    }))
  }

  private carrierName(route: string): string | undefined {
    return this.peers.get(this.active.get(route) ?? -1)?.cfg.identity
  }

  private refreshFailover(): void {
    const next = chooseRoutes(this.routePeers(), [...this.profile.exitNode.availableRoutes.keys()], Date.now())
    for (const f of failovers(this.active, next))
      this.log.warn(
        { route: f.route, from: this.peers.get(f.from)?.cfg.identity, to: this.peers.get(f.to)?.cfg.identity },
        'exit node failover',
      )
    if (!sameChoice(this.active, next)) this.rebuildTables()
  }

  private rebuildTables(): void {
    const p = this.profile
    const peers = this.routePeers()
    this.active = chooseRoutes(peers, [...p.exitNode.availableRoutes.keys()], Date.now())
    this.tables = {
      ...compileTables(
        { virtualAddress: p.virtualAddress, providesRoutes: p.exitNode.providesRoutes },
        peers,
        this.active,
        (this.tables?.gen ?? 0) + 1,
      ),
      ...this.policyTables,
    }
    this.supervisor.post({ t: 'tables', tables: this.tables })
    Atomics.store(this.v.global, G_CONFIG_GEN, this.tables.gen)
  }

  /**
   * Compiles the profile's Policies over the current peer slots (start and reload). The workers get
   * the result with the next tables; flows judged by an older compile are judged again there.
   */
  private compilePolicy(): void {
    const p = this.profile
    this.policy = compilePolicies({
      selfTags: p.tags,
      selfAddress: p.virtualAddress,
      providesRoutes: p.exitNode.providesRoutes,
      peers: this.peers.list().map((peer) => ({ slot: peer.slot, tags: peer.cfg.tags })),
      policies: p.policies,
    })
    this.policyTables = policyTablesFor(this.policy, this.layout.workers, (this.policyTables?.policyGen ?? 0) + 1)
    this.log.info({ tags: p.tags.join(' ') || '(none)' }, policyModeLine(this.policy))
  }

  /** Reload: cuts tracked flows that peers started and the new policy no longer allows. */
  private cutDisallowedFlows(): number {
    const table = this.policy.table
    const nowS = Math.floor((Date.now() - this.epochMs) / 1000)
    return ctCutFlows(
      new Int32Array(this.conntrack),
      nowS,
      (peer, proto, lanIp, lanPort) => evaluatePolicy(table, peer, proto, lanIp >>> 16, lanIp & 0xffff, lanPort) >= 0,
    )
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

  async reload(): Promise<ReloadResult> {
    const next = loadProfile(profilePath(this.opts.configDir)) // throws the usual ProfileError: nothing applied
    const refused = restartNeeded(this.profile, next)
    if (refused) throw new EnclaveError('ERELOAD', refused)
    const plan = planReload(this.peers, next)
    for (const peer of plan.removed) this.removePeer(peer)
    for (const c of plan.kept) {
      c.peer.cfg = c.cfg
      if (c.presharedKeyChanged) c.peer.crypto = peerCrypto(this.local, c.cfg.publicKey, c.cfg.presharedKey)
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
    this.compilePolicy()
    const cut = this.cutDisallowedFlows()
    if (cut) this.log.info({ flows: cut }, 'policy reload: cut flows the new policy no longer allows')
    this.rebuildTables()
    await this.routes.sync(wantedRoutes(this.routePeers()), next.exitNode.forceRoutes, (r) => this.carrierName(r))
    this.exitWarnings = await checkExitNode(next, this.log)
    const result = {
      added: plan.added.map((c) => c.identity),
      removed: plan.removed.map((p) => p.cfg.identity),
      changed: plan.kept.filter((c) => c.edited).map((c) => c.cfg.identity),
    }
    this.log.info(result, 'profile reloaded')
    return result
  }

  status(): StatusModel {
    return gatherStatus({
      profile: this.profile,
      peers: this.peers,
      memory: this.memory,
      sessions: this.sessions,
      routes: this.routes,
      active: this.active,
      conntrack: this.conntrack,
      epochMs: this.epochMs,
      interface: this.ifname,
      port: this.port,
      verbosity: this.verbosity,
      exitWarnings: this.exitWarnings,
      policy: this.policy,
      policyTables: this.policyTables,
      workers: this.layout.workers,
    })
  }

  // ---------------------------------------------------------------- stop

  private closeFds(): void {
    for (const fd of [...this.udpFds, ...this.tunFds]) native.close(fd)
    this.udpFds = []
    this.tunFds = []
  }

  async stop(why = 'requested'): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.log.info({ reason: why }, 'stopping')
    if (this.tickTimer) clearInterval(this.tickTimer)
    this.handshakes?.close()
    Atomics.store(this.v.global, G_STOP, 1)
    await this.supervisor?.stopAll()
    await this.routes?.removeAll()
    if (this.profile.exitNode.manageNat) {
      const n = await net.removeTaggedNatRules(natTag(this.profile))
      this.log.info({ rules: n }, 'ManageNat: removed our SNAT rules')
    }
    await this.api?.close()
    await this.hsPool?.destroy()
    this.closeFds() // the TUN device disappears with its last queue
    this.log.info('stopped; everything this agent added was removed')
    this.stoppedResolve()
  }
}
