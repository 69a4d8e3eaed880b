/**
 * The path to each hub peer (issue 20, hub-spec §4): relay first, upgrade to direct.
 *
 * - The hub introduces two systems that may see each other and cannot be assumed to reach each other
 *   directly (neither has a public address): it gives each a relay port and token (`relay`) and the
 *   other's candidate addresses (`punch`), to both at once, so that both start probing together.
 * - Relay first: as soon as the relay answers our bind, the peer's endpoint is the relay (unless a direct
 *   path is already confirmed), so traffic never waits for punching.
 * - Probes (src/protocol/path-msg.ts, authenticated by the pair key) go from the WireGuard socket to
 *   every candidate at once, then 0.25, 0.5, 1, 2 and 4 s later, then every PROBE_EVERY_MS while the path
 *   is not direct. A probe that arrives is answered to its source, and, while not direct, probed back at
 *   once (a probe through the other NAT opens ours toward it). The first answer confirms that address
 *   both ways: the endpoint switches to it (direct, or local when it is one of the peer's host addresses).
 * - Back to the relay when the direct path goes silent for DIRECT_HOLD_MS while we send; the workers
 *   refuse to roam to the relay while the direct path delivers (layout PF_RELAY_EP), so stragglers on
 *   the relay cannot flap the endpoint. At most MAX_SWITCHES switches per SWITCH_WINDOW_MS per peer.
 */
import dgram from 'node:dgram'
import {
  type PairKey,
  type PathDatagram,
  PROBE_WINDOW_MS,
  makeAnswer,
  makeProbe,
  pairKey,
  parsePath,
  verifyPath,
} from '../../protocol/path-msg.js'
import { intToIp, parseIpv4 } from '../../common/ipv4.js'
import { relayBindDatagram, relayConfirmDatagram } from '../../protocol/relay-msg.js'
import { C_RX_BYTES, C_TX_BYTES, DIRECT_HOLD_MS, packEndpoint } from '../../ipc/layout.js'
import type { AgentLogger } from '../../log/logger.js'
import type { PeerMemory } from '../peers/peer-memory.js'
import type { PeerRuntime } from '../peers/peer-table.js'

export type PathKind = 'direct' | 'local' | 'relay-udp' | 'relay-tcp'

/** One peer's path, for status. */
export interface PathStatus {
  path?: PathKind
  relay?: string
  relayBound?: boolean
  candidates: number
  switches: number
  rttMs?: number
  /** Payload bytes moved while the path was a relay. */
  relayedBytes: number
}

export const PROBE_STEPS_MS = [0, 250, 500, 1000, 2000, 4000]
export const PROBE_EVERY_MS = 25_000
export const RELAY_BIND_EVERY_MS = 20_000
export const MAX_SWITCHES = 2
export const SWITCH_WINDOW_MS = 30_000
/** How often a system asks the hub for a path to a peer it has traffic for. */
export const PATH_REQUEST_EVERY_MS = 10_000
/** The least time between two of our initiations to a peer (WireGuard refuses more than 50 a second). */
export const INITIATION_GAP_MS = 50
/**
 * The last initiation went to the endpoint the path now uses: its answer may still be coming (a busy
 * peer answers late, and refuses a second initiation that reaches it within 20 ms of the first as a
 * flood; our state for the first would be gone). Kick only once the answer is overdue: this, plus two
 * round trips of the path.
 */
export const KICK_SAME_ENDPOINT_MS = 250
/** Probes sent 250 ms apart on a path just found direct. */
export const AFTER_PROBES = 3
/** Probe nonces remembered per peer (answered within the last two windows). */
export const MAX_ANSWERED = 2048

interface Addr {
  ip: number
  port: number
}

interface PeerPath {
  key: PairKey
  identity: string
  relay?: { at: Addr; token: string; bound: boolean; lastBindMs: number; lastAnswerMs: number }
  candidates: Addr[]
  hostCandidates: Set<string>
  path?: PathKind
  /** Probes sent, by nonce (hex), and when. */
  pending: Map<string, number>
  /** Probes answered (nonces), so that a replay is answered no more. */
  answered: Map<string, number>
  nextProbeMs: number
  step: number
  switches: number[]
  lastRequestMs: number
  /** When the direct path last proved itself (switch, or an answered probe). */
  lastProofMs: number
  /** A new initiation is due on the path that just opened (see kick()). */
  kick?: boolean
  /** Path switches since the state was made. */
  switchTotal: number
  /** The round trip of the last answered probe (ms; the direct path's). */
  rttMs?: number
  /** Bytes in and out (payload) at the last tick, and those moved while the path was a relay. */
  lastBytes: number
  relayedBytes: number
  /** Probes still to send on a path just found direct (the other NAT opens with them too). */
  afterProbes: number
  /** relay-tcp: the loopback proxy socket, its address, datagrams that came before it was bound. */
  proxy?: dgram.Socket
  proxyAt?: Addr
  proxyQueue?: Buffer[]
}

export interface PathDeps {
  privateKey: Uint8Array
  publicKey: Uint8Array
  memory: PeerMemory
  send: (b: Buffer, ip: number, port: number) => void
  log: AgentLogger
  /** Ask the hub for a path to the peer (identity). */
  request?: (identity: string) => void
  /** relay-tcp: hand a WireGuard datagram to the hub connection, for the peer (identity). */
  hubDatagram?: (identity: string, data: Buffer) => void
  /** This agent's WireGuard port (relay-tcp proxies deliver to it on loopback). */
  wgPort?: number
  /** Start a handshake (traffic is waiting and a path just opened). */
  initiate?: (peer: PeerRuntime, reason: string) => void
  clock?: () => number
}

const key = (a: Addr) => `${a.ip >>> 0}:${a.port}`
const text = (a: Addr) => `${intToIp(a.ip >>> 0)}:${a.port}`

function parseAddr(s: string): Addr | undefined {
  const i = s.lastIndexOf(':')
  const ip = parseIpv4(s.slice(0, i))
  const port = Number(s.slice(i + 1))
  if (typeof ip !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined
  return { ip, port }
}

export class PathManager {
  private readonly byPeer = new Map<PeerRuntime, PeerPath>()
  private readonly byPair = new Map<string, PeerRuntime>()
  private readonly byIdentity = new Map<string, PeerRuntime>()
  /** Path switches and bytes (for metrics and status). */
  switchCount = 0

  constructor(private readonly d: PathDeps) {}

  private now(): number {
    return (this.d.clock ?? Date.now)()
  }

  private state(peer: PeerRuntime): PeerPath {
    let s = this.byPeer.get(peer)
    if (!s) {
      const k = pairKey(this.d.privateKey, this.d.publicKey, peer.cfg.publicKey)
      s = {
        key: k,
        identity: peer.cfg.identity,
        candidates: [],
        hostCandidates: new Set(),
        pending: new Map(),
        answered: new Map(),
        nextProbeMs: Number.POSITIVE_INFINITY,
        step: 0,
        switches: [],
        lastRequestMs: Number.NEGATIVE_INFINITY,
        lastProofMs: 0,
        switchTotal: 0,
        lastBytes: 0,
        relayedBytes: 0,
        afterProbes: 0,
      }
      this.byPeer.set(peer, s)
      this.byPair.set(k.pair, peer)
      this.byIdentity.set(peer.cfg.identity, peer)
    }
    return s
  }

  /** A peer left (removed, or its slot reused): its path state goes. */
  forget(peer: PeerRuntime): void {
    const s = this.byPeer.get(peer)
    if (!s) return
    this.byPeer.delete(peer)
    this.byPair.delete(s.key.pair)
    if (this.byIdentity.get(s.identity) === peer) this.byIdentity.delete(s.identity)
    this.d.memory.setRelay(peer.slot, undefined)
    s.proxy?.close()
    s.proxy = undefined
  }

  /** Closes every relay-tcp proxy (the agent stops). */
  close(): void {
    for (const s of this.byPeer.values()) {
      s.proxy?.close()
      s.proxy = undefined
    }
  }

  /**
   * relay-tcp (UDP blocked on one side): the peer's endpoint becomes a loopback UDP proxy of ours. What the
   * workers send there goes to the hub over its connection; what the hub relays from the peer is sent from
   * the proxy to our WireGuard port, so the workers see it as coming from that endpoint (and roam to it).
   */
  relayTcp(peer: PeerRuntime): void {
    const s = this.state(peer)
    if (s.proxy || !this.d.hubDatagram || !this.d.wgPort) return
    const sock = dgram.createSocket('udp4')
    s.proxy = sock
    const wgPort = this.d.wgPort
    sock.on('message', (msg, from) => {
      if (from.address === '127.0.0.1' && from.port === wgPort) this.d.hubDatagram?.(s.identity, msg)
    })
    sock.on('error', (e) => this.d.log.warn({ peer: s.identity, err: e.message }, 'relay-tcp proxy error'))
    sock.bind(0, '127.0.0.1', () => {
      if (s.proxy !== sock) return
      const at = { ip: 0x7f000001, port: sock.address().port }
      s.proxyAt = at
      if (s.path !== 'direct' && s.path !== 'local')
        this.use(peer, s, at, 'relay-tcp', this.now(), 'UDP is blocked; relayed over the hub connection', true)
      const q = s.proxyQueue
      s.proxyQueue = []
      for (const d of q ?? []) sock.send(d, wgPort, '127.0.0.1')
    })
  }

  /** The peer a relay-tcp datagram names, when its path state exists (no scan per datagram). */
  known(identity: string): PeerRuntime | undefined {
    return this.byIdentity.get(identity)
  }

  /** A datagram the hub relayed from `peer` (relay-tcp). */
  fromHub(peer: PeerRuntime, data: Buffer): void {
    const s = this.state(peer)
    if (!s.proxy) this.relayTcp(peer)
    if (!s.proxy || !this.d.wgPort) return
    if (!s.proxyAt) {
      s.proxyQueue ??= []
      if (s.proxyQueue.length < 64) s.proxyQueue.push(data)
      return
    }
    s.proxy.send(data, this.d.wgPort, '127.0.0.1')
  }

  /** The path in use, for status: undefined when the hub manages none for this peer. */
  pathOf(peer: PeerRuntime): PathKind | undefined {
    return this.byPeer.get(peer)?.path
  }

  /**
   * The hub connection is back, perhaps on another replica whose relay this agent never bound: every peer
   * still on a relay asks for a path again at once (a new introduction, a new relay pair), instead of
   * waiting for the old relay's silence to show (15 s of sending without an answer).
   */
  hubReconnected(): void {
    if (!this.d.request) return
    for (const [peer, s] of this.byPeer) {
      if (s.path === 'direct' || s.path === 'local' || !s.relay) continue
      s.lastRequestMs = this.now()
      this.d.request(peer.cfg.identity)
    }
  }

  /** Traffic waits for a peer with no path yet: ask the hub (at most every PATH_REQUEST_EVERY_MS). */
  wanted(peer: PeerRuntime): void {
    if (peer.cfg.source !== 'hub' || !this.d.request) return
    const s = this.state(peer)
    if (s.path === 'direct' || s.path === 'local') return
    const now = this.now()
    if (now - s.lastRequestMs < PATH_REQUEST_EVERY_MS) return
    s.lastRequestMs = now
    this.d.request(peer.cfg.identity)
  }

  /** The hub's relay for this peer: bind to it (from the WireGuard socket), then use it until direct. */
  relay(peer: PeerRuntime, at: string, token: string): void {
    const a = parseAddr(at)
    if (!a || !/^[0-9a-f]{32}$/.test(token)) return
    const s = this.state(peer)
    s.relay = { at: a, token, bound: false, lastBindMs: Number.NEGATIVE_INFINITY, lastAnswerMs: 0 }
    this.d.memory.setRelay(peer.slot, a)
    this.bind(s)
  }

  /** The hub's introduction: the peer's candidates, probed at once and on the schedule. */
  punch(peer: PeerRuntime, candidates: string[], hosts: string[] = []): void {
    const s = this.state(peer)
    const all = [...candidates, ...hosts].map(parseAddr).filter((a): a is Addr => a !== undefined)
    const seen = new Set<string>()
    s.candidates = all.filter((a) => !seen.has(key(a)) && seen.add(key(a)) !== undefined).slice(0, 16)
    s.hostCandidates = new Set(
      hosts
        .map(parseAddr)
        .filter((a): a is Addr => a !== undefined)
        .map(key),
    )
    if (s.path === 'direct' || s.path === 'local') return
    s.step = 0
    s.nextProbeMs = this.now()
    this.tickPeer(peer, s, this.now())
  }

  private bind(s: PeerPath): void {
    if (!s.relay) return
    s.relay.lastBindMs = this.now()
    this.d.send(relayBindDatagram(s.relay.token), s.relay.at.ip, s.relay.at.port)
  }

  /** A path datagram the workers passed up (already through their gate). */
  datagram(b: Buffer, ip: number, port: number): void {
    const m: PathDatagram = parsePath(b)
    if (!m) return
    const now = this.now()
    if (m.kind === 'challenge') {
      // The relay asks us to prove we receive at this address before it binds us: echo its cookie.
      for (const s of this.byPeer.values()) {
        const r = s.relay
        if (r && r.token === m.token && r.at.ip === ip && r.at.port === port) this.d.send(relayConfirmDatagram(m.token, m.cookie), ip, port)
      }
      return
    }
    if (m.kind === 'bind') {
      for (const [peer, s] of this.byPeer) {
        const r = s.relay
        if (!r || r.token !== m.token || r.at.ip !== ip || r.at.port !== port) continue
        r.lastAnswerMs = now
        if (!r.bound) {
          r.bound = true
          this.d.log.network({ peer: s.identity, relay: text(r.at) }, 'relay bound')
          if (!s.path) {
            // Relay first, unless the peer's packets already come straight from it.
            const heard = this.d.memory.lastRxDirect(peer.slot)
            if (heard > 0 && now - heard < DIRECT_HOLD_MS) {
              s.path = 'direct'
              s.lastProofMs = heard
              s.nextProbeMs = now + PROBE_EVERY_MS
            } else this.use(peer, s, r.at, 'relay-udp', now, 'relay first')
          } else if (s.path === 'relay-udp' && this.d.memory.endpointRaw(peer.slot) !== packEndpoint(r.at.ip, r.at.port)) {
            // A new relay while on an old one (the hub, or its replica, that relayed us is gone): use it.
            this.use(peer, s, r.at, 'relay-udp', now, 'a new relay')
            this.d.log.network({ peer: s.identity, relay: text(r.at) }, 'path: moved to a new relay')
          }
        }
      }
      return
    }
    const peer = this.byPair.get(m.pair)
    if (!peer) return
    const s = this.byPeer.get(peer)
    if (!s || !verifyPath(s.key, m.b)) return
    const from = { ip, port }
    if (m.kind === 'probe') {
      if (Math.abs(now - m.sentMs) > PROBE_WINDOW_MS || s.answered.has(m.nonce)) return
      // Every probe answered in the window is remembered (a replay within it is not answered again); the
      // set is bounded: when it is full of live nonces, probes wait for room (one's own are ~100 per 30 s).
      if (s.answered.size >= MAX_ANSWERED)
        for (const [n, t] of s.answered) {
          if (now - t <= PROBE_WINDOW_MS * 2) break
          s.answered.delete(n)
        }
      if (s.answered.size >= MAX_ANSWERED) return
      s.answered.set(m.nonce, now)
      this.d.send(makeAnswer(s.key, m.nonce), ip, port)
      // Its probe came through: probing back now opens our side toward that address too.
      if (s.path !== 'direct' && s.path !== 'local') this.probe(s, [from], now)
      return
    }
    const sent = s.pending.get(m.nonce)
    if (sent === undefined || now - sent > PROBE_WINDOW_MS) return
    s.pending.delete(m.nonce)
    s.lastProofMs = now
    s.rttMs = now - sent
    if (!s.relay || ip !== s.relay.at.ip || port !== s.relay.at.port) this.d.memory.noteDirect(peer.slot, now)
    const cur = this.d.memory.endpointRaw(peer.slot)
    if ((s.path === 'direct' || s.path === 'local') && cur === packEndpoint(ip, port)) return
    this.use(peer, s, from, s.hostCandidates.has(key(from)) ? 'local' : 'direct', now, `probe answered in ${now - sent} ms`)
  }

  private use(peer: PeerRuntime, s: PeerPath, at: Addr, kind: PathKind, now: number, why: string, force = false): boolean {
    s.switches = s.switches.filter((t) => now - t < SWITCH_WINDOW_MS)
    // The hold-down stops flapping; it never keeps a dead path (force: the fallback from a silent one).
    if (!force && s.path && s.path !== kind && s.switches.length >= MAX_SWITCHES) {
      this.d.log.debug({ peer: s.identity, to: kind }, 'path switch held down (too many in 30 s)')
      return false
    }
    if (s.path && s.path !== kind) {
      s.switches.push(now)
      s.switchTotal++
      this.switchCount++
    }
    const before = s.path
    const moved = this.d.memory.endpointRaw(peer.slot) !== packEndpoint(at.ip, at.port)
    s.path = kind
    if (kind === 'direct' || kind === 'local') {
      s.lastProofMs = now
      s.afterProbes = AFTER_PROBES
      s.nextProbeMs = now + 250
    }
    this.d.memory.setEndpoint(peer.slot, at)
    if (before !== kind) this.d.log.network({ peer: s.identity, path: kind, endpoint: text(at), was: before ?? 'none' }, `path: ${why}`)
    if (kind === 'relay-udp') {
      if (!Number.isFinite(s.nextProbeMs)) s.nextProbeMs = now
    }
    s.kick = moved || (kind !== 'relay-udp' && kind !== 'relay-tcp')
    this.kick(peer, s, now)
    return true
  }

  /**
   * Traffic waits for a session and the path just opened: a new initiation on it now, since the last one
   * may have gone where nothing answers (a stale endpoint, or a NAT that had not opened yet). Not within
   * INITIATION_GAP_MS of the last (the peer would refuse it as a flood, and we would have dropped the
   * first's state), nor, when the last went to this same endpoint, before its answer is overdue
   * (KICK_SAME_ENDPOINT_MS): the tick tries again. Not within a second of one that went to the bound relay (that
   * one is answered).
   */
  private kick(peer: PeerRuntime, s: PeerPath, now: number): void {
    if (!s.kick) return
    if (peer.session.current || !peer.session.staged.length || !this.d.initiate) {
      s.kick = false
      return
    }
    const since = now - peer.hs.lastSentMs
    const r = s.relay
    if (r?.bound && peer.hs.lastSentTo === packEndpoint(r.at.ip, r.at.port) && since < 1000) {
      s.kick = false
      return
    }
    if (since < INITIATION_GAP_MS) return
    const rtt = s.rttMs ?? 0
    if (peer.hs.lastSentTo === this.d.memory.endpointRaw(peer.slot) && since < KICK_SAME_ENDPOINT_MS + 2 * rtt) return
    s.kick = false
    this.d.initiate(peer, `path ${s.path}`)
  }

  private probe(s: PeerPath, to: Addr[], now: number): void {
    for (const a of to) {
      const p = makeProbe(s.key, now)
      s.pending.set(p.nonce, now)
      this.d.send(p.datagram, a.ip, a.port)
    }
    if (s.pending.size > 128) for (const [n, t] of s.pending) if (now - t > PROBE_WINDOW_MS || s.pending.size > 128) s.pending.delete(n)
  }

  /** Every few hundred ms from control's timer: probes due, relay binds, fallback to the relay. */
  tick(alive: (peer: PeerRuntime) => boolean = () => true): void {
    const now = this.now()
    for (const [peer, s] of this.byPeer) {
      if (!alive(peer)) this.forget(peer)
      else this.tickPeer(peer, s, now)
    }
  }

  private tickPeer(peer: PeerRuntime, s: PeerPath, now: number): void {
    this.kick(peer, s, now)
    // What moved since the last tick counts as relayed while the path is a relay (tick granularity).
    const bytes = this.d.memory.counter(peer.slot, C_RX_BYTES) + this.d.memory.counter(peer.slot, C_TX_BYTES)
    if (s.path === 'relay-udp' || s.path === 'relay-tcp') s.relayedBytes += Math.max(0, bytes - s.lastBytes)
    s.lastBytes = bytes
    const r = s.relay
    if (r) {
      // Keep the relay's binding (and our NAT's mapping toward it) alive; rebind after a NAT change.
      const every = r.bound ? RELAY_BIND_EVERY_MS : 1000
      if (now - r.lastBindMs >= every) this.bind(s)
      if (r.bound && now - r.lastAnswerMs > 3 * RELAY_BIND_EVERY_MS + 5000) {
        r.bound = false
        this.d.log.network({ peer: s.identity, relay: text(r.at) }, 'relay stopped answering; binding again')
      }
    }
    if (
      (s.path === 'direct' || s.path === 'local') &&
      r?.bound &&
      this.d.memory.endpointRaw(peer.slot) === packEndpoint(r.at.ip, r.at.port)
    ) {
      // The workers went back to the relay (the direct path delivered nothing for DIRECT_HOLD_MS while the
      // relay did): follow them, and probe again.
      s.path = 'relay-udp'
      s.switches.push(now)
      s.switchTotal++
      this.switchCount++
      s.step = 0
      s.nextProbeMs = now
      this.d.log.network({ peer: s.identity, path: 'relay-udp' }, 'path: the direct path went quiet; back on the relay')
    }
    if (s.path === 'direct' || s.path === 'local') {
      // Silent direct path while we send (or its probes unanswered for two rounds): back to the relay.
      // The workers hold the endpoint against relay stragglers until then.
      const t = this.d.memory.times(peer.slot)
      const heard = Math.max(this.d.memory.lastRxDirect(peer.slot), s.lastProofMs)
      const silent = (t.lastTxAny > heard && now - heard >= DIRECT_HOLD_MS) || now - heard > 2 * PROBE_EVERY_MS + 5000
      if (r?.bound && silent) {
        if (this.use(peer, s, r.at, 'relay-udp', now, `direct path silent for ${Math.round((now - heard) / 1000)} s`, true)) {
          s.step = 0
          s.nextProbeMs = now
        }
        return
      }
      // A few more probes right after the switch (so the other side's NAT opens too), then one every
      // PROBE_EVERY_MS: they keep the NATs' mappings open and prove the path still works.
      if (now >= s.nextProbeMs) {
        const ep = this.d.memory.endpoint(peer.slot)
        if (ep) this.probe(s, [ep], now)
        s.nextProbeMs = now + (s.afterProbes > 0 ? 250 : PROBE_EVERY_MS)
        if (s.afterProbes > 0) s.afterProbes--
      }
      return
    }
    if (now < s.nextProbeMs || !s.candidates.length) return
    this.probe(s, s.candidates, now)
    s.step++
    s.nextProbeMs = s.step < PROBE_STEPS_MS.length ? now + PROBE_STEPS_MS[s.step] - PROBE_STEPS_MS[s.step - 1] : now + PROBE_EVERY_MS
  }

  /** For status: each managed peer's path. */
  status(): Map<string, PathStatus> {
    const m = new Map<string, PathStatus>()
    for (const s of this.byPeer.values())
      m.set(s.identity, {
        path: s.path,
        switches: s.switchTotal,
        rttMs: s.path === 'direct' || s.path === 'local' ? s.rttMs : undefined,
        relayedBytes: s.relayedBytes,
        relay: s.relay ? text(s.relay.at) : undefined,
        relayBound: s.relay?.bound,
        candidates: s.candidates.length,
      })
    return m
  }
}
