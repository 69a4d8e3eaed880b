/**
 * The agent's one connection to its hub: Noise_IK with the agent's WireGuard static key inside a
 * WebSocket, the hub's key pinned at enrolment (Hub.PublicKey). Receives the full map, then deltas; each
 * is handed to the agent, which applies it like a profile reload and says when the data plane enforces
 * it; then the link acknowledges the revision. The last map is cached on disk (0600, atomic) so that
 * tunnels, policies and routes come back from it when the agent restarts while the hub is down.
 *
 * Reconnects with full jitter: the first retry within 1 s, then doubling to a 60 s cap while attempts
 * fail; after a connection that came up, within 2 s (1 s after a minute up). A reconnect sends the hash
 * of the cached map: the hub answers with only the revision when nothing changed (no full map).
 */
import fs from 'node:fs'
import os from 'node:os'
import WebSocket from 'ws'
import { writeFileAtomic } from '../common/atomic-file.js'
import type { Profile } from '../config/profile.js'
import { type HubMap, applyDelta, hubMapSchema, mapHash } from '../hubproto/map.js'
import { type CipherState, initiate } from '../hubproto/noise-ik.js'
import {
  HUB_PATH,
  HUB_PROTOCOL_VERSION,
  MessageReader,
  T_MSG1,
  T_MSG2,
  helloTimestamp,
  hubToAgentSchema,
  refusalSchema,
  type RelayedDatagram,
  MAX_RELAY_BATCH,
  MAX_RELAY_DATAGRAM,
  sealDatagrams,
  sealMessage,
  welcomeSchema,
} from '../hubproto/wire.js'
import type { AgentLogger } from '../log/logger.js'
import { type NatClass, natClass, reflectDatagram } from '../hubproto/reflect.js'
import { hubAddresses } from './network/hub-bypass.js'
import { intToIp } from '../common/ipv4.js'
import { isPrivateRoute } from '../config/hub-layer.js'

export const HUB_CACHE_FILE = 'hub-map.json'

export interface HubCache {
  hubKey: string
  rev: number
  hash: string
  receivedAt: string
  map: HubMap
}

/** The cached map when it belongs to this hub key and validates; otherwise null (and why). */
export function readHubCache(file: string, hubKey: string): { cache: HubCache | null; problem?: string } {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { cache: null }
    return { cache: null, problem: `cannot read ${file}: ${(e as Error).message}` }
  }
  try {
    const st = fs.statSync(file)
    if ((st.mode & 0o077) !== 0 || (process.getuid && st.uid !== process.getuid()))
      return { cache: null, problem: `${file} is not 0600 and owned by this user: ignored` }
    const c = JSON.parse(text) as HubCache
    if (c.hubKey !== hubKey) return { cache: null, problem: `${file} belongs to another hub: ignored` }
    const m = hubMapSchema.safeParse(c.map)
    if (!m.success || mapHash(m.data) !== c.hash) return { cache: null, problem: `${file} does not validate: ignored` }
    return { cache: { ...c, map: m.data } }
  } catch (e) {
    return { cache: null, problem: `${file}: ${(e as Error).message}` }
  }
}

export type HubLinkState = 'connecting' | 'up' | 'unreachable' | 'refused'

export interface HubStatus {
  url: string
  state: HubLinkState
  /** The system's state on the hub: pending, approved, disabled, removed. */
  systemState?: string
  rev?: number
  mapAgeS?: number
  peers?: number
  error?: string
  /** What the hub offered that local consent does not accept. */
  notAccepted: string[]
  /** Endpoint discovery: the NAT class and the address the hub's first reflect port saw. */
  nat?: NatClass
  reflexive?: string
}

export interface HubLinkOptions {
  profile: Profile
  cacheFile: string
  log: AgentLogger
  /** Applies a map; resolves true once the data plane enforces it (then the link acknowledges it). */
  apply: (map: HubMap) => Promise<boolean>
  /** Cap of the reconnect backoff (ms). */
  maxBackoffMs?: number
  /** The link's monotonic clock in ms, for its intervals (default performance.now; tests move it). */
  monotonicMs?: () => number
  /**
   * The link pings the hub every third of this and drops a connection that answered none of its pings
   * for this long (default HUB_SILENCE_MS): a path that carries the hub's packets but not ours (a route
   * changed under the socket) reads as down, and the link reconnects.
   */
  silenceMs?: number
  /**
   * Endpoint discovery (src/hubproto/reflect.ts): sends a datagram from the WireGuard socket, and this
   * system's IPv4 addresses (dotted). Without them the link does no discovery.
   */
  sendUdp?: (buf: Buffer, ip: number, port: number) => void
  /** The hub's relay for the path to a peer (identity): its address and our bind token. */
  onRelay?: (peer: string, at: string, token: string) => void
  /** The hub's introduction of a peer: its candidate addresses (reflexive, configured) and host addresses. */
  onPunch?: (peer: string, candidates: string[], hosts: string[]) => void
  /** UDP is blocked on one side: this peer's datagrams go over the hub connection. */
  onRelayTcp?: (peer: string) => void
  /** Connected again after losing the hub (maybe to another replica, with the old relay gone). */
  onReconnected?: () => void
  /** A WireGuard datagram from a peer, relayed by the hub over this connection. */
  onDatagram?: (peer: string, data: Buffer) => void
  localAddresses?: () => Promise<string[]>
  /** Discovery is repeated this often while connected (ms; default 25 s, which also keeps a NAT mapping open). */
  reflectEveryMs?: number
  now?: () => number
}

/** A hub connection with no answer to our pings for this long is dropped and made again. */
export const HUB_SILENCE_MS = 75_000
/** After a refused map, the agent asks for the whole map again at most once per this. */
export const REFUSED_RESYNC_MS = 30_000

/** Reflect datagrams are sent at 0, 1 and 2 s of a round; the result is judged at 3 s. */
const REFLECT_TRIES = 3
const REFLECT_JUDGE_MS = 3000

export class HubLink {
  private ws?: WebSocket
  private liveness?: NodeJS.Timeout
  private reflectTimer?: NodeJS.Timeout
  private reflectRound = 0
  /** What each of the hub's reflect ports saw in the current round (by port). */
  private seen = new Map<number, string>()
  nat?: NatClass
  reflexive?: string
  private stopped = false
  private attempt = 0
  /**
   * When a refused map last made this agent ask for the whole map (REFUSED_RESYNC_MS). This and the link's
   * other intervals (time up, the reflect round, and liveness: see watch) are on the monotonic clock
   * (`mono`), which a step of the wall clock does not move.
   */
  private refusedAt = -Infinity
  /** Sends on the connection that is up (undefined before the first). */
  private sendNow?: (m: unknown) => void
  /** The hub's IPv4 address (its relay ports are on it). */
  private hubIp?: number
  /** Connected at least once (a later connection is a reconnection). */
  private wasUp = false
  /** The connection's send cipher and a raw frame sender, for relayed datagrams. */
  private transportSend?: CipherState
  private sendRaw?: (frame: Buffer) => void
  private upSince = 0
  private readonly mono: () => number
  private retry?: NodeJS.Timeout
  private map: HubMap | null = null
  private hash = ''
  private rev = 0
  private receivedAt = 0
  private lastTs = 0n
  private queue: Promise<unknown> = Promise.resolve()
  state: HubLinkState = 'connecting'
  systemState?: string
  error?: string
  notAccepted: string[] = []
  private urlIndex: number

  constructor(private readonly o: HubLinkOptions) {
    this.urlIndex = Math.floor(Math.random() * (o.profile.hub?.urls.length ?? 1))
    this.mono = o.monotonicMs ?? (() => performance.now())
  }

  /** Seeds the link with the cached map (already applied by the agent at start). */
  seed(cache: HubCache): void {
    this.map = cache.map
    this.hash = cache.hash
    this.rev = cache.rev
    this.receivedAt = Date.parse(cache.receivedAt) || Date.now()
    this.systemState = cache.map.Self.State
  }

  start(): void {
    this.connect()
  }

  /** The pinned hub key this link authenticates (base64). */
  get hubKey(): string {
    return this.o.profile.hub?.publicKey.toString('base64') ?? ''
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.retry)
    clearInterval(this.liveness)
    clearTimeout(this.reflectTimer)
    this.ws?.terminate()
  }

  status(): HubStatus {
    const hub = this.o.profile.hub
    return {
      url: hub?.urls[this.urlIndex % (hub?.urls.length || 1)] ?? '',
      state: this.state,
      ...(this.systemState ? { systemState: this.systemState } : {}),
      ...(this.map ? { rev: this.rev, mapAgeS: Math.round((Date.now() - this.receivedAt) / 1000), peers: this.map.Peers.length } : {}),
      ...(this.error ? { error: this.error } : {}),
      notAccepted: this.notAccepted,
      ...(this.nat ? { nat: this.nat } : {}),
      ...(this.reflexive ? { reflexive: this.reflexive } : {}),
    }
  }

  private helloTs(): string {
    // Strictly growing within this process: the hub refuses a hello not newer than the last it saw.
    const ts = helloTimestamp(Date.now(), this.lastTs)
    this.lastTs = BigInt(`0x${ts}`)
    return ts
  }

  private connect(): void {
    if (this.stopped) return
    const p = this.o.profile
    const hub = p.hub
    if (!hub) return
    const url = hub.urls[this.urlIndex % hub.urls.length].replace(/^http/, 'ws').replace(/\/$/, '') + HUB_PATH
    const log = this.o.log
    const hello = {
      t: 'hello',
      v: HUB_PROTOCOL_VERSION,
      ts: this.helloTs(),
      hostname: os.hostname().slice(0, 253),
      listenPort: p.localPort || 51820,
      ...(this.map ? { resume: { hash: this.hash } } : {}),
      allowGateway: hub.allowGateway,
      acceptDefaultRoute: hub.acceptDefaultRoute,
      advertise: p.exitNode.providesRoutes.map((c) => c.text),
      ...(hub.advertiseEndpoints.length ? { endpoints: hub.advertiseEndpoints } : {}),
    }
    const hs = initiate({ privateKey: p.privateKey, publicKey: p.publicKey }, hub.publicKey, Buffer.from(JSON.stringify(hello)))
    const ws = new WebSocket(url, { handshakeTimeout: 10_000, maxPayload: 16 * 1024 * 1024 })
    this.ws = ws
    let reader: MessageReader | null = null
    let send: ((m: unknown) => void) | null = null
    ws.on('open', () => {
      ws.send(Buffer.concat([Buffer.of(T_MSG1), hs.message1]))
      this.watch(ws, url)
    })
    ws.on('message', (data: Buffer) => {
      try {
        if (!reader) {
          if (data[0] !== T_MSG2) throw new Error('expected the handshake answer')
          const got = hs.readMessage2(data.subarray(1))
          if (!got) throw new Error('the hub did not prove its key (is Hub.PublicKey the key `enclave hub init` printed?)')
          const payload = JSON.parse(Buffer.from(got.payload).toString('utf8'))
          const refusal = refusalSchema.safeParse(payload)
          if (refusal.success) {
            this.state = 'refused'
            this.error = `${refusal.data.code}: ${refusal.data.message}`
            if (refusal.data.code === 'SYSTEM_DISABLED') this.systemState = 'disabled'
            if (refusal.data.code === 'UNKNOWN_SYSTEM') this.systemState = 'removed'
            log.error({ hub: url, code: refusal.data.code }, `the hub refused this system: ${refusal.data.message}`)
            ws.terminate()
            return
          }
          const w = welcomeSchema.parse(payload)
          const t = got.transport
          reader = new MessageReader(t.recv)
          send = (m) => {
            for (const f of sealMessage(t.send, m)) ws.send(f)
          }
          this.sendNow = send
          this.transportSend = t.send
          this.sendRaw = (f) => {
            if (ws.readyState === ws.OPEN && ws.bufferedAmount < 4 * 1024 * 1024) ws.send(f)
          }
          void hubAddresses([url.replace(/^ws/, 'http')]).then((h) => {
            if (this.ws === ws && h.addrs[0] !== undefined) this.hubIp = h.addrs[0]
          })
          this.state = 'up'
          this.error = undefined
          this.systemState = w.state
          this.upSince = this.mono()
          log.info({ hub: url, identity: w.identity, state: w.state }, 'connected to the hub')
          if (this.wasUp) this.o.onReconnected?.()
          this.wasUp = true
          if (w.reflect) void this.discover(ws, url, w.reflect, send)
          return
        }
        const msg = reader.read(data)
        if (msg === undefined) return
        if ((msg as RelayedDatagram).t === 'datagram') {
          const d = msg as RelayedDatagram
          for (const x of d.data) this.o.onDatagram?.(d.peer, x)
          return
        }
        const m = hubToAgentSchema.parse(msg)
        const s = send as (m: unknown) => void
        this.queue = this.queue
          .then(() => this.handle(m, s))
          .catch((e) => {
            // A refused map is asked for again, but not in a loop: the same map would be refused again.
            const now = this.mono()
            const again = now - this.refusedAt >= REFUSED_RESYNC_MS
            log.error(
              {
                err: (e as Error).message,
                ...(again ? {} : { nextResyncS: Math.ceil((this.refusedAt + REFUSED_RESYNC_MS - now) / 1000) }),
              },
              'hub map refused; the previous one stays in force',
            )
            if (!again) return
            this.refusedAt = now
            s({ t: 'resync' })
          })
      } catch (e) {
        log.warn({ hub: url, err: (e as Error).message }, 'hub connection failed')
        this.error = (e as Error).message
        ws.terminate()
      }
    })
    ws.on('error', (e) => {
      this.error = e.message
    })
    ws.on('close', () => {
      if (this.ws !== ws) return
      clearInterval(this.liveness)
      clearTimeout(this.reflectTimer)
      const wasUp = this.state === 'up'
      if (wasUp) log.warn({ hub: url }, 'lost the hub; tunnels, policies and routes stay as they are')
      if (this.state !== 'refused') this.state = 'unreachable'
      // Attempts that never came up (the hub down, refusing, or closing at once) keep the backoff growing,
      // so a fleet does not hammer a hub that is coming back. A connection that came up shows the hub
      // reachable: the next try is within 1 s after a minute up, within 2 s after a shorter one (a replica
      // that died: its agents move to another at once; one that flaps is not hammered either).
      if (wasUp) this.attempt = this.mono() - this.upSince >= 60_000 ? 0 : Math.min(this.attempt, 1)
      this.scheduleRetry()
    })
  }

  /** Pings the hub on `ws` and drops the connection when its pings go unanswered for silenceMs. */
  private watch(ws: WebSocket, url: string): void {
    clearInterval(this.liveness)
    const silence = this.o.silenceMs ?? HUB_SILENCE_MS
    let heard = this.mono()
    let heardWall = Date.now()
    ws.on('pong', () => {
      heard = this.mono()
      heardWall = Date.now()
    })
    this.liveness = setInterval(
      () => {
        if (this.ws !== ws) return
        // Silence on either clock. The monotonic one still counts when the wall clock is stepped back (a
        // silent hub is not kept for the step); the wall clock also counts a suspend, so a laptop that
        // wakes up reconnects at once. A step forward costs one reconnection of the hub link, no tunnel.
        const silent = Math.max(this.mono() - heard, Date.now() - heardWall)
        if (silent >= silence) {
          this.o.log.warn({ hub: url, silentS: Math.round(silent / 1000) }, 'the hub answers no pings: reconnecting')
          this.error = 'no answer to pings'
          ws.terminate()
          return
        }
        ws.ping()
      },
      Math.max(50, Math.floor(silence / 3)),
    )
    this.liveness.unref()
  }

  private scheduleRetry(): void {
    if (this.stopped) return
    const cap = this.o.maxBackoffMs ?? 60_000
    const ceiling = Math.min(cap, 1000 * 2 ** this.attempt)
    this.attempt++
    const hub = this.o.profile.hub
    if (hub && hub.urls.length > 1) this.urlIndex++
    // A refusal (disabled, removed) is retried slowly: the admin may enable the system again.
    const wait = this.state === 'refused' ? Math.max(ceiling, Math.min(cap, 30_000)) * Math.random() : ceiling * Math.random()
    this.retry = setTimeout(() => this.connect(), wait)
  }

  /**
   * One discovery round on `ws`, then again every reflectEveryMs while it lasts: reflect datagrams from
   * the WireGuard port to each of the hub's reflect ports, the answers (`reflected`) judged after 3 s; a
   * new class or address is logged and reported to the hub (which makes it the endpoint peers use).
   */
  private async discover(
    ws: WebSocket,
    url: string,
    reflect: { token: string; ports: number[] },
    send: (m: unknown) => void,
  ): Promise<void> {
    const sendUdp = this.o.sendUdp
    if (!sendUdp || this.ws !== ws) return
    const host = await hubAddresses([url.replace(/^ws/, 'http')])
    const ip = host.addrs[0]
    if (ip === undefined || this.ws !== ws) return
    const token = Buffer.from(reflect.token, 'hex')
    const round = ++this.reflectRound
    this.seen = new Map()
    const start = this.mono()
    const tick = async () => {
      if (this.ws !== ws || this.stopped || round !== this.reflectRound) return
      const elapsed = this.mono() - start
      if (elapsed < REFLECT_TRIES * 1000 && this.seen.size < reflect.ports.length) {
        reflect.ports.forEach((port, i) => {
          if (!this.seen.has(port)) sendUdp(reflectDatagram(token, round * 4 + i), ip, port)
        })
      }
      if (elapsed < REFLECT_JUDGE_MS && this.seen.size < reflect.ports.length) {
        this.reflectTimer = setTimeout(() => void tick(), 1000)
        return
      }
      const seen = reflect.ports.map((p) => this.seen.get(p))
      const local = (await this.o.localAddresses?.()) ?? []
      const nat = natClass(seen, local)
      const addr = seen[0] ?? seen.find((x) => x !== undefined)
      if (nat !== this.nat || addr !== this.reflexive) {
        this.o.log.info({ nat, reflexive: addr ?? '(none)', seen: seen.map((x) => x ?? '-').join(' ') }, 'NAT discovery')
        this.nat = nat
        this.reflexive = addr
        const port = this.o.profile.localPort || 51820
        const hosts = local
          .filter((a) => isPrivateRoute(`${a}/32`))
          .slice(0, 8)
          .map((a) => `${a}:${port}`)
        send({ t: 'nat', nat, ...(addr ? { addr } : {}), hosts })
      }
      this.reflectTimer = setTimeout(() => void this.discover(ws, url, reflect, send), this.o.reflectEveryMs ?? 25_000)
    }
    await tick()
  }

  /**
   * Relays WireGuard datagrams to a peer over the hub connection (dropped while not connected): the ones
   * handed over in one turn of the event loop go in one message, up to MAX_RELAY_BATCH bytes each.
   */
  sendDatagram(identity: string, data: Buffer): void {
    // One the hub would refuse (it closes a connection that sends a malformed message) goes no further.
    if (this.state !== 'up' || !this.sendRaw || !this.transportSend || data.length < 32 || data.length > MAX_RELAY_DATAGRAM) return
    let q = this.outbox.get(identity)
    if (q && q.bytes + 2 + data.length > MAX_RELAY_BATCH) {
      this.flushDatagrams(identity)
      q = undefined
    }
    if (!q) {
      q = { list: [], bytes: 0 }
      this.outbox.set(identity, q)
    }
    q.list.push(data)
    q.bytes += 2 + data.length
    if (!this.flushing) {
      this.flushing = true
      setImmediate(() => {
        this.flushing = false
        for (const id of [...this.outbox.keys()]) this.flushDatagrams(id)
      })
    }
  }

  private readonly outbox = new Map<string, { list: Buffer[]; bytes: number }>()
  private flushing = false

  private flushDatagrams(identity: string): void {
    const q = this.outbox.get(identity)
    this.outbox.delete(identity)
    if (!q?.list.length || !this.sendRaw || !this.transportSend) return
    this.sendRaw(sealDatagrams(this.transportSend, identity, q.list))
  }

  /** Asks the hub to introduce this system to a peer it has traffic for (no-op while not connected). */
  requestPath(identity: string): void {
    if (this.state === 'up') this.sendNow?.({ t: 'path', peer: identity })
  }

  private async handle(m: ReturnType<typeof hubToAgentSchema.parse>, send: (m: unknown) => void): Promise<void> {
    if (m.t === 'relay') {
      const host = m.host ?? (this.hubIp !== undefined ? intToIp(this.hubIp) : undefined)
      if (host !== undefined) this.o.onRelay?.(m.peer, `${host}:${m.port}`, m.token)
      return
    }
    if (m.t === 'punch') {
      this.o.onPunch?.(m.peer, m.candidates, m.hosts)
      return
    }
    if (m.t === 'relay-tcp') {
      this.o.onRelayTcp?.(m.peer)
      return
    }
    if (m.t === 'reflected') {
      if (m.seq >>> 2 === this.reflectRound) this.seen.set(m.port, m.addr)
      return
    }
    if (m.t === 'state') {
      this.systemState = m.state
      this.o.log.warn({ state: m.state }, `the hub says this system is ${m.state}`)
      if (m.state === 'removed' || m.state === 'disabled') {
        // Dropped from every peer: it keeps nothing from the hub either.
        const empty: HubMap = {
          Self: {
            ...(this.map?.Self ?? { Identity: '', VirtualAddress: '', Tags: [], ProvidesRoutes: [] }),
            State: 'disabled',
            Tags: [],
            ProvidesRoutes: [],
          },
          Peers: [],
          Policies: [],
          AvailableRoutes: {},
        }
        if (this.map) await this.accept(empty, this.rev, send)
      }
      return
    }
    if (m.t === 'map') {
      if (mapHash(m.map) !== m.hash) throw new Error('the map does not match its hash')
      await this.accept(m.map, m.rev, send)
      return
    }
    if (!this.map) {
      send({ t: 'resync' })
      return
    }
    const next = applyDelta(this.map, m.delta)
    if (mapHash(next) !== m.hash) {
      send({ t: 'resync' })
      return
    }
    if (
      !m.delta.Upsert.length &&
      !m.delta.Remove.length &&
      !m.delta.Patch?.length &&
      !m.delta.Self &&
      !m.delta.Policies &&
      !m.delta.AvailableRoutes
    ) {
      this.rev = m.rev
      this.receivedAt = Date.now()
      send({ t: 'ack', rev: m.rev })
      return
    }
    await this.accept(next, m.rev, send)
  }

  private async accept(map: HubMap, rev: number, send: (m: unknown) => void): Promise<void> {
    const enforced = await this.o.apply(map)
    this.map = map
    this.hash = mapHash(map)
    this.rev = rev
    this.receivedAt = Date.now()
    this.systemState = map.Self.State
    try {
      writeFileAtomic(
        this.o.cacheFile,
        JSON.stringify({
          hubKey: this.o.profile.hub?.publicKey.toString('base64'),
          rev,
          hash: this.hash,
          receivedAt: new Date().toISOString(),
          map,
        }),
      )
    } catch (e) {
      this.o.log.warn({ file: this.o.cacheFile, err: (e as Error).message }, 'could not cache the hub map')
    }
    if (enforced) send({ t: 'ack', rev })
  }
}
