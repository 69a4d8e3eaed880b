/**
 * The hub server: an unprivileged process with no TUN. Agents connect over one WebSocket each and
 * authenticate with their WireGuard static key in a Noise_IK handshake (src/hubproto/noise-ik.ts); the
 * hub answers with the system's state and then sends its map, followed by deltas. Admin changes land
 * in the database (src/hub/admin.ts, from the CLI or later the API); the hub follows the database's
 * revision every 100 ms, rebuilds its model and sends each connected agent only what changed for it.
 *
 * Before the handshake, nothing costs more than a token: 20 handshakes/s per source (IPv6 per /64; burst
 * 40), 1,000/s in all with 200/s kept for sources that completed one (HandshakeLimiter), 32 unauthenticated
 * sockets per source and 512 in all (PreauthSockets), 10 s from the connection to a finished handshake.
 * No agent message, before or after, is over MAX_AGENT_MESSAGE (32 KiB).
 */
import fs from 'node:fs'
import http from 'node:http'
import type net from 'node:net'
import path from 'node:path'
import { EventEmitter } from 'node:events'
import dgram from 'node:dgram'
import crypto from 'node:crypto'
import { WebSocketServer, type WebSocket } from 'ws'
import { EnclaveError } from '../errors.js'
import { intToIp, parseIpv4 } from '../common/ipv4.js'
import { endpointProblem } from '../config/schema.js'
import { writeFileAtomic } from '../common/atomic-file.js'
import { XAEAD, XAEAD_OPEN, generateKeyPair, keyPairFromPrivate, randomBytes } from '../protocol/primitives.js'
import { respond, type Transport } from '../hubproto/noise-ik.js'
import {
  type HubDelta,
  type HubMap,
  type HubPeer,
  addDigest,
  canonical,
  diffMaps,
  mapHash,
  mapHashWith,
  peersDigest,
} from '../hubproto/map.js'
import {
  HUB_PATH,
  HUB_PROTOCOL_VERSION,
  MAX_AGENT_MESSAGE,
  MAX_PREAUTH,
  MessageReader,
  MessageTooLarge,
  T_MSG1,
  T_MSG2,
  agentToHubSchema,
  helloSchema,
  type RelayedDatagram,
  sealDatagrams,
  sealMessage,
} from '../hubproto/wire.js'
import { HubAdmin, loadModel } from './admin.js'
import { REFLECT_TOKEN_BYTES, parseReflect } from '../hubproto/reflect.js'
import { type EntryCache, HubModel } from './model.js'
import { type Engine, HubStore, isDatabaseDown } from './store.js'
import { Replicas } from './replicas.js'
import { sourceKey } from './source-key.js'

export { sourceKey }
import { type RelayPairStats, UdpRelay } from './relay.js'
import { FastRelay } from './fast-relay.js'
import { SESSION_IDLE_MS } from './auth.js'
import { DEFAULT_PORTAL_LISTEN, type PortalConfig, PortalServer } from './portal/server.js'
import { type LiveInfo, liveInfo } from './portal/live.js'
import type { AgentLogger as Logger } from '../log/logger.js'

export const HUB_CONFIG = 'hub.json'
export const HUB_KEY = 'hub.key'
export const HUB_DB = 'hub.db'
/** A PostgreSQL hub's key-encryption key: the hub's private key is in the database, sealed with it. */
export const HUB_KEK = 'hub.kek'
const SEAL_AD = Buffer.from('enclave hub key v1')

export interface HubConfig {
  Listen: string
  /**
   * The two UDP ports agents reflect from their WireGuard port (endpoint discovery, NAT class); default
   * the Listen port and the next one. [] turns discovery off.
   */
  ReflectPorts?: number[]
  /**
   * The UDP relay for systems that cannot reach each other directly (issue 20): on by default, on
   * ephemeral ports of the Listen address (or Ports, "first-last", for a firewall), with a rate per pair
   * and for the whole hub in Mbit/s.
   */
  Relay?: { Enabled?: boolean; Ports?: string; PairMbit?: number; TotalMbit?: number }
  /** The database: SQLite in the data directory (the default), or PostgreSQL for several replicas. */
  Store?: { Engine: Engine; Url?: string }
  /**
   * Replicas on PostgreSQL: how often each says it lives (HeartbeatMs, default 2,000) and how long after
   * its last heartbeat one is taken for dead (DeadAfterMs, default 10,000; at least 3 heartbeats). A
   * shorter DeadAfterMs marks a dead replica's systems offline sooner, at the cost of more database writes.
   */
  Replicas?: { HeartbeatMs?: number; DeadAfterMs?: number }
  /** The URL agents enrol with, for the portal's join command (default http://<Listen>). */
  PublicUrl?: string
  /** The portal and admin API (issue 21): 127.0.0.1:8444 unless Listen says otherwise ("off": none). */
  Portal?: PortalConfig
}

export function hubPaths(dataDir: string) {
  return {
    config: path.join(dataDir, HUB_CONFIG),
    key: path.join(dataDir, HUB_KEY),
    db: path.join(dataDir, HUB_DB),
    kek: path.join(dataDir, HUB_KEK),
  }
}

/**
 * `enclave hub init`: key pair, database, configuration. Refuses to overwrite an existing hub. With
 * `postgresUrl` the database is PostgreSQL (hub.json `Store`); a database that already holds a hub is
 * refused too.
 */
export async function initHub(
  dataDir: string,
  listen: string,
  o: { postgresUrl?: string; join?: boolean; kek?: string; urlInConfig?: boolean } = {},
): Promise<{ publicKey: string; listen: string; dataDir: string; store: Engine; replica: boolean }> {
  parseListen(listen)
  const p = hubPaths(dataDir)
  if (fs.existsSync(p.key) || fs.existsSync(p.db) || fs.existsSync(p.kek))
    throw new EnclaveError('EEXIST', `a hub already exists in ${dataDir} (its key and database are kept); use another --data-dir`)
  if (o.join && !o.postgresUrl) throw new EnclaveError('EUSAGE', 'a replica (--join) shares a PostgreSQL database: give --postgres-url', 2)
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  fs.chmodSync(dataDir, 0o700)
  const store = await HubStore.open(o.postgresUrl ? { postgresUrl: o.postgresUrl } : { file: p.db, create: true })
  try {
    // A URL given in $ENCLAVE_HUB_POSTGRES_URL (urlInConfig false) stays out of hub.json: it may hold a password.
    const cfg: HubConfig = {
      Listen: listen,
      ...(o.postgresUrl ? { Store: { Engine: 'postgres', ...(o.urlInConfig === false ? {} : { Url: o.postgresUrl }) } } : {}),
    }
    const exists = (await store.getMeta('rev')) !== undefined
    if (o.join) {
      // Another replica of an existing hub: the same database and the key-encryption key of the first.
      if (!exists)
        throw new EnclaveError(
          'ENOHUB',
          `the database ${store.file} holds no hub yet: run \`enclave hub init --store postgres\` once first`,
        )
      const kek = parseKek(o.kek ?? process.env.ENCLAVE_HUB_KEK ?? '', '--kek')
      const kp = await unsealHubKey(store, kek)
      writeFileAtomic(p.kek, `${kek.toString('base64')}\n`)
      writeFileAtomic(p.config, `${JSON.stringify(cfg, null, 2)}\n`)
      return { publicKey: kp.publicKey.toString('base64'), listen, dataDir, store: store.engine, replica: true }
    }
    if (exists)
      throw new EnclaveError(
        'EEXIST',
        `the database ${store.file} already holds a hub: give each hub its own database, or add a replica with --join`,
      )
    const kp = generateKeyPair()
    if (store.engine === 'postgres') {
      // Every replica presents the same key: it lives in the database, sealed (XChaCha20-Poly1305) with a
      // key-encryption key that only the replicas' data directories (or $ENCLAVE_HUB_KEK) hold.
      const kek = randomBytes(32)
      const nonce = randomBytes(24)
      await store.setMeta('hub_key', Buffer.concat([nonce, XAEAD(kek, nonce, kp.privateKey, SEAL_AD)]).toString('base64'))
      await store.setMeta('hub_public_key', kp.publicKey.toString('base64'))
      writeFileAtomic(p.kek, `${kek.toString('base64')}\n`)
    } else writeFileAtomic(p.key, `${kp.privateKey.toString('base64')}\n`)
    writeFileAtomic(p.config, `${JSON.stringify(cfg, null, 2)}\n`)
    await store.setMeta('rev', '0')
    await store.setMeta('epoch', generateKeyPair().publicKey.toString('hex').slice(0, 16))
    return { publicKey: kp.publicKey.toString('base64'), listen, dataDir, store: store.engine, replica: false }
  } finally {
    await store.close()
  }
}

function parseKek(text: string, where: string): Buffer {
  const k = Buffer.from(text.trim(), 'base64')
  if (k.length !== 32) throw new EnclaveError('EKEY', `${where}: not a base64 32-byte key-encryption key (the first replica's hub.kek)`)
  return k
}

async function unsealHubKey(store: HubStore, kek: Buffer): Promise<{ privateKey: Buffer; publicKey: Buffer }> {
  const sealed = Buffer.from((await store.getMeta('hub_key')) ?? '', 'base64')
  const key = sealed.length === 24 + 48 ? XAEAD_OPEN(kek, sealed.subarray(0, 24), sealed.subarray(24), SEAL_AD) : null
  if (!key)
    throw new EnclaveError(
      'EKEY',
      `the hub key in ${store.file} does not open with this key-encryption key (is it the first replica's hub.kek?)`,
    )
  return keyPairFromPrivate(key)
}

/** The hub's key pair: hub.key (SQLite), or sealed in PostgreSQL and opened with hub.kek or $ENCLAVE_HUB_KEK. */
export async function loadHubKey(dataDir: string, cfg: HubConfig, store: HubStore): Promise<{ privateKey: Buffer; publicKey: Buffer }> {
  if (cfg.Store?.Engine !== 'postgres') return readHubKey(dataDir)
  const file = hubPaths(dataDir).kek
  let text = process.env.ENCLAVE_HUB_KEK ?? ''
  if (!text)
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (e) {
      throw new EnclaveError('EKEY', `cannot read ${file} (or set ENCLAVE_HUB_KEK): ${(e as Error).message}`)
    }
  return unsealHubKey(store, parseKek(text, process.env.ENCLAVE_HUB_KEK ? 'ENCLAVE_HUB_KEK' : file))
}

/** hub.json's Replicas timers, checked (the leader retries its lock as often as it beats). */
export function replicaTimersOf(cfg: HubConfig, file = HUB_CONFIG): { heartbeatMs?: number; deadAfterMs?: number; leaderTryMs?: number } {
  const r = cfg.Replicas
  if (!r) return {}
  const hb = r.HeartbeatMs ?? 2000
  const dead = r.DeadAfterMs ?? 10_000
  if (!Number.isInteger(hb) || hb < 200 || hb > 60_000)
    throw new EnclaveError('ECONFIG', `${file}: $.Replicas.HeartbeatMs: a whole number of ms from 200 to 60,000`)
  if (!Number.isInteger(dead) || dead < 3 * hb)
    throw new EnclaveError('ECONFIG', `${file}: $.Replicas.DeadAfterMs: at least three heartbeats (${3 * hb} ms)`)
  return { heartbeatMs: hb, deadAfterMs: dead, leaderTryMs: hb }
}

/** hub.json, read and checked enough to start (the file name in every error). */
export function readHubConfig(dataDir: string): HubConfig {
  const file = hubPaths(dataDir).config
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new EnclaveError('ENOHUB', `no hub in ${dataDir} (${file} is missing): run \`enclave hub init\` first`)
    throw new EnclaveError('EACCES', `cannot read ${file}: ${(e as Error).message}`)
  }
  let cfg: HubConfig
  try {
    cfg = JSON.parse(text)
  } catch (e) {
    throw new EnclaveError('ECONFIG', `${file}: not JSON (${(e as Error).message})`)
  }
  if (!cfg || typeof cfg !== 'object' || typeof cfg.Listen !== 'string')
    throw new EnclaveError('ECONFIG', `${file}: $.Listen: must be "address:port"`)
  replicaTimersOf(cfg, file)
  const st = cfg.Store
  if (st !== undefined) {
    if (typeof st !== 'object' || (st.Engine !== 'sqlite' && st.Engine !== 'postgres'))
      throw new EnclaveError('ECONFIG', `${file}: $.Store.Engine: must be "sqlite" or "postgres"`)
    if (st.Engine === 'postgres' && typeof st.Url !== 'string' && !process.env.ENCLAVE_HUB_POSTGRES_URL)
      throw new EnclaveError('ECONFIG', `${file}: $.Store.Url: a postgres:// URL (or set ENCLAVE_HUB_POSTGRES_URL)`)
  }
  return cfg
}

/** The hub's store as hub.json says: its SQLite file, or PostgreSQL ($ENCLAVE_HUB_POSTGRES_URL overrides the URL). */
export async function openHubStore(dataDir: string, cfg: HubConfig = readHubConfig(dataDir)): Promise<HubStore> {
  if (cfg.Store?.Engine === 'postgres')
    return HubStore.open({ postgresUrl: process.env.ENCLAVE_HUB_POSTGRES_URL || (cfg.Store.Url as string) })
  return HubStore.open({ file: hubPaths(dataDir).db })
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):(\d{1,5})$/.exec(s.trim())
  const port = m ? Number(m[2]) : 0
  if (!m || port < 0 || port > 65535) throw new EnclaveError('EUSAGE', `--listen "${s}": use address:port, e.g. 0.0.0.0:8443`, 2)
  return { host: m[1].replace(/^\[|\]$/g, ''), port }
}

export function readHubKey(dataDir: string): { privateKey: Buffer; publicKey: Buffer } {
  const file = hubPaths(dataDir).key
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT')
      throw new EnclaveError('ENOHUB', `no hub in ${dataDir}: run \`enclave hub init --data-dir ${dataDir} --listen <ip:port>\``)
    throw new EnclaveError(code === 'EACCES' ? 'EACCES' : 'EIO', `cannot read ${file}: ${(e as Error).message}`)
  }
  const key = Buffer.from(text.trim(), 'base64')
  if (key.length !== 32) throw new EnclaveError('EKEY', `${file}: not a base64 32-byte key`)
  return keyPairFromPrivate(key)
}

interface Conn {
  ws: WebSocket
  systemId: number
  identity: string
  transport: Transport
  sent: HubMap | null
  /**
   * The peers the agent holds, by public key, kept up to date instead of rebuilt at every change (after a
   * change that reached only some peers, `sent.Peers` is stale: this index is the truth), with the sum of
   * their digests for the map hash, and the tags of others its map shows.
   */
  sentIndex: Map<string, HubPeer>
  sentSum: Uint32Array
  mentioned: Set<string>
  sentRev: number
  ackRev: number
  state: string
  /** Answered the last ping (or sent anything since): a connection that did not by the next ping is dropped. */
  alive: boolean
  /** Endpoint discovery: this connection's token (hex) and the reflect answers in the current window. */
  reflectToken: string
  reflectCount: number
  reflectWindow: number
  /** The agent named its endpoint itself (--advertise-endpoint): discovery never replaces it. */
  endpointPinned: boolean
  nat?: string
  /** Addresses the reflect ports saw for this connection (the only ones a NAT report may make its endpoint). */
  reflected: Set<string>
  /** When the last resync was answered, and the one deferred to RESYNC_MS after it. */
  resyncAt: number
  resyncTimer?: NodeJS.Timeout
  /** Its reflexive address (a NAT report the reflect ports confirmed) and host addresses (issue 20). */
  reflexive?: string
  hosts: string[]
  /** When each peer was last introduced to it. */
  introduced: Map<number, number>
  /** Its relay-tcp bucket (bytes) and when it was last filled. */
  relayLevel: number
  relayAt: number
}

/** The hub's relay as the hub uses it (src/hub/relay.ts). */
export interface RelayLike {
  allocate(
    pairKey: string,
    a: string,
    b: string,
  ): Promise<Record<string, { port: number; token: string }>> | Record<string, { port: number; token: string }>
  release(pairKey: string): void
  close(): Promise<void> | void
}

/** What one connection may relay over TCP (relay-tcp), in bytes a second (400 Mbit/s). */
export const RELAY_TCP_BYTES_PER_S = 50_000_000

/** A pair is introduced (relay, punch) at most once per this, whoever asks. */
export const INTRODUCE_EVERY_MS = 5000

/** Routes one system may offer (ProvidesRoutes advertised in its hello); more are ignored. */
export const MAX_ADVERTISED = 256

/** An agent's full-map requests (resync) are answered at most once per this; more are coalesced into one. */
export const RESYNC_MS = 5000

/**
 * The endpoint other agents may be given for a system that names `s` itself: an IPv4 literal or a host
 * name with a port, never a loopback, unspecified, multicast or broadcast address nor one of the overlay
 * (100.64.0.0/10): viewers would aim their handshakes at themselves or at the tunnel. Undefined if unusable.
 */
export function claimedEndpoint(s: string): string | undefined {
  if (endpointProblem(s)) return undefined
  const host = s.slice(0, s.lastIndexOf(':')).toLowerCase()
  if (host === 'localhost' || host.endsWith('.localhost')) return undefined
  const ip = parseIpv4(host)
  if (typeof ip === 'string') return /^\d+(\.\d+)*$/.test(host) ? undefined : s
  const a = ip >>> 24
  if (a === 0 || a === 127 || a >= 224 || (ip & 0xffc00000) === ((100 << 24) | (64 << 16))) return undefined
  return s
}

/** The endpoint seen from the connection's source address: IPv4 (or IPv4-mapped) only, else none. */
export function sourceEndpoint(source: string, port: number): string | undefined {
  const v4 = source.replace(/^::ffff:/i, '')
  return typeof parseIpv4(v4) === 'number' ? `${v4}:${port}` : undefined
}

/** Per source: at most 32 unauthenticated sockets; 512 in all, and 128 more for sources known to the limiter. */
export const PREAUTH_PER_SOURCE = 32
export const PREAUTH_TOTAL = 512
export const PREAUTH_RESERVED = 128

/** Unauthenticated sockets per source and in all (counted from the TCP connection to the handshake). */
class PreauthSockets {
  private readonly perSource = new Map<string, number>()
  private total = 0

  open(key: string, known: boolean): boolean {
    const n = this.perSource.get(key) ?? 0
    if (n >= PREAUTH_PER_SOURCE || this.total >= PREAUTH_TOTAL + (known ? PREAUTH_RESERVED : 0)) return false
    this.perSource.set(key, n + 1)
    this.total++
    return true
  }

  close(key: string): void {
    const n = this.perSource.get(key) ?? 0
    if (n <= 1) this.perSource.delete(key)
    else this.perSource.set(key, n - 1)
    this.total--
  }
}

/** A token bucket: `rate` per second, at most `burst`. */
class Bucket {
  tokens: number
  constructor(
    readonly rate: number,
    readonly burst: number,
    public at: number,
  ) {
    this.tokens = burst
  }

  refill(now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, now - this.at) / 1000) * this.rate)
    this.at = now
  }
}

/**
 * Handshakes before any work: 20/s per source (sourceKey: IPv6 per /64; burst 40), and 1,000/s in all, of
 * which 200/s are kept for sources that completed a handshake recently (the last 100,000 such sources,
 * in memory): a flood from new sources leaves systems that were connected a way back in. Both maps
 * forget the source touched longest ago first (a bucket untouched for 2 s is full, as a new one).
 */
export class HandshakeLimiter {
  static readonly SOURCES = 100_000
  private readonly perSource = new Map<string, Bucket>()
  private readonly known = new Map<string, number>()
  private readonly general: Bucket
  private readonly reserved: Bucket

  constructor(now = Date.now()) {
    this.general = new Bucket(800, 800, now)
    this.reserved = new Bucket(200, 200, now)
  }

  allow(source: string, now = Date.now()): boolean {
    const key = sourceKey(source)
    let b = this.perSource.get(key)
    if (b) this.perSource.delete(key)
    else b = new Bucket(20, 40, now)
    this.perSource.set(key, b)
    forgetOldest(this.perSource)
    b.refill(now)
    if (b.tokens < 1) return false
    this.general.refill(now)
    this.reserved.refill(now)
    if (this.isKnown(key) && this.reserved.tokens >= 1) this.reserved.tokens--
    else if (this.general.tokens >= 1) this.general.tokens--
    else return false
    b.tokens--
    return true
  }

  /** A source that completed a handshake (sourceKey or an address). */
  authenticated(source: string, now = Date.now()): void {
    const key = sourceKey(source)
    this.known.delete(key)
    this.known.set(key, now)
    forgetOldest(this.known)
  }

  isKnown(key: string): boolean {
    return this.known.has(key)
  }
}

/** Keeps a map (in order of last touch) at HandshakeLimiter.SOURCES entries: the oldest go first. */
function forgetOldest(m: Map<string, unknown>): void {
  while (m.size > HandshakeLimiter.SOURCES) {
    const first = m.keys().next().value as string
    m.delete(first)
  }
}

export interface HubServerOptions {
  dataDir: string
  /** Overrides hub.json's Listen (tests: 127.0.0.1:0). */
  listen?: string
  log: Logger
  /** How often the database revision is checked (ms). */
  followMs?: number
  /** Ping interval (ms; default 25 s): a connection that did not answer the previous ping is dropped. */
  pingMs?: number
  /** Overrides hub.json's ReflectPorts (tests: [0, 0] for two free ports). */
  reflectPorts?: number[]
  /** The UDP relay (issue 20); none: peers that cannot go direct have no path. */
  relay?: RelayLike
  /** Overrides hub.json's Portal.Listen (tests: 127.0.0.1:0; "off": no portal). */
  portal?: string
  /** Replica timers (tests): heartbeat, dead-after, leader retry and work intervals (ms). */
  replicaTimers?: { heartbeatMs?: number; deadAfterMs?: number; leaderTryMs?: number; leaderEveryMs?: number }
}

export class HubServer extends EventEmitter {
  private store!: HubStore
  private admin!: HubAdmin
  private model!: HubModel
  /** The revision every connected agent was sent, and the revision of the model in memory. */
  private rev = 0
  private modelRev = 0
  private server!: http.Server
  private wss!: WebSocketServer
  private readonly conns = new Map<number, Conn>()
  /** Endpoint discovery: the UDP sockets, the ports they got, and the connections by token. */
  private reflectSockets: dgram.Socket[] = []
  reflectPorts: number[] = []
  private readonly byToken = new Map<string, Conn>()
  private readonly limiter = new HandshakeLimiter()
  private readonly preauth = new PreauthSockets()
  /** Sockets not yet authenticated: how to release their count, and when they connected. */
  private readonly pending = new WeakMap<net.Socket, { release: () => void; at: number }>()
  private follow?: NodeJS.Timeout
  private ping?: NodeJS.Timeout
  private following = false
  private key!: { privateKey: Buffer; publicKey: Buffer }
  address = ''
  port = 0

  constructor(private readonly opts: HubServerOptions) {
    super()
  }

  get publicKey(): string {
    return this.key.publicKey.toString('base64')
  }

  get revision(): number {
    return this.rev
  }

  /** Connected systems by identity, with the revision each acknowledged. */
  connected(): Array<{ identity: string; ackRev: number; sentRev: number }> {
    return [...this.conns.values()].map((c) => ({ identity: c.identity, ackRev: c.ackRev, sentRev: c.sentRev }))
  }

  async start(): Promise<void> {
    const { dataDir, log } = this.opts
    const cfg = readHubConfig(dataDir)
    const { host, port } = parseListen(this.opts.listen ?? cfg.Listen)
    this.store = await openHubStore(dataDir, cfg)
    this.key = await loadHubKey(dataDir, cfg, this.store)
    this.admin = new HubAdmin(this.store, 'hub')
    this.rev = await this.store.revision()
    this.modelRev = this.rev
    this.model = await loadModel(this.store.db, this.entries)
    // Node checks headersTimeout and requestTimeout only every connectionsCheckingInterval (30 s by default):
    // every second here, so an unfinished request is closed 10 to 11 s after it began.
    this.server = http.createServer({ connectionsCheckingInterval: 1000, headersTimeout: 10_000, requestTimeout: 10_000 }, (req, res) => {
      if (req.url === '/enclave/v1/key') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ publicKey: this.publicKey }))
        return
      }
      res.writeHead(404).end()
    })
    // Every socket counts as unauthenticated from its first byte until its handshake completes or it closes:
    // at most PREAUTH_PER_SOURCE per source and PREAUTH_TOTAL in all; more are closed at once.
    this.server.on('connection', (sock: net.Socket) => {
      const key = sourceKey(sock.remoteAddress ?? '')
      if (!this.preauth.open(key, this.limiter.isKnown(key))) {
        sock.destroy()
        return
      }
      let counted = true
      const release = () => {
        if (!counted) return
        counted = false
        this.preauth.close(key)
      }
      sock.once('close', release)
      this.pending.set(sock, { release, at: Date.now() })
    })
    // Agents send only small messages (MAX_AGENT_MESSAGE): ws refuses a larger frame at its header, closing
    // with 1009, before or after the handshake.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_AGENT_MESSAGE })
    this.server.on('upgrade', (req, socket, head) => {
      if (req.url !== HUB_PATH) {
        socket.destroy()
        return
      }
      if (!this.limiter.allow(req.socket.remoteAddress ?? '')) {
        socket.end('HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n\r\n')
        return
      }
      const p = this.pending.get(socket as net.Socket)
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req.socket.remoteAddress ?? '', p))
    })
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => resolve())
    })
    const a = this.server.address()
    if (a && typeof a === 'object') {
      this.address = a.address
      this.port = a.port
    }
    await this.startReflect(host, this.opts.reflectPorts ?? cfg.ReflectPorts ?? (port ? [port, port + 1] : [0, 0]))
    this.relay = this.opts.relay ?? (cfg.Relay?.Enabled === false ? undefined : this.makeRelay(host, cfg.Relay))
    this.publicUrl = cfg.PublicUrl
    const portalListen = this.opts.portal ?? cfg.Portal?.Listen ?? DEFAULT_PORTAL_LISTEN
    if (portalListen !== 'off') {
      const pl = parseListen(portalListen)
      this.portal = new PortalServer({
        store: this.store,
        log,
        host: pl.host,
        port: pl.port,
        trustProxy: cfg.Portal?.TrustProxy,
        hosts: cfg.Portal?.Hosts,
        live: () => this.live(),
        hub: () => ({
          url: cfg.PublicUrl ?? `http://${this.address.includes(':') ? `[${this.address}]` : this.address}:${this.port}`,
          publicKey: this.publicKey,
        }),
      })
      await this.portal.start()
    }
    this.replicas = new Replicas({
      store: this.store,
      log,
      postgresUrl: cfg.Store?.Engine === 'postgres' ? process.env.ENCLAVE_HUB_POSTGRES_URL || cfg.Store.Url : undefined,
      addr: `${this.address}:${this.port}`,
      leaderWork: () => this.leaderWork(),
      ...replicaTimersOf(cfg),
      ...this.opts.replicaTimers,
    })
    this.replicas.on('revision', () => void this.followStore())
    this.replicas.on('message', (m) => void this.replicaMessage(m).catch(() => undefined))
    await this.replicas.start()
    this.follow = setInterval(() => void this.followStore(), this.opts.followMs ?? 100)
    // A connection that answered nothing since the last ping (25 s) is gone: dropped, so that the
    // system reads as offline and its resources are freed.
    this.ping = setInterval(() => {
      for (const c of this.conns.values()) {
        if (!c.alive) {
          log.info({ identity: c.identity }, 'system answers no pings: connection dropped')
          c.ws.terminate()
          continue
        }
        c.alive = false
        c.ws.ping()
      }
    }, this.opts.pingMs ?? 25_000)
    log.info({ listen: `${this.address}:${this.port}`, publicKey: this.publicKey, rev: this.rev }, 'hub listening')
  }

  private relay?: RelayLike

  private makeRelay(host: string, c: HubConfig['Relay']): RelayLike {
    const m = /^(\d+)-(\d+)$/.exec(c?.Ports ?? '')
    const bytes = (mbit: number | undefined) => (mbit ? (mbit * 1_000_000) / 8 : undefined)
    const o = {
      log: this.opts.log,
      host: host === 'localhost' ? '127.0.0.1' : host,
      ports: m ? { first: Number(m[1]), last: Number(m[2]) } : (0 as const),
      pairBytesPerSec: bytes(c?.PairMbit),
      hubBytesPerSec: bytes(c?.TotalMbit),
      // Packets a second follow a raised byte rate (600-byte packets on average), never below the defaults.
      pairPacketsPerSec: c?.PairMbit ? Math.max(200_000, (c.PairMbit * 1_000_000) / 8 / 600) : undefined,
      hubPacketsPerSec: c?.TotalMbit ? Math.max(800_000, (c.TotalMbit * 1_000_000) / 8 / 600) : undefined,
    }
    // The batched relay (addon sockets in a worker); the dgram one where the worker cannot start.
    let relay: FastRelay | UdpRelay
    try {
      relay = new FastRelay(o)
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message }, 'batched relay unavailable: using the single-datagram relay')
      relay = new UdpRelay(o)
    }
    relay.on('released', (st: RelayPairStats, why: string) => {
      this.pairs.delete(st.pairKey)
      this.opts.log.info(
        { pair: st.pairKey, why, packets: st.packets[0] + st.packets[1], bytes: st.bytes[0] + st.bytes[1] },
        'relay pair released',
      )
    })
    return relay
  }

  /** The relay's counters (status, metrics), or undefined without one. */
  relayStats(): { pairs: number; packets: number; bytes: number } | undefined {
    return this.relay instanceof UdpRelay || this.relay instanceof FastRelay ? this.relay.stats() : undefined
  }

  /** Binds the reflect ports (a port of 0 gets a free one, for tests); a failure turns discovery off, logged. */
  private async startReflect(host: string, ports: number[]): Promise<void> {
    const log = this.opts.log
    for (const p of ports.slice(0, 2)) {
      const sock = dgram.createSocket('udp4')
      try {
        await new Promise<void>((resolve, reject) => {
          sock.once('error', reject)
          sock.bind(p, host === 'localhost' ? '127.0.0.1' : host, () => resolve())
        })
      } catch (e) {
        log.warn({ port: p, err: (e as Error).message }, 'reflect port unavailable: agents will not learn their NAT mapping')
        sock.close()
        for (const s of this.reflectSockets) s.close()
        this.reflectSockets = []
        this.reflectPorts = []
        return
      }
      const bound = sock.address().port
      sock.on('message', (msg, rinfo) => this.reflect(msg, rinfo, bound))
      sock.on('error', () => undefined)
      this.reflectSockets.push(sock)
      this.reflectPorts.push(bound)
    }
  }

  /** A reflect datagram: answered over its connection with the source seen, at most 20 per 10 s each. */
  private reflect(msg: Buffer, rinfo: dgram.RemoteInfo, port: number): void {
    const r = parseReflect(msg)
    if (!r || rinfo.family !== 'IPv4') return
    const conn = this.byToken.get(r.token)
    if (!conn) return
    const now = Date.now()
    if (now - conn.reflectWindow > 10_000) {
      conn.reflectWindow = now
      conn.reflectCount = 0
    }
    if (++conn.reflectCount > 20) return
    const addr = `${rinfo.address}:${rinfo.port}`
    if (conn.reflected.size >= 8) conn.reflected.clear()
    conn.reflected.add(addr)
    this.send(conn, { t: 'reflected', seq: r.seq, port, addr })
  }

  /**
   * The agent's discovery result. Behind no NAT or an endpoint-independent one, the reflexive address is
   * where peers reach its WireGuard port: it becomes the system's endpoint (a systems-only change, sent
   * as deltas to those who see it). Behind a hard NAT the address is per destination: left alone.
   */
  private async natReport(conn: Conn, nat: string, addr: string | undefined): Promise<void> {
    if (conn.nat !== nat) this.opts.log.info({ identity: conn.identity, nat, addr }, 'system NAT class')
    conn.nat = nat
    if (!addr || conn.endpointPinned || (nat !== 'none' && nat !== 'easy')) return
    // Only an address the reflect ports saw for this connection: the agent cannot name another host.
    if (!conn.reflected.has(addr)) {
      this.opts.log.debug({ identity: conn.identity, addr }, 'NAT report names an address the hub did not see: ignored')
      return
    }
    conn.reflexive = addr
    try {
      await this.admin.setEndpoint(conn.systemId, addr)
    } catch (e) {
      // The database is down: the session goes on (introductions use conn.reflexive); the endpoint is
      // recorded at the system's next connection or report.
      if (!isDatabaseDown(e)) throw e
      this.opts.log.warn(
        { identity: conn.identity, addr, err: (e as Error).message },
        'NAT report not recorded: the database is unreachable',
      )
    }
  }

  /** The portal and admin API, when on. */
  portal?: PortalServer

  /** What the portal shows of connected systems: online, NAT class, relay pairs. */
  live(): LiveInfo {
    const ident = (id: number) => this.model.systems.get(id)?.identity ?? String(id)
    return liveInfo(
      [
        ...[...this.conns.values()].map((c) => ({ identity: c.identity, nat: c.nat })),
        ...(this.replicas?.remoteSystems() ?? []).map((id) => ({ identity: ident(id), nat: undefined })),
      ],
      [...this.pairs.values()].map(([a, b]) => [ident(a), ident(b)] as [string, string]),
    )
  }

  /** Presence, the lead and messages between replicas (src/hub/replicas.ts). */
  replicas?: Replicas

  /** This replica leads (periodic work); with SQLite, always. */
  get leader(): boolean {
    return !!this.replicas?.leader
  }

  /** Ephemeral systems kept while disconnected (Enclave's default for ephemeral keys). */
  static readonly EPHEMERAL_KEEP_MS = 30 * 60_000

  /**
   * The leader's periodic work: ephemeral systems disconnected for longer than EPHEMERAL_KEEP_MS are
   * removed; sessions idle past their limit are deleted.
   */
  async leaderWork(now = Date.now()): Promise<void> {
    const online = new Set<number>([...this.conns.keys(), ...(this.replicas?.remoteSystems() ?? [])])
    const cutoff = new Date(now - HubServer.EPHEMERAL_KEEP_MS).toISOString()
    const stale = (
      await this.store.db.selectFrom('systems').select(['id', 'identity', 'last_seen_at']).where('ephemeral', '=', 1).execute()
    ).filter((r) => !online.has(r.id) && (r.last_seen_at ?? '') < cutoff)
    if (stale.length) {
      await new HubAdmin(this.store, 'hub (ephemeral clean-up)').setState(
        'remove',
        stale.map((r) => r.identity),
      )
      this.opts.log.info({ systems: stale.map((r) => r.identity) }, 'ephemeral systems removed after 30 min disconnected')
    }
    await this.store.db
      .deleteFrom('sessions')
      .where('seen_at', '<', new Date(now - SESSION_IDLE_MS).toISOString())
      .execute()
    this.emit('leader-work')
  }

  async stop(): Promise<void> {
    await this.replicas?.stop()
    await this.portal?.stop()
    await this.relay?.close()
    for (const s of this.reflectSockets) s.close()
    this.reflectSockets = []
    clearInterval(this.follow)
    clearInterval(this.ping)
    for (const c of this.conns.values()) c.ws.terminate()
    for (const ws of this.wss?.clients ?? []) ws.terminate()
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()))
    await this.store?.close()
  }

  /** `pending`: the socket's pre-auth count (released once the handshake completes) and when it connected. */
  private accept(ws: WebSocket, source: string, pending?: { release: () => void; at: number }): void {
    const log = this.opts.log
    let conn: Conn | null = null
    let reader: MessageReader | null = null
    // 10 s from the connection's first byte to a completed handshake.
    const deadline = setTimeout(
      () => {
        if (!conn) ws.terminate()
      },
      Math.max(0, 10_000 - (Date.now() - (pending?.at ?? Date.now()))),
    )
    ws.on('message', async (data: Buffer, isBinary) => {
      try {
        if (!isBinary) throw new Error('text message')
        if (!conn) {
          if (data.length > MAX_PREAUTH || data[0] !== T_MSG1) throw new Error('expected a handshake')
          ws.pause()
          const got = await this.handshake(ws, data.subarray(1), source)
          ws.resume()
          if (!got) return
          conn = got
          reader = new MessageReader(conn.transport.recv, MAX_AGENT_MESSAGE)
          clearTimeout(deadline)
          pending?.release()
          this.limiter.authenticated(source)
          return
        }
        const msg = reader?.read(data)
        if (msg === undefined) return
        if ((msg as RelayedDatagram).t === 'datagram') {
          this.relayDatagram(conn, msg as RelayedDatagram)
          return
        }
        const m = agentToHubSchema.safeParse(msg)
        if (!m.success) throw new Error('a message the hub does not understand')
        if (m.data.t === 'ack') {
          conn.ackRev = Math.max(conn.ackRev, m.data.rev)
          this.emit('ack', conn.identity, m.data.rev)
        } else if (m.data.t === 'nat') {
          conn.hosts = (m.data.hosts ?? []).filter((h) => claimedEndpoint(h) !== undefined)
          await this.natReport(conn, m.data.nat, m.data.addr)
        } else if (m.data.t === 'path') {
          await this.introduce(conn, m.data.peer)
        } else if (m.data.t === 'resync') {
          this.resync(conn)
        }
      } catch (e) {
        if (e instanceof MessageTooLarge) {
          tooLarge((e as Error).message)
          return
        }
        log.debug({ source, err: (e as Error).message }, 'hub connection closed')
        ws.terminate()
      }
    })
    // A message past MAX_AGENT_MESSAGE (ws's maxPayload, or reassembled): closed with 1009, logged, and cut
    // a second later if the other side does not finish the close.
    let closing = false
    const tooLarge = (err: string) => {
      if (closing) return
      closing = true
      log.info({ source, identity: conn?.identity, err }, 'hub connection closed: message too large')
      if (ws.readyState === ws.OPEN) ws.close(1009, 'message too large')
      setTimeout(() => ws.terminate(), 1000).unref()
    }
    ws.on('close', () => {
      clearTimeout(deadline)
      if (conn) clearTimeout(conn.resyncTimer)

      if (conn) this.byToken.delete(conn.reflectToken)
      if (conn && this.conns.get(conn.systemId) === conn) {
        this.conns.delete(conn.systemId)
        this.replicas?.detached(conn.systemId)
        log.info({ identity: conn.identity }, 'system disconnected')
        this.emit('disconnected', conn.identity)
      }
    })
    ws.on('error', (e: Error & { code?: string }) => {
      if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') tooLarge(e.message)
      else ws.terminate()
    })
  }

  /**
   * A WireGuard datagram an agent relays over its connection (relay-tcp): forwarded to the named system's
   * connection when the two may see each other, within RELAY_TCP_BYTES_PER_S per sending connection.
   */
  private relayDatagram(conn: Conn, d: RelayedDatagram): void {
    const other = this.model.byIdentity.get(d.peer)
    const oc = other ? this.conns.get(other.id) : undefined
    if (oc?.state !== 'approved' || conn.state !== 'approved' || !this.model.visibleOf(conn.systemId).has(oc.systemId)) {
      this.relayTcpDropped++
      return
    }
    const now = Date.now()
    conn.relayLevel = Math.min(RELAY_TCP_BYTES_PER_S / 4, conn.relayLevel + ((now - conn.relayAt) * RELAY_TCP_BYTES_PER_S) / 1000)
    conn.relayAt = now
    if (conn.relayLevel < d.bytes || oc.ws.bufferedAmount > 4 * 1024 * 1024) {
      this.relayTcpDropped += d.data.length
      return
    }
    conn.relayLevel -= d.bytes
    this.relayTcpBytes += d.bytes
    oc.ws.send(sealDatagrams(oc.transport.send, conn.identity, d.data))
  }

  /** Datagrams relayed over hub connections, and those dropped (not visible, over the rate, backlog). */
  relayTcpBytes = 0
  relayTcpDropped = 0

  /**
   * Relay pairs (key -> the two system ids). A pair goes when its systems may no longer see each other
   * (a policy, a disable, a removal: checked at every change of the database) or by the relay's idle
   * timer; not when an agent's hub connection drops, so that relayed traffic survives a hub blip.
   */
  private readonly pairs = new Map<string, [number, number]>()

  private prunePairs(): void {
    for (const [key, [a, b]] of this.pairs) {
      const sa = this.model.systems.get(a)
      const sb = this.model.systems.get(b)
      if (sa?.state === 'approved' && sb?.state === 'approved' && this.model.visibleOf(a).has(b)) continue
      this.pairs.delete(key)
      this.relay?.release(key)
      this.opts.log.info({ pair: key }, 'relay released: the two systems may no longer see each other')
    }
  }

  /**
   * An agent has traffic for `identity` and no path (issue 20): when the two may see each other and both
   * are connected, each gets the other's candidates (`punch`) at the same moment, and, unless both have
   * public addresses, a relay port pair (`relay`). At most once per INTRODUCE_EVERY_MS per pair.
   */
  private async introduce(conn: Conn, identity: string): Promise<void> {
    const other = this.model.byIdentity.get(identity)
    if (!other || other.id === conn.systemId || conn.state !== 'approved') return
    if (!this.model.visibleOf(conn.systemId).has(other.id)) return
    const oc = this.conns.get(other.id)
    if (!oc) {
      // Attached to another replica: the introduction goes one hop, to that replica.
      const where = this.replicas?.where(other.id)
      if (where && other.state === 'approved') await this.introduceRemote(conn, other.id, other.identity, where)
      return
    }
    if (oc.state !== 'approved') return
    const now = Date.now()
    if (now - (conn.introduced.get(oc.systemId) ?? Number.NEGATIVE_INFINITY) < INTRODUCE_EVERY_MS) return
    conn.introduced.set(oc.systemId, now)
    oc.introduced.set(conn.systemId, now)
    if (conn.nat === 'blocked' || oc.nat === 'blocked') {
      // One side cannot send UDP at all: their datagrams go over the hub connections (relay-tcp).
      this.send(conn, { t: 'relay-tcp', peer: oc.identity })
      this.send(oc, { t: 'relay-tcp', peer: conn.identity })
      this.opts.log.info({ a: conn.identity, b: oc.identity, natA: conn.nat, natB: oc.nat }, 'introduced two systems (relay over TCP)')
      return
    }
    const relay = this.relay
    if (relay && !(conn.nat === 'none' && oc.nat === 'none')) {
      const key = [conn.identity, oc.identity].sort().join('-')
      try {
        const a = await relay.allocate(key, conn.identity, oc.identity)
        this.pairs.set(key, [conn.systemId, oc.systemId])
        // The database may have moved on while the ports were opened: a pair that may no longer be goes now.
        this.prunePairs()
        if (!this.pairs.has(key)) return
        this.send(conn, { t: 'relay', peer: oc.identity, port: a[conn.identity].port, token: a[conn.identity].token })
        this.send(oc, { t: 'relay', peer: conn.identity, port: a[oc.identity].port, token: a[oc.identity].token })
      } catch (e) {
        this.opts.log.warn({ pair: key, err: (e as Error).message }, 'relay allocation failed')
      }
    }
    const candidatesOf = (c: Conn) => this.candidatesOf(c)
    this.send(conn, { t: 'punch', peer: oc.identity, candidates: candidatesOf(oc), hosts: oc.hosts.slice(0, 8) })
    this.send(oc, { t: 'punch', peer: conn.identity, candidates: candidatesOf(conn), hosts: conn.hosts.slice(0, 8) })
    this.opts.log.info({ a: conn.identity, b: oc.identity, natA: conn.nat, natB: oc.nat }, 'introduced two systems (relay, punch)')
  }

  /** This hub's candidates for a connection's system: its reflexive address and its endpoint. */
  private candidatesOf(c: Conn): string[] {
    const row = this.model.systems.get(c.systemId)
    const all = [c.reflexive, row?.endpoint ?? undefined].filter((x): x is string => !!x && /^\d+\.\d+\.\d+\.\d+:\d+$/.test(x))
    return [...new Set(all)].slice(0, 8)
  }

  /** The IPv4 address agents of other replicas send to for this replica's relay, when it has one. */
  private relayHost(): string | undefined {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(this.address) && this.address !== '0.0.0.0') return this.address
    try {
      const h = new URL(this.publicUrl ?? '').hostname
      return /^\d+\.\d+\.\d+\.\d+$/.test(h) ? h : undefined
    } catch {
      return undefined
    }
  }

  private publicUrl?: string

  /**
   * Introduces a local system to one attached to replica `where`: the relay pair is on this replica (the
   * far agent is told its address), this side's candidates go over, and the far replica answers with its
   * system's candidates (`intro-back`).
   */
  private async introduceRemote(conn: Conn, otherId: number, otherIdentity: string, where: string): Promise<void> {
    const now = Date.now()
    if (now - (conn.introduced.get(otherId) ?? Number.NEGATIVE_INFINITY) < INTRODUCE_EVERY_MS) return
    conn.introduced.set(otherId, now)
    let relay: { host: string; port: number; token: string } | undefined
    const host = this.relayHost()
    if (this.relay && host && conn.nat !== 'none' && conn.nat !== 'blocked') {
      const key = [conn.identity, otherIdentity].sort().join('-')
      try {
        const a = await this.relay.allocate(key, conn.identity, otherIdentity)
        this.pairs.set(key, [conn.systemId, otherId])
        this.prunePairs()
        if (this.pairs.has(key)) {
          this.send(conn, { t: 'relay', peer: otherIdentity, port: a[conn.identity].port, token: a[conn.identity].token })
          relay = { host, port: a[otherIdentity].port, token: a[otherIdentity].token }
        }
      } catch (e) {
        this.opts.log.warn({ pair: key, err: (e as Error).message }, 'relay allocation failed')
      }
    }
    await this.replicas?.send(where, {
      t: 'intro',
      to: otherId,
      peerId: conn.systemId,
      peer: conn.identity,
      candidates: this.candidatesOf(conn),
      hosts: conn.hosts.slice(0, 8),
      relay,
    })
    this.opts.log.info({ a: conn.identity, b: otherIdentity, replica: where }, 'introduced two systems across replicas')
  }

  /** A message from another replica: the far half of an introduction. Checked here as if local. */
  private async replicaMessage(m: Record<string, unknown>): Promise<void> {
    const to = Number(m.to)
    const peerId = Number(m.peerId)
    const c = this.conns.get(to)
    if (c?.state !== 'approved') return
    await this.refreshModel()
    const peer = this.model.systems.get(peerId)
    if (peer?.state !== 'approved' || !this.model.visibleOf(to).has(peerId)) return
    const strs = (v: unknown) =>
      Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && claimedEndpoint(x) !== undefined).slice(0, 8) : []
    this.send(c, { t: 'punch', peer: peer.identity, candidates: strs(m.candidates), hosts: strs(m.hosts) })
    const r = m.relay as { host?: unknown; port?: unknown; token?: unknown } | undefined
    if (
      r &&
      typeof r.host === 'string' &&
      /^\d+\.\d+\.\d+\.\d+$/.test(r.host) &&
      Number.isInteger(r.port) &&
      typeof r.token === 'string' &&
      /^[0-9a-f]{32}$/.test(r.token)
    )
      this.send(c, { t: 'relay', peer: peer.identity, port: r.port, token: r.token, host: r.host })
    if (m.t === 'intro' && typeof m.from === 'string') {
      c.introduced.set(peerId, Date.now())
      await this.replicas?.send(m.from, {
        t: 'intro-back',
        to: peerId,
        peerId: to,
        candidates: this.candidatesOf(c),
        hosts: c.hosts.slice(0, 8),
      })
    }
  }

  /**
   * An agent asks for its whole map (it could not apply a delta): answered at once, then at most once per
   * RESYNC_MS, later requests coalesced into one. A full map costs the hub far more than the request.
   */
  private resync(conn: Conn): void {
    if (conn.resyncTimer) return
    const wait = conn.resyncAt + RESYNC_MS - Date.now()
    const go = () => {
      conn.resyncTimer = undefined
      if (conn.ws.readyState !== conn.ws.OPEN) return
      conn.resyncAt = Date.now()
      conn.sent = null
      conn.sentIndex.clear()
      this.sendMap(conn)
    }
    if (wait <= 0) go()
    else conn.resyncTimer = setTimeout(go, wait)
  }

  private async handshake(ws: WebSocket, msg1: Buffer, source: string): Promise<Conn | null> {
    const log = this.opts.log
    const r = respond(this.key, msg1)
    if (!r) {
      log.debug({ source }, 'hub handshake failed authentication (wrong hub key, or not an agent)')
      ws.terminate()
      return null
    }
    let hello: ReturnType<typeof helloSchema.parse>
    try {
      hello = helloSchema.parse(JSON.parse(Buffer.from(r.payload).toString('utf8')))
    } catch (e) {
      log.debug({ source, err: (e as Error).message.slice(0, 300) }, 'hub hello refused')
      ws.terminate()
      return null
    }
    const publicKey = Buffer.from(r.remoteStatic).toString('base64')
    const refuse = (code: string, message: string) => {
      const { message2 } = r.respond(Buffer.from(JSON.stringify({ t: 'error', code, message })))
      ws.send(Buffer.concat([Buffer.of(T_MSG2), message2]))
      ws.close(4000 + Math.min(999, code.length), code)
      log.info({ source, publicKey, code }, 'hub refused a system')
      return null
    }
    if (hello.v > HUB_PROTOCOL_VERSION + 10 || hello.v < 1)
      return refuse('UPGRADE_REQUIRED', `this hub speaks version ${HUB_PROTOCOL_VERSION}`)
    // Routes it offers as an exit node (the admin approves them): distinct, and at most MAX_ADVERTISED.
    const advertised = [...new Set(hello.advertise.filter((c) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(c)))].slice(0, MAX_ADVERTISED)
    // Claimed endpoints are checked (an agent cannot hand its viewers an endpoint they refuse, or aim
    // them at loopback or the overlay); without a usable one, the connection's IPv4 source.
    const claimed = (hello.endpoints ?? []).map(claimedEndpoint).find((e) => e !== undefined)
    if (hello.endpoints?.length && !claimed)
      log.info({ source, endpoints: hello.endpoints.slice(0, 4) }, 'claimed endpoints unusable: the source address is used')
    const endpoint = claimed ?? sourceEndpoint(source, hello.listenPort) ?? null
    let res: Awaited<ReturnType<HubAdmin['enrol']>>
    try {
      res = await this.admin.enrol({
        publicKey,
        key: hello.enrol?.key,
        // Printable and short: it becomes the Description of a peer in other systems' profiles.
        hostname: hello.hostname.replace(/[^\x20-\x7e]/g, '?').slice(0, 63),
        listenPort: hello.listenPort,
        endpoint,
        helloTs: hello.ts,
        allowGateway: hello.allowGateway,
        acceptDefaultRoute: hello.acceptDefaultRoute,
        advertised,
      })
    } catch (e) {
      log.error({ err: (e as Error).message }, 'enrolment failed in the store')
      if (isDatabaseDown(e))
        return refuse('HUB_UNAVAILABLE', "the hub's database is unreachable; try again shortly (or another hub replica)")
      return refuse('HUB_BUSY', 'the hub could not record this system; try again')
    }
    if (!res.ok) return refuse(res.code, res.message)
    const s = res.system
    if (s.state === 'disabled') return refuse('SYSTEM_DISABLED', `${s.identity} is disabled on this hub`)
    if (!res.enrolled) await this.admin.seen(publicKey, endpoint, hello.listenPort, advertised)
    await this.modelWith(s.id, s.state)
    const map = this.model.systems.has(s.id) ? this.model.mapFor(s.id) : null
    const reflectToken = crypto.randomBytes(REFLECT_TOKEN_BYTES).toString('hex')
    const welcome = {
      t: 'welcome',
      identity: s.identity,
      address: intToIp(s.address),
      state: s.state,
      enrolled: res.enrolled,
      peers: map?.Peers.length ?? 0,
      ...(this.reflectPorts.length ? { reflect: { token: reflectToken, ports: this.reflectPorts } } : {}),
    }
    const { message2, transport } = r.respond(Buffer.from(JSON.stringify(welcome)))
    ws.send(Buffer.concat([Buffer.of(T_MSG2), message2]))
    const old = this.conns.get(s.id)
    if (old) old.ws.terminate()
    const conn: Conn = {
      ws,
      systemId: s.id,
      identity: s.identity,
      transport,
      sent: null,
      sentIndex: new Map(),
      sentSum: new Uint32Array(8),
      mentioned: new Set(),
      sentRev: 0,
      ackRev: 0,
      state: s.state,
      alive: true,
      reflectToken,
      reflectCount: 0,
      reflectWindow: 0,
      endpointPinned: claimed !== undefined,
      reflected: new Set(),
      resyncAt: 0,
      hosts: [],
      introduced: new Map(),
      relayLevel: RELAY_TCP_BYTES_PER_S / 4,
      relayAt: Date.now(),
    }
    ws.on('pong', () => {
      conn.alive = true
    })
    this.conns.set(s.id, conn)
    this.replicas?.attached(s.id)
    this.byToken.set(reflectToken, conn)
    log.info(
      { identity: s.identity, source, state: s.state, enrolled: res.enrolled },
      res.enrolled ? 'system enrolled' : 'system connected',
    )
    this.emit('connected', s.identity)
    // Resume: an agent whose cached map hashes to what we would send gets only the revision.
    if (map && hello.resume?.hash === mapHash(map)) {
      this.record(conn, map)
      conn.sentRev = this.modelRev
      this.send(conn, { t: 'delta', rev: this.modelRev, hash: hello.resume.hash, delta: { Upsert: [], Remove: [] } })
    } else this.sendMap(conn)
    return conn
  }

  /** What `c` now holds: `map`, and its peers by key. */
  private record(c: Conn, map: HubMap): void {
    c.sent = map
    c.sentIndex = new Map(map.Peers.map((p) => [p.PublicKey, p]))
    c.sentSum = peersDigest(map.Peers)
    c.mentioned = this.model.mentionedFor(c.systemId)
  }

  private send(c: Conn, msg: { t: string; [k: string]: unknown }): number {
    let bytes = 0
    for (const f of sealMessage(c.transport.send, msg)) {
      bytes += f.length
      c.ws.send(f)
    }
    this.emit('sent', c.identity, msg.t, bytes)
    return bytes
  }

  private sendMap(c: Conn, vis?: Map<number, Set<number>>): void {
    if (!this.model.systems.has(c.systemId)) return
    const map = this.model.mapFor(c.systemId, vis)
    this.record(c, map)
    c.sentRev = this.modelRev
    this.send(c, { t: 'map', rev: this.modelRev, hash: mapHash(map), map })
  }

  /** Reloads the model when the database moved on (cheap: one read); the fan-out is followStore's. */
  private async refreshModel(): Promise<void> {
    const rev = await this.store.revision()
    if (rev === this.modelRev) return
    // One load at a time: concurrent handshakes share it instead of each reading every table.
    this.loading ??= (async () => {
      const at = await this.store.revision()
      const m = await loadModel(this.store.db, this.entries)
      if (at > this.modelRev) {
        this.model = m
        this.modelRev = at
      }
    })().finally(() => {
      this.loading = undefined
    })
    await this.loading
  }

  private loading?: Promise<void>
  /** The last follow of the database failed (logged once until one succeeds). */
  private followFailing = false
  /** Peer entries shared by every model this hub loads (HubModel). */
  private readonly entries: EntryCache = new Map()

  /**
   * A handshake needs a model that knows its system as the store has it now (just enrolled, or its
   * state changed); a reconnecting system the model already knows costs no reload at all.
   */
  private async modelWith(id: number, state: string): Promise<void> {
    for (let i = 0; i < 3; i++) {
      if (this.model.systems.get(id)?.state === state) return
      await this.refreshModel()
    }
  }

  /** One connection after a change: its state, and its map compared in full (removed or disabled: closed). */
  private fanOutOne(c: Conn, rev: number, vis?: Map<number, Set<number>>): void {
    const s = this.model.systems.get(c.systemId)
    if (!s) {
      this.send(c, { t: 'state', state: 'removed' })
      c.ws.close(4100, 'removed')
      this.conns.delete(c.systemId)
      return
    }
    if (s.state !== c.state) {
      c.state = s.state
      this.send(c, { t: 'state', state: s.state })
      if (s.state === 'disabled') {
        c.ws.close(4101, 'disabled')
        this.conns.delete(c.systemId)
        return
      }
    }
    if (!c.sent) {
      this.sendMap(c, vis)
      return
    }
    const map = this.model.mapFor(c.systemId, vis)
    const d = diffMaps(c.sent, map, c.sentIndex)
    c.sentRev = rev
    if (!d) return
    for (const k of d.Remove) c.sentIndex.delete(k)
    for (const p of d.Upsert) c.sentIndex.set(p.PublicKey, p)
    // Patched and unchanged-but-new objects: the index follows the map's objects.
    if (d.Patch?.length) for (const p of map.Peers) c.sentIndex.set(p.PublicKey, p)
    c.sent = map
    c.sentSum = peersDigest(map.Peers)
    if (d.Policies || d.Self) c.mentioned = this.model.mentionedFor(c.systemId)
    this.send(c, { t: 'delta', rev, hash: mapHash(map), delta: d })
  }

  /** The model of the last fan-out (systemsOnlyChange compares the next one with it). */
  private fanned?: HubModel

  /**
   * A change of some systems' rows only (enrolments, endpoints, tags, states; not policies or routes):
   * each connected system that sees, or saw, one of them gets that entry, entry by entry; a changed
   * system itself gets the full comparison. Costs what changed, not the size of every map.
   */
  private fanOutSystems(prev: HubModel, changed: Set<number>, rev: number): void {
    const model = this.model
    const touched = new Map<number, number[]>()
    for (const x of changed) {
      for (const m of [prev, model]) {
        if (!m.systems.has(x)) continue
        for (const id of m.visibleOf(x)) {
          if (changed.has(id)) continue
          const l = touched.get(id)
          if (l) {
            if (l[l.length - 1] !== x) l.push(x)
          } else touched.set(id, [x])
        }
      }
    }
    for (const c of [...this.conns.values()]) {
      if (changed.has(c.systemId)) {
        this.fanOutOne(c, rev)
        continue
      }
      if (!c.sent) {
        this.fanOutOne(c, rev)
        continue
      }
      c.sentRev = rev
      const xs = touched.get(c.systemId)
      if (!xs) continue
      const d: HubDelta = { Upsert: [], Remove: [] }
      const patch: Array<{ Identity: string; Endpoint?: string }> = []
      for (const x of xs) {
        const row = model.systems.get(x)
        const pk = row?.publicKey ?? (prev.systems.get(x) as { publicKey: string }).publicKey
        const old = c.sentIndex.get(pk)
        if (row?.state === 'approved' && model.visibleOf(x).has(c.systemId)) {
          const e = model.entryFor(row, c.mentioned)
          if (old === e) continue
          c.sentIndex.set(pk, e)
          if (old) addDigest(c.sentSum, old, -1)
          addDigest(c.sentSum, e, 1)
          if (old && canonical(old) === canonical(e)) continue
          if (old && canonical({ ...old, Endpoint: undefined }) === canonical({ ...e, Endpoint: undefined }))
            patch.push(e.Endpoint ? { Identity: e.Identity, Endpoint: e.Endpoint } : { Identity: e.Identity })
          else d.Upsert.push(e)
        } else if (old) {
          c.sentIndex.delete(pk)
          addDigest(c.sentSum, old, -1)
          d.Remove.push(pk)
        }
      }
      if (patch.length) d.Patch = patch
      if (d.Upsert.length || d.Remove.length || patch.length)
        this.send(c, { t: 'delta', rev, hash: mapHashWith(c.sent, c.sentSum), delta: d })
    }
  }

  /** Follows the database: on a new revision, rebuilds the model and sends what changed to whom it concerns. */
  private async followStore(): Promise<void> {
    if (this.following) return
    this.following = true
    try {
      await this.refreshModel()
      this.followFailing = false
      const rev = this.modelRev
      if (rev === this.rev) return
      this.rev = rev
      this.prunePairs()
      const prev = this.fanned
      this.fanned = this.model
      const changed = prev ? HubModel.systemsOnlyChange(prev, this.model) : null
      if (changed) {
        this.fanOutSystems(prev as HubModel, changed, rev)
        return
      }
      const vis = this.model.visibility()
      // Entries of systems that are gone leave the cache with them.
      for (const m of this.entries.values()) for (const id of m.keys()) if (!this.model.systems.has(id)) m.delete(id)
      for (const c of [...this.conns.values()]) this.fanOutOne(c, rev, vis)
    } catch (e) {
      // Once per outage, not every 100 ms poll.
      if (!this.followFailing) this.opts.log.error({ err: (e as Error).message }, 'hub could not follow the database')
      this.followFailing = true
    } finally {
      this.following = false
    }
  }
}
