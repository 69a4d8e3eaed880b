/**
 * The agent's control thread: owns the profile, the TUN queues and UDP sockets, the workers,
 * handshakes and timers, the OS routes, exit-node checks and the control socket.
 *
 * Threads: control (this file, never blocks) + N data-plane workers (workers/dataplane.ts).
 * Control -> workers: keys and peer settings in shared memory, routing tables as snapshots.
 * Workers -> control: handshake messages, staged packets and events through one SPSC ring each;
 * counters and timestamps in shared memory.
 */
import { Worker } from 'node:worker_threads'
import { Piscina } from 'piscina'
import dns from 'node:dns/promises'
import os from 'node:os'
import sodium from 'sodium-native'
import { EnclaveError } from '../errors.js'
import { type Profile, loadProfile, profilePath } from './profile/profile.js'
import { type Cidr, intToIp, parseIpv4 } from './profile/cidr.js'
import { type AgentLogger, VERBOSITY_NAMES, WorkerLogQueue, createLogger, setVerbosity } from './logger.js'
import type { KeypairRef, PeerRuntime } from './peers.js'
import { peerState } from './peers.js'
import { native, openTunQueues, openUdp } from '../native/io.js'
import {
  C_FROM_LAN_BYTES,
  C_PEER_FIELDS,
  C_RX_BYTES,
  C_RX_PKTS,
  C_TO_LAN_BYTES,
  C_TX_BYTES,
  C_TX_PKTS,
  G_CONFIG_GEN,
  G_LOG_LEVEL,
  G_STOP,
  KEYPAIR_QUARANTINE_MS,
  KEY_BYTES_PER_SLOT,
  KF_CREATED_MS,
  KF_FIELDS,
  KF_REPLAY_LAST,
  KP_RECV_ONLY,
  KP_SLOTS,
  KP_VALID,
  K_FIELDS,
  K_INDEX,
  K_INITIATOR,
  K_PEER,
  K_REMOTE,
  K_SEND_CTR,
  K_STATE,
  type LayoutViews,
  PF_ENDPOINT,
  PF_FIELDS,
  PF_LAST_RX_ANY,
  PF_LAST_RX_DATA,
  PF_LAST_TX_ANY,
  PF_LAST_TX_DATA,
  P_ACTIVE,
  P_CUR_KP,
  P_FIELDS,
  REASONS,
  REPLAY_WORDS,
  type SharedLayout,
  createLayout,
  endpointIp,
  endpointPort,
  packEndpoint,
  views,
} from '../ipc/layout.js'
import { MSG_CONFIRMED, MSG_HANDSHAKE, MSG_REKEY, MSG_STAGED, type RingBuffers, RingConsumer, createRing } from '../ipc/ring.js'
import { type DataplaneTables, type FlowLog, LOCAL_PROVIDED, LOCAL_SELF, type WorkerInit } from '../ipc/messages.js'
import { type RouteEntry, buildRouteTable } from '../dataplane/route-table.js'
import { createConntrack, ctCountByPeer } from '../dataplane/conntrack.js'
import {
  type ConsumedInitiation,
  type LocalStatic,
  acceptInitiation,
  checkMac1,
  checkMac2,
  consumeCookieReply,
  consumeResponse,
  cookieChecker,
  createCookieReply,
  createInitiation,
  localStatic,
  peerCrypto,
  readReceiverIndex,
  type SessionKeys,
  writeMacs,
} from '../protocol/noise.js'
import {
  MAX_INITIATIONS_PER_PEER_PER_S,
  MSG_COOKIE_REPLY,
  MSG_INITIATION,
  MSG_RESPONSE,
  MSG_TRANSPORT,
  REJECT_AFTER_TIME_MS,
  REKEY_TIMEOUT_JITTER_MAX_MS,
  REKEY_TIMEOUT_MS,
  UNDER_LOAD_HANDSHAKES_PER_S,
} from '../protocol/constants.js'
import * as net from '../platform/linux/net.js'
import type { RouteDecision } from '../platform/linux/net.js'
import { STATUS_VERSION, type StatusModel, type RouteStatus } from './status/model.js'
import { VERSION } from '../version.js'
import { type PeerTimerState, type TimerAction, timerActions } from '../protocol/timers.js'
import { ApiServer } from './api/server.js'

export interface AgentOptions {
  configDir: string
  runDir: string
  verbosity: number
  logFormat?: 'logfmt' | 'json'
  workers?: number
}

const MAX_STAGED_PER_PEER = 128
const TICK_MS = 100
const STAGE_DROP_LOG_MS = 5000
const HEALTH_PROBE_MS = 30_000
/** Initiations being processed in the pool at once; beyond this they are dropped (initiators retry). */
const MAX_HANDSHAKES_IN_FLIGHT = 64
/** While handshakes to a peer named by host name fail, its name is looked up again this often. */
const DNS_RETRY_MS = 10_000

export class Agent {
  readonly opts: AgentOptions
  log: AgentLogger
  profile!: Profile
  private local!: LocalStatic
  private layout!: SharedLayout
  private v!: LayoutViews
  private rings: RingBuffers[] = []
  private consumers: RingConsumer[] = []
  private conntrack = createConntrack()
  private ct = new Int32Array(this.conntrack)
  private tunFds: number[] = []
  private udpFds: number[] = []
  private ifname = ''
  private offload = false
  private port = 0
  private workers: Array<Worker | undefined> = []
  private workerRestarts: number[] = []
  private peers: PeerRuntime[] = []
  private freePeerSlots: number[] = []
  private kpFree: number[] = []
  private kpQuarantine: Array<{ slot: number; until: number }> = []
  private cookie = cookieChecker(Date.now())
  private handshakeTimes: number[] = []
  private tables!: DataplaneTables
  private activeRoute = new Map<string, number>() // route text -> peer slot carrying it
  private routeDecisions: RouteDecision[] = []
  private installedRoutes: Cidr[] = []
  private defaultRouteRules = false
  private natTag = ''
  private exitWarnings: string[] = []
  private stopping = false
  private tickTimer?: NodeJS.Timeout
  private epochMs = Date.now()
  private ctrlSlab = new Uint8Array(new SharedArrayBuffer(4096))
  private ctrlLens = new Int32Array(1)
  private ctrlAddrs = new Uint32Array(2)
  private api?: ApiServer
  /** The responder's handshake crypto runs here (workers/handshake.ts), never on this thread. */
  private hsPool?: Piscina
  private hsInFlight = 0
  private stoppedResolve!: () => void
  readonly stopped: Promise<void>
  private verbosity: number
  private lastStageDropLog = 0

  constructor(opts: AgentOptions) {
    this.opts = opts
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
      .run({ op: 'consume', msg: new Uint8Array(148), privateKey: p.privateKey, publicKey: p.publicKey, nowMs: Date.now() })
      .catch(() => undefined)
    const nWorkers = this.opts.workers ?? p.workers ?? Math.max(1, Math.min(os.availableParallelism(), 4))
    this.layout = createLayout(Math.max(64, p.peers.length * 2 + 16), nWorkers)
    this.v = views(this.layout)
    Atomics.store(this.v.global, G_LOG_LEVEL, this.verbosity)
    for (let s = KP_SLOTS - 1; s >= 1; s--) this.kpFree.push(s) // slot 0 unused: index 0 never valid
    for (let s = this.layout.maxPeers - 1; s >= 0; s--) this.freePeerSlots.push(s)
    this.natTag = `enclave:${p.interface}`

    this.log.info(
      { identity: p.identity, virtualAddress: intToIp(p.virtualAddress), version: VERSION, verbosity: VERBOSITY_NAMES[this.verbosity] },
      'starting enclave agent',
    )
    await this.cleanupStale()

    const tun = openTunQueues(p.interface, nWorkers, process.env.ENCLAVE_TUN_OFFLOAD !== '0')
    this.tunFds = tun.fds
    this.ifname = tun.name
    this.offload = tun.offload
    try {
      await net.configureInterface(this.ifname, p.virtualAddress, p.mtu)
    } catch (e) {
      for (const fd of this.tunFds) native.close(fd)
      throw new EnclaveError('EIFACE', `cannot configure ${this.ifname}: ${(e as Error).message}`)
    }
    const fwmark = this.fwmark()
    try {
      for (let i = 0; i < nWorkers; i++) {
        const fd = openUdp(0, i === 0 ? p.localPort : this.port, true, fwmark)
        if (i === 0) this.port = native.udpLocalPort(fd)
        this.udpFds.push(fd)
      }
    } catch (e) {
      await this.closeFds()
      throw new EnclaveError('EBIND', `${(e as Error).message} (is another agent or WireGuard using it? set LocalPort in the profile)`)
    }
    for (const cfg of p.peers) await this.addPeer(cfg)
    this.rebuildTables()
    const started: Promise<void>[] = []
    for (let i = 0; i < nWorkers; i++) {
      this.rings.push(createRing(256))
      this.consumers.push(new RingConsumer(this.rings[i]))
      started.push(this.startWorker(i))
    }
    await Promise.all(started)
    this.log.info(
      {
        interface: this.ifname,
        address: `${intToIp(p.virtualAddress)}/10`,
        mtu: p.mtu,
        port: this.port,
        workers: nWorkers,
        offload: this.offload ? 'tso4+csum' : 'off',
      },
      'data plane up',
    )
    await this.syncOsRoutes()
    await this.checkExitNode()
    for (const c of this.consumers) void this.consumeRing(c)
    this.tickTimer = setInterval(() => this.tick(), TICK_MS)
    for (const peer of this.peers)
      if (peer.cfg.persistentKeepalive > 0 && peer.configuredEndpoint) this.initiate(peer, 'persistent keepalive configured')
    this.api = new ApiServer(this, this.opts.runDir, p.controlGroup)
    await this.api.listen()
    this.log.info({ socket: this.api.path }, 'control socket ready')
  }

  private fwmark(): number {
    // Also the routing table number for 0.0.0.0/0; distinct per LocalPort so that agents can coexist.
    return 0xec0000 + this.profile.localPort
  }

  /** Removes what a crashed earlier run of this profile may have left: policy rules and NAT rules. */
  private async cleanupStale(): Promise<void> {
    await net.removeDefaultRouteRules(this.fwmark())
    const n = await net.removeTaggedNatRules(this.natTag)
    if (n) this.log.warn({ rules: n }, 'removed NAT rules left by an earlier run that did not stop cleanly')
  }

  // ---------------------------------------------------------------- workers

  private workerInit(i: number): WorkerInit {
    return {
      id: i,
      layout: this.layout,
      ring: this.rings[i],
      conntrack: this.conntrack,
      tunFd: this.tunFds[i],
      udpFd: this.udpFds[i],
      mtu: this.profile.mtu,
      batch: 64,
      epochMs: this.epochMs,
      tables: this.tables,
      offload: this.offload,
    }
  }

  /** Starts worker i; resolves when its loop runs (so "ready" means packets are being read). */
  private startWorker(i: number): Promise<void> {
    const w = new Worker(new URL('../../workers/dataplane.js', import.meta.url), { workerData: this.workerInit(i) })
    this.workers[i] = w
    let ready!: () => void
    const isReady = new Promise<void>((r) => (ready = r))
    w.on('message', (m: { t: string } & Record<string, unknown>) => {
      if (m.t === 'ready') ready()
      else if (m.t === 'flow' || m.t === 'log') this.workerLogs.push({ worker: i, msg: m })
    })
    w.on('error', (e) => this.log.error({ worker: i, err: e.message }, 'data-plane worker crashed'))
    w.on('exit', (code) => {
      this.workers[i] = undefined
      if (this.stopping) return
      const now = Date.now()
      this.workerRestarts = this.workerRestarts.filter((t) => now - t < 60_000)
      this.workerRestarts.push(now)
      if (this.workerRestarts.length > 10) {
        this.log.error('data-plane workers keep crashing; stopping the agent')
        void this.stop('worker crash loop')
        return
      }
      this.log.error({ worker: i, code }, 'data-plane worker exited unexpectedly; restarting it')
      setTimeout(() => !this.stopping && void this.startWorker(i), 100)
    })
    return Promise.race([
      isReady,
      new Promise<void>((_, rej) => setTimeout(() => rej(new Error(`data-plane worker ${i} did not start within 15 s`)), 15_000).unref()),
    ])
  }

  /** Starts a handshake with one peer (by identity or virtual address) if it has no session. */
  connect(which: string): string | null {
    const peer = this.peers.find((p) => p.cfg.identity === which || intToIp(p.cfg.virtualAddress) === which)
    if (!peer) return null
    if (!peer.current) this.initiate(peer, 'connection requested (waitfor)')
    return peer.cfg.identity
  }

  /** Starts a new handshake with every peer that has a session (ops and test hook: `enclave rekey`). */
  rekeyAll(): string[] {
    const out: string[] = []
    for (const p of this.peers) {
      if (!p.current) continue
      p.lastInitiationSentMs = -Infinity
      this.initiate(p, 'rekey requested')
      out.push(p.cfg.identity)
    }
    return out
  }

  /** Test hook: crash a worker to exercise the supervisor. */
  crashWorkerForTest(i: number): void {
    void this.workers[i]?.terminate()
  }

  /** Worker log lines, bounded: beyond 1024 waiting, dropped and counted (logger.ts). */
  private workerLogs = new WorkerLogQueue(
    ({ worker, msg: m }) =>
      m.t === 'flow'
        ? this.logFlow(m as unknown as FlowLog)
        : this.log[(m.level as 'info' | 'warn' | 'error') ?? 'info']({ worker }, String(m.msg)),
    (n) => this.log.warn({ dropped: n }, 'worker log messages dropped: control could not keep up'),
  )

  private logFlow(f: FlowLog): void {
    const protoName = f.proto === 1 ? 'icmp' : f.proto === 6 ? 'tcp' : f.proto === 17 ? 'udp' : String(f.proto)
    const peer = f.peer >= 0 ? (this.peers.find((p) => p.slot === f.peer)?.cfg.identity ?? `slot${f.peer}`) : '-'
    const ports = f.proto === 6 || f.proto === 17
    this.log.trace(
      {
        dir: f.dir === 'out' ? 'outbound' : 'inbound',
        peer,
        proto: protoName,
        src: ports ? `${intToIp(f.src)}:${f.sport}` : intToIp(f.src),
        dst: ports ? `${intToIp(f.dst)}:${f.dport}` : intToIp(f.dst),
        ...(f.proto === 1 ? { icmp_type: f.sport } : {}),
        size: f.len,
        verdict: f.verdict,
      },
      'flow',
    )
  }

  // ---------------------------------------------------------------- peers

  private async resolveEndpoint(peer: PeerRuntime, force = false): Promise<void> {
    const ep = peer.cfg.endpoint
    if (!ep) return
    peer.lastResolveMs = Date.now()
    let ip = parseIpv4(ep.host)
    if (typeof ip === 'string') {
      try {
        const r = await dns.lookup(ep.host, { family: 4 })
        ip = parseIpv4(r.address) as number
      } catch (e) {
        this.log.warn(
          { peer: peer.cfg.identity, endpoint: `${ep.host}:${ep.port}`, err: (e as Error).message },
          'cannot resolve peer endpoint; waiting for the peer to connect',
        )
        return
      }
    }
    const changed = peer.configuredEndpoint !== undefined && (peer.configuredEndpoint.ip !== ip || peer.configuredEndpoint.port !== ep.port)
    peer.configuredEndpoint = { ip: ip as number, port: ep.port }
    const pf = peer.slot * PF_FIELDS + PF_ENDPOINT
    if (this.v.peerF64[pf] === 0 || (force && changed)) this.v.peerF64[pf] = packEndpoint(ip as number, ep.port)
    if (changed)
      this.log.network(
        { peer: peer.cfg.identity, host: ep.host, address: `${intToIp(ip as number)}:${ep.port}` },
        'peer endpoint name resolves to a new address',
      )
  }

  private async addPeer(cfg: Profile['peers'][number]): Promise<PeerRuntime> {
    const slot = this.freePeerSlots.pop()
    if (slot === undefined) throw new EnclaveError('EPEERS', 'too many peers for this run; restart the agent to grow the table')
    const peer: PeerRuntime = {
      slot,
      cfg,
      crypto: peerCrypto(this.local, cfg.publicKey, cfg.presharedKey),
      lastInitiationSentMs: -Infinity,
      nextRetryMs: 0,
      staged: [],
      lastTxDataHandled: 0,
    }
    const pb = slot * P_FIELDS
    Atomics.store(this.v.peerI32, pb + P_CUR_KP, -1)
    Atomics.store(this.v.peerI32, pb + P_ACTIVE, 1)
    this.v.peerF64.fill(0, slot * PF_FIELDS, slot * PF_FIELDS + PF_FIELDS)
    for (let w = 0; w < this.layout.workers; w++) {
      const b = (w * this.layout.maxPeers + slot) * C_PEER_FIELDS
      this.v.counters.fill(0, b, b + C_PEER_FIELDS)
    }
    this.peers.push(peer)
    await this.resolveEndpoint(peer)
    return peer
  }

  private removePeer(peer: PeerRuntime): void {
    Atomics.store(this.v.peerI32, peer.slot * P_FIELDS + P_CUR_KP, -1)
    Atomics.store(this.v.peerI32, peer.slot * P_FIELDS + P_ACTIVE, 0)
    for (const kp of [peer.current, peer.previous, peer.next]) if (kp) this.retireKeypair(kp.slot)
    if (peer.pendingSlot !== undefined) this.retireKeypair(peer.pendingSlot)
    this.peers = this.peers.filter((p) => p !== peer)
    // The slot is reused only after keys retired through quarantine would have expired anyway.
    setTimeout(() => this.freePeerSlots.push(peer.slot), KEYPAIR_QUARANTINE_MS).unref()
  }

  private peerBySlot(slot: number): PeerRuntime | undefined {
    return this.peers.find((p) => p.slot === slot)
  }

  // ---------------------------------------------------------------- keypairs

  private allocKeypair(): { slot: number; index: number } {
    const now = Date.now()
    while (this.kpQuarantine.length && this.kpQuarantine[0].until <= now) this.kpFree.push(this.kpQuarantine.shift()!.slot)
    const slot = this.kpFree.pop()
    if (slot === undefined) throw new Error('keypair table exhausted')
    const index = ((sodium.randombytes_uniform(0x100000) << 12) | slot) >>> 0
    Atomics.store(this.v.kpI32, slot * K_FIELDS + K_STATE, 0)
    Atomics.store(this.v.kpI32, slot * K_FIELDS + K_INDEX, index | 0)
    return { slot, index }
  }

  private retireKeypair(slot: number): void {
    const kb = slot * K_FIELDS
    Atomics.store(this.v.kpI32, kb + K_STATE, 0)
    Atomics.store(this.v.kpI32, kb + K_INDEX, 0)
    this.v.kpKeys.fill(0, slot * KEY_BYTES_PER_SLOT, (slot + 1) * KEY_BYTES_PER_SLOT)
    this.kpQuarantine.push({ slot, until: Date.now() + KEYPAIR_QUARANTINE_MS })
  }

  private installKeypair(peer: PeerRuntime, slot: number, index: number, keys: SessionKeys, state: number): KeypairRef {
    const kb = slot * K_FIELDS
    const now = Date.now()
    this.v.kpKeys.set(keys.sendKey, slot * KEY_BYTES_PER_SLOT)
    this.v.kpKeys.set(keys.recvKey, slot * KEY_BYTES_PER_SLOT + 32)
    this.v.kpI32[kb + K_REMOTE] = keys.remoteIndex | 0
    this.v.kpI32[kb + K_PEER] = peer.slot
    this.v.kpI32[kb + K_INITIATOR] = keys.isInitiator ? 1 : 0
    Atomics.store(this.v.kpI32, kb + K_SEND_CTR, 0)
    this.v.kpF64[slot * KF_FIELDS + KF_CREATED_MS] = now
    this.v.kpF64[slot * KF_FIELDS + KF_REPLAY_LAST] = 0
    this.v.kpReplay.fill(0, slot * REPLAY_WORDS, (slot + 1) * REPLAY_WORDS)
    Atomics.store(this.v.kpI32, kb + K_INDEX, index | 0)
    Atomics.store(this.v.kpI32, kb + K_STATE, state) // publish last
    return { slot, index, createdMs: this.v.kpF64[slot * KF_FIELDS + KF_CREATED_MS], isInitiator: keys.isInitiator }
  }

  // ---------------------------------------------------------------- handshakes

  private sendRaw(buf: Uint8Array, ip: number, port: number): void {
    if (!this.udpFds.length) return
    this.ctrlSlab.set(buf, 0)
    this.ctrlLens[0] = buf.length
    this.ctrlAddrs[0] = ip >>> 0
    this.ctrlAddrs[1] = port
    native.sendBatch(this.udpFds[0], this.ctrlSlab, 4096, 0, this.ctrlLens, this.ctrlAddrs, 1)
  }

  private endpointOf(peer: PeerRuntime): { ip: number; port: number } | undefined {
    const e = this.v.peerF64[peer.slot * PF_FIELDS + PF_ENDPOINT]
    if (e !== 0) return { ip: endpointIp(e), port: endpointPort(e) }
    return peer.configuredEndpoint
  }

  initiate(peer: PeerRuntime, why: string): void {
    const now = Date.now()
    if (now - peer.lastInitiationSentMs < REKEY_TIMEOUT_MS) return
    const ep = this.endpointOf(peer)
    if (!ep) {
      this.log.debug({ peer: peer.cfg.identity }, 'cannot initiate a handshake: no endpoint known; waiting for the peer')
      return
    }
    if (peer.pendingSlot !== undefined) this.retireKeypair(peer.pendingSlot)
    const { slot, index } = this.allocKeypair()
    peer.pendingSlot = slot
    const msg = createInitiation(this.local, peer.crypto, index, now)
    peer.lastInitiationSentMs = now
    if (peer.handshakeStartedMs === undefined) peer.handshakeStartedMs = now
    peer.nextRetryMs = now + REKEY_TIMEOUT_MS + sodium.randombytes_uniform(REKEY_TIMEOUT_JITTER_MAX_MS + 1)
    this.sendRaw(msg, ep.ip, ep.port)
    this.log.protocol({ peer: peer.cfg.identity, endpoint: `${intToIp(ep.ip)}:${ep.port}`, reason: why }, 'sent handshake initiation')
  }

  private underLoad(now: number): boolean {
    this.handshakeTimes.push(now)
    while (this.handshakeTimes.length && now - this.handshakeTimes[0] > 1000) this.handshakeTimes.shift()
    return this.handshakeTimes.length > UNDER_LOAD_HANDSHAKES_PER_S
  }

  private handleHandshake(msg: Buffer, ip: number, port: number): void {
    const now = Date.now()
    const type = msg[0]
    const from = `${intToIp(ip)}:${port}`
    if (type === MSG_INITIATION || type === MSG_RESPONSE) {
      if (msg.length !== (type === MSG_INITIATION ? 148 : 92) || !checkMac1(this.local, msg)) {
        this.log.debug({ from, type }, 'dropped handshake message: bad size or mac1')
        return
      }
      if (this.underLoad(now) && !checkMac2(this.cookie, msg, ip, port, now)) {
        this.sendRaw(createCookieReply(this.local, this.cookie, msg, ip, port, now), ip, port)
        this.log.protocol({ from }, 'under load: sent cookie reply')
        return
      }
    }
    if (type === MSG_INITIATION) {
      if (this.hsInFlight >= MAX_HANDSHAKES_IN_FLIGHT) {
        this.log.debug({ from }, 'handshake pool saturated: initiation dropped (the initiator retries)')
        return
      }
      this.hsInFlight++
      void this.answerInitiation(msg, ip, port)
        .catch((e: Error) => this.log.error({ from, err: e.message }, 'handshake task failed'))
        .finally(() => this.hsInFlight--)
      return
    }
    if (type === MSG_RESPONSE) {
      const ri = readReceiverIndex(msg, 8)
      const peer = this.peers.find((p) => p.crypto.handshake && p.crypto.handshake.localIndex >>> 0 === ri)
      if (!peer || peer.pendingSlot === undefined) return
      const keys = consumeResponse(this.local, peer.crypto, msg)
      if (!keys) {
        this.log.network({ peer: peer.cfg.identity, from }, 'handshake response does not authenticate: dropped')
        return
      }
      const slot = peer.pendingSlot
      peer.pendingSlot = undefined
      if (peer.previous) this.retireKeypair(peer.previous.slot)
      peer.previous = peer.current
      peer.current = this.installKeypair(peer, slot, keys.localIndex, keys, KP_VALID)
      Atomics.store(this.v.peerI32, peer.slot * P_FIELDS + P_CUR_KP, slot)
      this.v.peerF64[peer.slot * PF_FIELDS + PF_ENDPOINT] = packEndpoint(ip, port)
      peer.handshakeStartedMs = undefined
      peer.lastHandshakeMs = now
      peer.unresponsiveSinceMs = undefined
      this.log.network({ peer: peer.cfg.identity, endpoint: from }, 'handshake complete (we initiated); session up')
      if (!this.flushStaged(peer)) this.sendKeepalive(peer) // confirms the session to the responder
      this.refreshFailover()
      return
    }
    if (type === MSG_COOKIE_REPLY && msg.length === 64) {
      const ri = readReceiverIndex(msg, 4)
      const peer = this.peers.find((p) => p.crypto.handshake && p.crypto.handshake.localIndex >>> 0 === ri)
      if (peer && consumeCookieReply(peer.crypto, msg, now)) {
        this.log.protocol({ peer: peer.cfg.identity }, 'peer is under load: got a cookie; retrying handshake with mac2')
        peer.lastInitiationSentMs = -Infinity
      }
    }
  }

  /** Responder: decrypt in the pool, check replay/flood here, build the response in the pool, install. */
  private async answerInitiation(msg: Buffer, ip: number, port: number): Promise<void> {
    const from = `${intToIp(ip)}:${port}`
    const ci = (await this.hsPool!.run({
      op: 'consume',
      msg,
      privateKey: this.local.privateKey,
      publicKey: this.local.publicKey,
      nowMs: Date.now(),
    })) as ConsumedInitiation | null
    if (this.stopping) return
    const peer = ci && this.peers.find((p) => Buffer.compare(p.cfg.publicKey, Buffer.from(ci.peerPublicKey)) === 0)
    if (!ci || !peer) {
      this.log.network({ from }, 'handshake initiation from an unknown key or that does not authenticate: dropped')
      return
    }
    const verdict = acceptInitiation(peer.crypto, ci, Date.now(), 1000 / MAX_INITIATIONS_PER_PEER_PER_S)
    if (verdict !== 'ok') {
      this.log.protocol({ peer: peer.cfg.identity, from, verdict }, 'handshake initiation refused')
      return
    }
    const { slot, index } = this.allocKeypair()
    const state = peer.crypto.handshake!
    peer.crypto.handshake = undefined
    const r = (await this.hsPool!.run({
      op: 'respond',
      peerPublicKey: peer.cfg.publicKey,
      presharedKey: peer.crypto.presharedKey,
      state,
      localIndex: index,
      nowMs: Date.now(),
    })) as { msg: Uint8Array; keys: SessionKeys }
    if (this.stopping || !this.peers.includes(peer)) {
      this.retireKeypair(slot)
      return
    }
    const resp = Buffer.from(r.msg)
    writeMacs(resp, peer.crypto, Date.now())
    if (peer.next) this.retireKeypair(peer.next.slot)
    peer.next = this.installKeypair(peer, slot, index, r.keys, KP_RECV_ONLY)
    this.v.peerF64[peer.slot * PF_FIELDS + PF_ENDPOINT] = packEndpoint(ip, port)
    this.sendRaw(resp, ip, port)
    peer.lastHandshakeMs = Date.now()
    this.log.protocol({ peer: peer.cfg.identity, from }, 'answered handshake initiation')
  }

  /** Encrypts and sends a transport message from control (keepalives, staged packets). */
  private sendTransport(peer: PeerRuntime, payload: Uint8Array): boolean {
    const kp = peer.current
    const ep = this.endpointOf(peer)
    if (!kp || !ep || Atomics.load(this.v.kpI32, kp.slot * K_FIELDS + K_STATE) !== KP_VALID) return false
    const kb = kp.slot * K_FIELDS
    const ctr = Atomics.add(this.v.kpI32, kb + K_SEND_CTR, 1) >>> 0
    const padded = Math.min((payload.length + 15) & ~15, Math.max(payload.length, this.profile.mtu))
    const out = Buffer.alloc(16 + padded + 16)
    out[0] = MSG_TRANSPORT
    out.writeUInt32LE(this.v.kpI32[kb + K_REMOTE] >>> 0, 4)
    out.writeUInt32LE(ctr, 8)
    out.set(payload, 16)
    const nonce = Buffer.alloc(12)
    nonce.writeUInt32LE(ctr, 4)
    const m = out.subarray(16, 16 + padded)
    const key = Buffer.from(this.v.kpKeys.buffer, kp.slot * KEY_BYTES_PER_SLOT, 32)
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(m, out.subarray(16 + padded), m, null, null, nonce, key)
    this.sendRaw(out, ep.ip, ep.port)
    const pf = peer.slot * PF_FIELDS
    this.v.peerF64[pf + PF_LAST_TX_ANY] = Date.now()
    if (payload.length) this.v.peerF64[pf + PF_LAST_TX_DATA] = Date.now()
    return true
  }

  private sendKeepalive(peer: PeerRuntime): void {
    if (this.sendTransport(peer, new Uint8Array(0))) this.log.protocol({ peer: peer.cfg.identity }, 'sent keepalive')
  }

  private flushStaged(peer: PeerRuntime): boolean {
    if (!peer.staged.length) return false
    const list = peer.staged
    peer.staged = []
    let sent = 0
    for (const pkt of list) if (this.sendTransport(peer, pkt)) sent++
    this.log.debug({ peer: peer.cfg.identity, packets: sent }, 'sent packets queued during the handshake')
    return sent > 0
  }

  private async consumeRing(c: RingConsumer): Promise<void> {
    while (!this.stopping) {
      await c.waitForData(500)
      for (const m of c.drain()) {
        try {
          this.handleRingMessage(m.kind, m.payload, m.ip, m.port, m.peer, m.aux)
        } catch (e) {
          this.log.error({ err: (e as Error).message }, 'error handling a control message')
        }
      }
    }
  }

  private handleRingMessage(kind: number, payload: Buffer, ip: number, port: number, slot: number, aux: number): void {
    if (kind === MSG_HANDSHAKE) {
      this.handleHandshake(payload, ip, port)
      return
    }
    const peer = this.peerBySlot(slot)
    if (!peer) return
    if (kind === MSG_STAGED) {
      if (
        peer.current &&
        Atomics.load(this.v.kpI32, peer.current.slot * K_FIELDS + K_STATE) === KP_VALID &&
        Date.now() - peer.current.createdMs < REJECT_AFTER_TIME_MS &&
        this.endpointOf(peer)
      ) {
        this.sendTransport(peer, payload) // a session came up while this packet was in the ring
        return
      }
      peer.staged.push(payload)
      if (peer.staged.length > MAX_STAGED_PER_PEER) peer.staged.shift()
      if (!this.endpointOf(peer) && Date.now() - this.lastStageDropLog > STAGE_DROP_LOG_MS) {
        this.lastStageDropLog = Date.now()
        this.log.warn(
          { peer: peer.cfg.identity },
          'traffic for a peer with no endpoint: it has to connect to us first (or set Endpoint in the profile)',
        )
      }
      this.initiate(peer, 'traffic waiting')
    } else if (kind === MSG_CONFIRMED) {
      if (peer.next && peer.next.slot === aux) {
        if (peer.previous) this.retireKeypair(peer.previous.slot)
        peer.previous = peer.current
        peer.current = peer.next
        peer.next = undefined
        peer.handshakeStartedMs = undefined
        peer.unresponsiveSinceMs = undefined
        if (peer.pendingSlot !== undefined) {
          this.retireKeypair(peer.pendingSlot)
          peer.pendingSlot = undefined
          peer.crypto.handshake = undefined
        }
        this.log.network({ peer: peer.cfg.identity, endpoint: this.endpointText(peer) }, 'handshake complete (peer initiated); session up')
        this.flushStaged(peer)
        this.refreshFailover()
      }
    } else if (kind === MSG_REKEY) {
      this.initiate(peer, 'rekey: keypair age or message count')
    }
  }

  private endpointText(peer: PeerRuntime): string | undefined {
    const e = this.endpointOf(peer)
    return e ? `${intToIp(e.ip)}:${e.port}` : undefined
  }

  // ---------------------------------------------------------------- timers

  private tick(): void {
    const now = Date.now()
    const f = this.v.peerF64
    for (const peer of this.peers) {
      const pf = peer.slot * PF_FIELDS
      const kps: PeerTimerState['keypairs'] = {}
      for (const w of ['previous', 'current', 'next'] as const) if (peer[w]) kps[w] = peer[w]
      const actions = timerActions(
        {
          lastRxAny: f[pf + PF_LAST_RX_ANY],
          lastRxData: f[pf + PF_LAST_RX_DATA],
          lastTxAny: f[pf + PF_LAST_TX_ANY],
          lastTxData: f[pf + PF_LAST_TX_DATA],
          persistentKeepaliveS: peer.cfg.persistentKeepalive,
          handshakeStartedMs: peer.handshakeStartedMs,
          nextRetryMs: peer.nextRetryMs,
          lastInitiationSentMs: peer.lastInitiationSentMs,
          keypairs: kps,
          unresponsive: peer.unresponsiveSinceMs !== undefined,
          rekeyOnRxDone: peer.rekeyOnRxDone === peer.current?.slot,
        },
        now,
      )
      for (const a of actions) this.applyTimerAction(peer, a, now)
      // Health probing of an exit node that stopped answering (failover back when it returns).
      if (peer.cfg.availableRoutes.length && peer.unresponsiveSinceMs !== undefined && now - peer.lastInitiationSentMs >= HEALTH_PROBE_MS)
        this.initiate(peer, 'probing exit node')
      const e = f[pf + PF_ENDPOINT]
      if (peer.lastLoggedEndpoint !== undefined && e !== 0 && e !== peer.lastLoggedEndpoint)
        this.log.network(
          { peer: peer.cfg.identity, endpoint: `${intToIp(endpointIp(e))}:${endpointPort(e)}` },
          'peer roamed to a new endpoint',
        )
      if (e !== 0) peer.lastLoggedEndpoint = e
      const st = peerState(peer, now, REJECT_AFTER_TIME_MS)
      if (peer.lastState !== undefined && st !== peer.lastState)
        this.log.info({ peer: peer.cfg.identity, from: peer.lastState, to: st }, 'peer state changed')
      peer.lastState = st
    }
  }

  private applyTimerAction(peer: PeerRuntime, a: TimerAction, now: number): void {
    const id = peer.cfg.identity
    switch (a.kind) {
      case 'expire': {
        const kp = peer[a.which]
        if (!kp) return
        this.retireKeypair(kp.slot)
        peer[a.which] = undefined
        if (a.which === 'current') {
          Atomics.store(this.v.peerI32, peer.slot * P_FIELDS + P_CUR_KP, -1)
          this.log.network({ peer: id }, 'session expired (no new handshake within REJECT_AFTER_TIME)')
        }
        return
      }
      case 'give-up':
        this.log.network(
          { peer: id, queued: peer.staged.length },
          'handshake did not complete within REKEY_ATTEMPT_TIME; giving up until there is new traffic',
        )
        peer.handshakeStartedMs = undefined
        peer.staged = []
        if (peer.pendingSlot !== undefined) this.retireKeypair(peer.pendingSlot)
        peer.pendingSlot = undefined
        peer.crypto.handshake = undefined
        this.refreshFailover()
        return
      case 'retry':
        // A host name may have moved (dynamic DNS): look it up again while handshakes keep failing.
        if (peer.cfg.endpoint && typeof parseIpv4(peer.cfg.endpoint.host) === 'string' && now - (peer.lastResolveMs ?? 0) >= DNS_RETRY_MS) {
          void this.resolveEndpoint(peer, true)
        }
        this.initiate(peer, 'retry (REKEY_TIMEOUT)')
        if (now - (peer.handshakeStartedMs ?? now) >= 2 * REKEY_TIMEOUT_MS) this.refreshFailover()
        return
      case 'keepalive':
        this.sendKeepalive(peer)
        return
      case 'initiate':
        this.initiate(peer, a.why)
        return
      case 'unresponsive':
        peer.unresponsiveSinceMs = now
        this.log.network({ peer: id }, 'peer is not answering; starting a new handshake')
        this.initiate(peer, 'no reply to sent data')
        this.refreshFailover()
        return
      case 'rekey-on-receive':
        peer.rekeyOnRxDone = peer.current?.slot
        this.initiate(peer, 'rekey: keypair nearing REJECT_AFTER_TIME')
    }
  }

  // ---------------------------------------------------------------- routing tables

  /** Picks, for each AvailableRoute, the first exit node (profile order) that is not known to be down. */
  private chooseRoutes(): Map<string, number> {
    const m = new Map<string, number>()
    const candidates = new Map<string, PeerRuntime[]>()
    for (const peer of this.peers)
      for (const c of peer.cfg.availableRoutes) candidates.set(c.text, [...(candidates.get(c.text) ?? []), peer])
    for (const [route, list] of candidates) {
      list.sort((a, b) => this.routeOrder(a) - this.routeOrder(b))
      const healthy = list.find(
        (p) =>
          p.unresponsiveSinceMs === undefined &&
          !(p.handshakeStartedMs !== undefined && Date.now() - p.handshakeStartedMs > 2 * REKEY_TIMEOUT_MS),
      )
      m.set(route, (healthy ?? list[0]).slot)
    }
    return m
  }

  private routeOrder(p: PeerRuntime): number {
    const keys = [...this.profile.exitNode.availableRoutes.keys()]
    return keys.indexOf(p.cfg.identity)
  }

  private refreshFailover(): void {
    const next = this.chooseRoutes()
    let changed = next.size !== this.activeRoute.size
    for (const [r, s] of next) {
      const prev = this.activeRoute.get(r)
      if (prev !== s) {
        changed = true
        if (prev !== undefined)
          this.log.warn({ route: r, from: this.peerBySlot(prev)?.cfg.identity, to: this.peerBySlot(s)?.cfg.identity }, 'exit node failover')
      }
    }
    if (changed) this.rebuildTables()
  }

  private rebuildTables(): void {
    const p = this.profile
    this.activeRoute = this.chooseRoutes()
    const route: RouteEntry[] = []
    const allow: RouteEntry[] = []
    const groups: number[][] = []
    const groupOf = new Map<string, number>()
    const addAllow = (c: Cidr, slot: number) => {
      let g = groupOf.get(c.text)
      if (g === undefined) {
        g = groups.length
        groups.push([])
        groupOf.set(c.text, g)
        allow.push({ addr: c.addr, len: c.len, value: g })
      }
      groups[g].push(slot)
    }
    for (const peer of this.peers) {
      route.push({ addr: peer.cfg.virtualAddress, len: 32, value: peer.slot })
      addAllow({ addr: peer.cfg.virtualAddress, len: 32, text: `${intToIp(peer.cfg.virtualAddress)}/32` }, peer.slot)
      for (const c of peer.cfg.availableRoutes) addAllow(c, peer.slot)
    }
    for (const [text, slot] of this.activeRoute) {
      const c = this.peerBySlot(slot)!.cfg.availableRoutes.find((x) => x.text === text)!
      if (c.len === 32 && this.peers.some((x) => x.cfg.virtualAddress === c.addr)) continue
      route.push({ addr: c.addr, len: c.len, value: slot })
    }
    const groupStart = new Int32Array(groups.length + 1)
    const flat: number[] = []
    groups.forEach((g, i) => {
      groupStart[i] = flat.length
      flat.push(...g)
    })
    groupStart[groups.length] = flat.length
    const local: RouteEntry[] = [{ addr: p.virtualAddress, len: 32, value: LOCAL_SELF }]
    for (const c of p.exitNode.providesRoutes) local.push({ addr: c.addr, len: c.len, value: LOCAL_PROVIDED })
    const rt = buildRouteTable(route)
    const at = buildRouteTable(allow)
    const lt = buildRouteTable(local)
    const gen = (this.tables?.gen ?? 0) + 1
    this.tables = {
      gen,
      routeChild: rt.child,
      routeVal: rt.val,
      allowChild: at.child,
      allowVal: at.val,
      groupStart,
      groupPeers: Int32Array.from(flat),
      localChild: lt.child,
      localVal: lt.val,
      exitNode: p.exitNode.providesRoutes.length > 0,
      selfAddr: p.virtualAddress | 0,
    }
    for (const w of this.workers) w?.postMessage({ t: 'tables', tables: this.tables })
    Atomics.store(this.v.global, G_CONFIG_GEN, gen)
  }

  // ---------------------------------------------------------------- OS routes and exit-node checks

  private async syncOsRoutes(): Promise<void> {
    const wanted: Cidr[] = []
    for (const peer of this.peers) for (const c of peer.cfg.availableRoutes) if (!wanted.some((w) => w.text === c.text)) wanted.push(c)
    const existing = await net.listRoutes('main')
    const decisions = net.decideRoutes(
      wanted,
      existing.filter((r) => !this.installedRoutes.some((i) => i.text === r.dst)),
      this.ifname,
      this.profile.exitNode.forceRoutes,
    )
    const fwmark = String(this.fwmark())
    for (const old of this.installedRoutes) {
      if (decisions.some((d) => d.install && d.cidr.text === old.text)) continue
      await net.delRoute(old, this.ifname, old.len === 0 ? fwmark : undefined)
      this.log.info({ route: old.text }, 'removed route')
    }
    const installed: Cidr[] = []
    for (const d of decisions) {
      if (!d.install) {
        this.log.warn({ route: d.cidr.text, reason: d.reason }, 'route NOT installed')
        continue
      }
      try {
        if (d.cidr.len === 0) {
          await net.addRoute(d.cidr, this.ifname, fwmark)
          if (!this.defaultRouteRules) {
            await net.addDefaultRouteRules(this.fwmark())
            this.defaultRouteRules = true
          }
        } else {
          await net.addRoute(d.cidr, this.ifname)
        }
        installed.push(d.cidr)
        if (!this.installedRoutes.some((c) => c.text === d.cidr.text))
          this.log.info(
            {
              route: d.cidr.text,
              dev: this.ifname,
              via: this.peerBySlot(this.activeRoute.get(d.cidr.text) ?? -1)?.cfg.identity,
              note: d.warning,
            },
            'installed route',
          )
      } catch (e) {
        d.install = false
        d.reason = (e as Error).message
        this.log.error({ route: d.cidr.text, err: d.reason }, 'route could not be installed')
      }
    }
    if (!installed.some((c) => c.len === 0) && this.defaultRouteRules) {
      await net.removeDefaultRouteRules(this.fwmark())
      this.defaultRouteRules = false
    }
    this.installedRoutes = installed
    this.routeDecisions = decisions
  }

  private async checkExitNode(): Promise<void> {
    const en = this.profile.exitNode
    this.exitWarnings = []
    if (!en.providesRoutes.length) return
    if (en.manageNat) {
      if (!net.ipForwardEnabled()) {
        net.enableIpForward()
        this.log.info('ManageNat: enabled net.ipv4.ip_forward')
      }
      if ((await net.natRules()) === undefined) {
        this.exitWarnings.push(
          'ManageNat needs iptables (iptables-nft works) and it is not installed: add the SNAT rules by hand (nft or iptables)',
        )
      } else {
        await net.removeTaggedNatRules(this.natTag)
        for (const c of en.providesRoutes) {
          const to = en.snatAddress !== undefined ? intToIp(en.snatAddress) : await net.lanAddressFor(c)
          if (!to) {
            this.exitWarnings.push(`ManageNat: no local address reaches ${c.text}; no SNAT rule added`)
            continue
          }
          try {
            await net.addNatRule(net.natRuleArgs(c, to, this.natTag))
            this.log.info({ route: c.text, to }, 'ManageNat: added SNAT rule')
          } catch (e) {
            this.exitWarnings.push(`ManageNat: could not add the SNAT rule for ${c.text}: ${(e as Error).message}`)
          }
        }
      }
    }
    if (!net.ipForwardEnabled())
      this.exitWarnings.push('IP forwarding is off, so nothing reaches the LAN: run `sudo sysctl -w net.ipv4.ip_forward=1`')
    const rules = await net.natRules()
    for (const c of en.providesRoutes) {
      if (rules === undefined) {
        this.exitWarnings.push('iptables is not available: cannot check the SNAT rules')
        break
      }
      if (!net.natCovers(rules, c)) {
        const to = (await net.lanAddressFor(c)) ?? "<this node's LAN address>"
        this.exitWarnings.push(
          `no SNAT rule for ${c.text}: run \`sudo iptables -t nat -A POSTROUTING -s 100.64.0.0/10 -d ${c.text} -j SNAT --to ${to}\``,
        )
      }
    }
    for (const w of this.exitWarnings) this.log.warn(w)
  }

  // ---------------------------------------------------------------- reload, status, stop

  async reload(): Promise<{ added: string[]; removed: string[]; changed: string[] }> {
    const next = loadProfile(profilePath(this.opts.configDir)) // throws the usual ProfileError: nothing applied
    if (
      !next.privateKey.equals(this.profile.privateKey) ||
      next.interface !== this.profile.interface ||
      next.localPort !== this.profile.localPort ||
      next.mtu !== this.profile.mtu
    ) {
      throw new EnclaveError(
        'ERELOAD',
        'PrivateKey, Interface, LocalPort and Mtu cannot change while running; restart the agent (`enclave restart`)',
      )
    }
    const added: string[] = []
    const removed: string[] = []
    const changed: string[] = []
    for (const peer of [...this.peers]) {
      const cfg = next.peers.find((c) => c.publicKey.equals(peer.cfg.publicKey))
      if (!cfg) {
        this.removePeer(peer)
        removed.push(peer.cfg.identity)
        continue
      }
      const before = JSON.stringify({ ...peer.cfg, index: 0 })
      const psk = peer.cfg.presharedKey?.toString('base64') !== cfg.presharedKey?.toString('base64')
      const endpointEdited = `${peer.cfg.endpoint?.host}:${peer.cfg.endpoint?.port}` !== `${cfg.endpoint?.host}:${cfg.endpoint?.port}`
      peer.cfg = cfg
      if (psk) peer.crypto = peerCrypto(this.local, cfg.publicKey, cfg.presharedKey)
      if (JSON.stringify({ ...cfg, index: 0 }) !== before) {
        changed.push(cfg.identity)
        if (endpointEdited) {
          // The admin's new Endpoint wins over a roamed one.
          peer.configuredEndpoint = undefined
          this.v.peerF64[peer.slot * PF_FIELDS + PF_ENDPOINT] = 0
        }
        await this.resolveEndpoint(peer)
      }
    }
    this.profile = next
    for (const cfg of next.peers) {
      if (!this.peers.some((p) => p.cfg.publicKey.equals(cfg.publicKey))) {
        await this.addPeer(cfg)
        added.push(cfg.identity)
      }
    }
    this.rebuildTables()
    await this.syncOsRoutes()
    await this.checkExitNode()
    this.log.info({ added, removed, changed }, 'profile reloaded')
    return { added, removed, changed }
  }

  setVerbosity(level: number): void {
    this.verbosity = level
    setVerbosity(this.log, level)
    Atomics.store(this.v.global, G_LOG_LEVEL, level)
    this.log.warn({ verbosity: VERBOSITY_NAMES[level] }, 'log level changed')
  }

  reasonCounters(): Record<string, number> {
    const out: Record<string, number> = {}
    REASONS.forEach((r, i) => {
      let s = 0
      for (let w = 0; w < this.layout.workers; w++) s += this.v.reasons[w * REASONS.length + i]
      out[r] = s
    })
    return out
  }

  private peerCounter(slot: number, field: number): number {
    let s = 0
    for (let w = 0; w < this.layout.workers; w++) s += this.v.counters[(w * this.layout.maxPeers + slot) * C_PEER_FIELDS + field]
    return s
  }

  status(): StatusModel {
    const now = Date.now()
    const p = this.profile
    const f = this.v.peerF64
    const flows = ctCountByPeer(this.ct, Math.floor((now - this.epochMs) / 1000))
    const counters = this.reasonCounters()
    const ago = (t: number) => (t > 0 ? (now - t) / 1000 : null)
    return {
      version: STATUS_VERSION,
      running: true,
      pid: process.pid,
      releaseVersion: VERSION,
      localIdentity: p.identity,
      publicKey: p.publicKey.toString('base64'),
      profileLocation: p.file,
      virtualAddress: intToIp(p.virtualAddress),
      interface: this.ifname,
      bindingAddress: `0.0.0.0:${this.port}`,
      logLevel: this.verbosity,
      exitNode: {
        providesRoutes: p.exitNode.providesRoutes.map((c) => c.text),
        activeFlows: [...flows.values()].reduce((a, b) => a + b, 0),
        unsolicitedDrops: counters.unsolicited,
        users: this.peers
          .filter((peer) => flows.has(peer.slot) || this.peerCounter(peer.slot, C_TO_LAN_BYTES) > 0)
          .map((peer) => ({
            identity: peer.cfg.identity,
            flows: flows.get(peer.slot) ?? 0,
            bytesToLan: this.peerCounter(peer.slot, C_TO_LAN_BYTES),
            bytesFromLan: this.peerCounter(peer.slot, C_FROM_LAN_BYTES),
          })),
        warnings: this.exitWarnings,
      },
      counters,
      peers: this.peers.map((peer) => {
        const pf = peer.slot * PF_FIELDS
        const exitNodeFor: RouteStatus[] = peer.cfg.availableRoutes.map((c) => {
          const d = this.routeDecisions.find((x) => x.cidr.text === c.text)
          const installed = this.installedRoutes.some((x) => x.text === c.text)
          const active = this.activeRoute.get(c.text) === peer.slot
          const reason = !installed
            ? d?.reason
            : !active
              ? `${this.peerBySlot(this.activeRoute.get(c.text) ?? -1)?.cfg.identity ?? 'another exit node'} is active`
              : undefined
          return { route: c.text, installed, active, reason }
        })
        return {
          identity: peer.cfg.identity,
          description: peer.cfg.description,
          publicKey: peer.cfg.publicKeyBase64,
          state: peerState(peer, now, REJECT_AFTER_TIME_MS),
          endpoint: this.endpointText(peer),
          virtualAddress: intToIp(peer.cfg.virtualAddress),
          lastHandshakeSecondsAgo: peer.lastHandshakeMs ? (now - peer.lastHandshakeMs) / 1000 : null,
          lastActivitySecondsAgo: ago(Math.max(f[pf + PF_LAST_RX_ANY], f[pf + PF_LAST_TX_ANY])),
          rxBytes: this.peerCounter(peer.slot, C_RX_BYTES),
          txBytes: this.peerCounter(peer.slot, C_TX_BYTES),
          rxPackets: this.peerCounter(peer.slot, C_RX_PKTS),
          txPackets: this.peerCounter(peer.slot, C_TX_PKTS),
          exitNodeFor,
        }
      }),
    }
  }

  private async closeFds(): Promise<void> {
    for (const fd of this.udpFds) native.close(fd)
    for (const fd of this.tunFds) native.close(fd)
    this.udpFds = []
    this.tunFds = []
  }

  async stop(why = 'requested'): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.log.info({ reason: why }, 'stopping')
    if (this.tickTimer) clearInterval(this.tickTimer)
    Atomics.store(this.v.global, G_STOP, 1)
    await Promise.all(
      this.workers.map(
        (w) =>
          w &&
          new Promise<void>((r) => {
            const t = setTimeout(() => {
              void w.terminate()
              r()
            }, 2000)
            w.once('exit', () => {
              clearTimeout(t)
              r()
            })
          }),
      ),
    )
    for (const c of this.installedRoutes) await net.delRoute(c, this.ifname, c.len === 0 ? String(this.fwmark()) : undefined)
    if (this.defaultRouteRules) await net.removeDefaultRouteRules(this.fwmark())
    if (this.profile.exitNode.manageNat) {
      const n = await net.removeTaggedNatRules(this.natTag)
      this.log.info({ rules: n }, 'ManageNat: removed our SNAT rules')
    }
    await this.api?.close()
    await this.hsPool?.destroy()
    await this.closeFds() // the TUN device disappears with its last queue
    this.log.info('stopped; everything this agent added was removed')
    this.stoppedResolve()
  }
}
