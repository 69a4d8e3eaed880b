/**
 * The hub's UDP relay (issue 20, hub-spec §4.4): a port pair per relayed pair of systems, carrying raw
 * WireGuard datagrams between the two sources that proved they hold the pair's tokens. TURN's shape, no
 * header: each agent's endpoint for the other is simply `hub:port`, and WireGuard does the rest.
 *
 * Allocation: `allocate(pairKey, a, b)` binds two UDP sockets, one per side, and draws a random 16-byte
 * token per side; the hub gives each side its port and token over its authenticated hub connection.
 *
 * Binding: a side sends, from its WireGuard socket to its own relay port (so the NAT mapping recorded is
 * the one its WireGuard traffic uses), a bind datagram; a source the side is not bound to yet must first
 * prove it receives there (return routability): the relay answers with a cookie (a keyed hash of the
 * token and the source) that the source echoes, and only then binds it:
 *
 *   bind     0xE5 'E' 'H' 'B' ‖ token (16)              agent -> its relay port
 *   challenge 0xE5 'E' 'H' 'c' ‖ token ‖ cookie (16)    relay -> a new source
 *   confirm  0xE5 'E' 'H' 'C' ‖ token ‖ cookie (16)     that source -> relay
 *   bound   0xE5 'E' 'H' 'b' ‖ token (16)      relay -> the source of the bind (the path is open)
 *
 * The relay records the source address:port and answers `bound` to it. The token and cookie are compared
 * in constant time; a confirmed bind from a new source re-binds the side (NAT rebinding), and the old
 * source is refused from then on. Bind datagrams are never forwarded, and binds from one of the relay's
 * own ports (on loopback or the relay's bind address, where it can tell) are refused: no loops between
 * pairs.
 *
 * Forwarding: a datagram that arrives on side a's port from a's bound source and looks like a WireGuard
 * message (first byte 1..4 then three zero bytes; exactly 148, 92, 64 bytes for types 1, 2, 3; at least
 * 32 for type 4) is sent out of b's port to b's bound source, and the reverse. Everything else is dropped
 * and counted by reason: another source, a side whose peer has not bound yet, a non-WireGuard datagram, a
 * bind with a wrong token, over a rate limit. The relay never sends to an address that did not bind
 * with a token, except the `bound` answer to the source that presented the token.
 *
 * Limits: token buckets per pair (bytes/s and packets/s, both directions together) and for the whole
 * relay; over either, the datagram is dropped and counted. A pair with no forwarded datagram and no bind
 * for the idle timeout (default 120 s) is released; datagrams from strangers do not keep it alive. At
 * most `maxPairs` pairs, and `maxPerSystem` per system.
 *
 * What the relay sees: WireGuard ciphertext only (handshake messages, whose static keys and timestamps
 * are encrypted, and transport data), the agents' public addresses and ports, datagram sizes and
 * timing. It cannot read or forge traffic. What it cannot prevent: whoever sees a bind datagram on the
 * path learns that side's token and can re-bind the side to itself (the same observer could drop the
 * traffic anyway; WireGuard keeps the content safe and the agents fall back to another path), and an
 * off-path sender that spoofs a bound source address can spend the pair's rate budget with datagrams
 * WireGuard will reject. Binding proves the token and, by the cookie, that the source receives there: a
 * system that holds a token and spoofs its source address cannot bind its side to a third party's address
 * (test/unit/paths-security.test.ts R1), unless it also sees what is sent to that address.
 */
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import dns from 'node:dns'
import { EventEmitter } from 'node:events'
import net from 'node:net'
import type { AgentLogger as Logger } from '../log/logger.js'

export * from '../protocol/relay-msg.js'
import {
  RELAY_BIND_MAGIC,
  RELAY_BIND_SIZE,
  RELAY_CONFIRM_MAGIC,
  RELAY_CONFIRM_SIZE,
  RELAY_TOKEN_BYTES,
  looksLikeWireGuard,
  relayBoundDatagram,
  relayChallengeDatagram,
  relayCookie,
} from '../protocol/relay-msg.js'

export type RelayDropReason = 'stranger' | 'peerUnbound' | 'notWireGuard' | 'badToken' | 'loop' | 'pairLimit' | 'hubLimit' | 'sendError'

export interface RelayDrops {
  /** From a source that is not the side's bound one (and not a bind). */
  stranger: number
  /** From the bound source, but the other side has not bound yet. */
  peerUnbound: number
  /** From the bound source, not shaped like a WireGuard message. */
  notWireGuard: number
  /** A bind datagram with the wrong token. */
  badToken: number
  /** A bind from one of the relay's own ports. */
  loop: number
  /** Over the pair's bytes or packets bucket. */
  pairLimit: number
  /** Over the relay-wide bucket. */
  hubLimit: number
  /** The kernel refused to send it. */
  sendError: number
}

const zeroDrops = (): RelayDrops => ({
  stranger: 0,
  peerUnbound: 0,
  notWireGuard: 0,
  badToken: 0,
  loop: 0,
  pairLimit: 0,
  hubLimit: 0,
  sendError: 0,
})

export interface RelaySideGrant {
  port: number
  /** 16 random bytes, hex: the side's bind datagram carries them. */
  token: string
}

export type RelayAllocation = Record<string, RelaySideGrant>

export interface RelayPairStats {
  pairKey: string
  a: string
  b: string
  ports: [number, number]
  /** Bound source per side, "ip:port", or null before its bind. */
  bound: [string | null, string | null]
  /** Forwarded from a to b, and from b to a. */
  packets: [number, number]
  bytes: [number, number]
  /** Binds accepted per side (the first and each re-bind or refresh). */
  binds: [number, number]
  dropped: RelayDrops
  createdMs: number
  lastActiveMs: number
}

export interface RelayStats {
  pairs: number
  packets: number
  bytes: number
  binds: number
  dropped: RelayDrops
}

export type RelayReleaseReason = 'released' | 'idle' | 'closed'

export interface UdpRelayOptions {
  log: Logger
  /** Address to bind the relay ports on (default 0.0.0.0; "localhost" means 127.0.0.1). */
  host?: string
  /** Ports to allocate from, inclusive; 0 (the default) takes ephemeral ports from the kernel. */
  ports?: { first: number; last: number } | 0
  /** Per pair, both directions together (default 125,000,000 bytes/s = 1 Gbit/s, 200,000 packets/s). */
  pairBytesPerSec?: number
  pairPacketsPerSec?: number
  /** The whole relay (default 500,000,000 bytes/s = 4 Gbit/s, 800,000 packets/s). */
  hubBytesPerSec?: number
  hubPacketsPerSec?: number
  /** Bucket depth in seconds of the rate (default 0.25). */
  burstSeconds?: number
  /** A pair with no forwarded datagram and no bind for this long is released (default 120,000 ms). */
  idleMs?: number
  /** How often idle pairs are looked for (default min(idleMs / 4, 10 s)); 0 starts no timer (call sweep()). */
  sweepMs?: number
  /** At most this many pairs (default 4096) and this many per system (default 64). */
  maxPairs?: number
  maxPerSystem?: number
  /** Socket buffer sizes (default 1 MiB; the kernel caps them at net.core.[rw]mem_max). */
  socketBufferBytes?: number
  /** Injected clock in milliseconds (default performance.now). */
  now?: () => number
}

/** One side of a pair: its socket, token and bound source. Fields are mutated in place per datagram. */
interface Side {
  identity: string
  sock: dgram.Socket
  port: number
  token: Buffer
  tokenHex: string
  /** The `bound` answer, built once. */
  ack: Buffer
  addr: string | null
  srcPort: number
  binds: number
  packets: number
  bytes: number
  peer: Side
  pair: Pair
}

interface Pair {
  key: string
  a: Side
  b: Side
  createdMs: number
  lastActive: number
  dropped: RelayDrops
  // token buckets: current level and last refill time
  bytesLevel: number
  pktsLevel: number
  refilled: number
}

/**
 * The UDP relay. Events: `bound` (pairKey, identity, "ip:port", rebind: boolean) when a side binds or
 * moves; `released` (RelayPairStats, RelayReleaseReason) when a pair goes, with its final counters.
 */
export class UdpRelay extends EventEmitter {
  private readonly pairs = new Map<string, Pair>()
  private readonly pending = new Map<string, Promise<RelayAllocation>>()
  private readonly perSystem = new Map<string, number>()
  private readonly usedPorts = new Set<number>()
  private readonly host: string
  private readonly now: () => number
  private readonly pairBytesRate: number
  private readonly pairPktsRate: number
  private readonly pairBytesCap: number
  private readonly pairPktsCap: number
  private readonly hubBytesRate: number
  private readonly hubPktsRate: number
  private readonly hubBytesCap: number
  private readonly hubPktsCap: number
  private hubBytesLevel: number
  private hubPktsLevel: number
  private hubRefilled: number
  private readonly idleMs: number
  private readonly drops = zeroDrops()
  private packets = 0
  private bytes = 0
  private binds = 0
  /** Keys the return-routability cookies (one per relay instance). */
  private readonly secret = crypto.randomBytes(32)
  private nextPort = 0
  private sweeper: NodeJS.Timeout | undefined
  private closed = false

  constructor(private readonly opts: UdpRelayOptions) {
    super()
    this.host = !opts.host ? '0.0.0.0' : opts.host === 'localhost' ? '127.0.0.1' : opts.host
    this.now = opts.now ?? (() => performance.now())
    const burst = opts.burstSeconds ?? 0.25
    this.pairBytesRate = (opts.pairBytesPerSec ?? 125_000_000) / 1000
    this.pairPktsRate = (opts.pairPacketsPerSec ?? 200_000) / 1000
    this.hubBytesRate = (opts.hubBytesPerSec ?? 500_000_000) / 1000
    this.hubPktsRate = (opts.hubPacketsPerSec ?? 800_000) / 1000
    this.pairBytesCap = Math.max(this.pairBytesRate * 1000 * burst, 65536)
    this.pairPktsCap = Math.max(this.pairPktsRate * 1000 * burst, 1)
    this.hubBytesCap = Math.max(this.hubBytesRate * 1000 * burst, 65536)
    this.hubPktsCap = Math.max(this.hubPktsRate * 1000 * burst, 1)
    this.hubBytesLevel = this.hubBytesCap
    this.hubPktsLevel = this.hubPktsCap
    this.hubRefilled = this.now()
    this.idleMs = opts.idleMs ?? 120_000
    const range = opts.ports
    if (
      range &&
      (!(range.first > 0 && range.last <= 65535 && range.first + 1 <= range.last) || !Number.isInteger(range.first + range.last))
    )
      throw new Error(`relay ports: ${range.first}-${range.last} is not a range of at least two ports within 1-65535`)
    if (range) this.nextPort = range.first
    const sweepMs = opts.sweepMs ?? Math.min(this.idleMs / 4, 10_000)
    if (sweepMs > 0) {
      this.sweeper = setInterval(() => this.sweep(), sweepMs)
      this.sweeper.unref()
    }
  }

  /**
   * The port pair and tokens for systems a and b (identities), bound on first call; the same allocation
   * for the same pairKey afterwards. Throws when over a limit or when no ports are free.
   */
  allocate(pairKey: string, a: string, b: string): Promise<RelayAllocation> {
    if (this.closed) return Promise.reject(new Error('relay closed'))
    if (a === b) return Promise.reject(new Error('relay: a pair needs two different systems'))
    const have = this.pairs.get(pairKey)
    if (have) {
      if (!samePair(have, a, b)) return Promise.reject(new Error(`relay: pair ${pairKey} belongs to other systems`))
      return Promise.resolve(grant(have))
    }
    const p = this.pending.get(pairKey)
    if (p) return p
    if (this.pairs.size + this.pending.size >= (this.opts.maxPairs ?? 4096)) return Promise.reject(new Error('relay: too many pairs'))
    const cap = this.opts.maxPerSystem ?? 64
    for (const id of [a, b])
      if ((this.perSystem.get(id) ?? 0) >= cap) return Promise.reject(new Error(`relay: system ${id} already has ${cap} relayed pairs`))
    this.countSystem(a, 1)
    this.countSystem(b, 1)
    const job = this.open(pairKey, a, b).finally(() => this.pending.delete(pairKey))
    job.catch(() => {
      this.countSystem(a, -1)
      this.countSystem(b, -1)
    })
    this.pending.set(pairKey, job)
    return job
  }

  /** Closes the pair's ports; false if there was no such pair. */
  release(pairKey: string): boolean {
    return this.drop(pairKey, 'released')
  }

  /** Relay-wide counters. */
  stats(): RelayStats {
    return { pairs: this.pairs.size, packets: this.packets, bytes: this.bytes, binds: this.binds, dropped: { ...this.drops } }
  }

  /** One pair's counters, or undefined. */
  pairStats(pairKey: string): RelayPairStats | undefined {
    const p = this.pairs.get(pairKey)
    return p && pairStats(p)
  }

  /** Every pair's counters. */
  allPairStats(): RelayPairStats[] {
    return [...this.pairs.values()].map(pairStats)
  }

  /** Releases pairs idle for the idle timeout (the timer calls this; tests call it with their clock). */
  sweep(): number {
    const now = this.now()
    let n = 0
    for (const [key, p] of this.pairs)
      if (now - p.lastActive >= this.idleMs) {
        this.drop(key, 'idle')
        n++
      }
    return n
  }

  /** Releases everything and stops the timer. */
  async close(): Promise<void> {
    this.closed = true
    if (this.sweeper) clearInterval(this.sweeper)
    await Promise.allSettled([...this.pending.values()])
    for (const key of [...this.pairs.keys()]) this.drop(key, 'closed')
  }

  private countSystem(id: string, d: number): void {
    const n = (this.perSystem.get(id) ?? 0) + d
    if (n > 0) this.perSystem.set(id, n)
    else this.perSystem.delete(id)
  }

  private async open(pairKey: string, a: string, b: string): Promise<RelayAllocation> {
    const sa = await this.bindSocket()
    let sb: { sock: dgram.Socket; port: number }
    try {
      sb = await this.bindSocket()
    } catch (e) {
      this.closeSocket(sa.sock, sa.port)
      throw e
    }
    if (this.closed) {
      this.closeSocket(sa.sock, sa.port)
      this.closeSocket(sb.sock, sb.port)
      throw new Error('relay closed')
    }
    const now = this.now()
    const pair = {
      key: pairKey,
      createdMs: now,
      lastActive: now,
      dropped: zeroDrops(),
      bytesLevel: this.pairBytesCap,
      pktsLevel: this.pairPktsCap,
      refilled: now,
    } as Pair
    const sideA = makeSide(a, sa.sock, sa.port, pair)
    const sideB = makeSide(b, sb.sock, sb.port, pair)
    sideA.peer = sideB
    sideB.peer = sideA
    pair.a = sideA
    pair.b = sideB
    sa.sock.on('message', (msg, rinfo) => this.onDatagram(sideA, msg, rinfo))
    sb.sock.on('message', (msg, rinfo) => this.onDatagram(sideB, msg, rinfo))
    this.pairs.set(pairKey, pair)
    this.opts.log.info({ pair: pairKey, a, b, ports: `${sa.port},${sb.port}` }, 'relay pair allocated')
    return grant(pair)
  }

  /** A socket on the next free port of the range (or an ephemeral one). */
  private async bindSocket(): Promise<{ sock: dgram.Socket; port: number }> {
    const range = this.opts.ports
    const tries = range ? range.last - range.first + 1 : 1
    // the sockets' lookup takes literals only (see literalLookup): a host name is resolved here, once
    const host = net.isIPv4(this.host) ? this.host : (await dns.promises.lookup(this.host, 4)).address
    for (let i = 0; i < tries; i++) {
      let port = 0
      if (range) {
        port = this.nextPort
        this.nextPort = port >= range.last ? range.first : port + 1
        if (this.usedPorts.has(port)) continue
      }
      const buf = this.opts.socketBufferBytes ?? 1 << 20
      const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: buf, sendBufferSize: buf, lookup: literalLookup })
      try {
        await new Promise<void>((resolve, reject) => {
          sock.once('error', reject)
          sock.bind(port, host, () => {
            sock.off('error', reject)
            resolve()
          })
        })
      } catch (e) {
        sock.close()
        if (range && (e as NodeJS.ErrnoException).code === 'EADDRINUSE') continue
        throw new Error(`relay: cannot bind ${host}:${port}: ${(e as Error).message}`)
      }
      const bound = sock.address().port
      this.usedPorts.add(bound)
      sock.on('error', () => this.drops.sendError++)
      return { sock, port: bound }
    }
    throw new Error(`relay: no free port in ${range ? `${range.first}-${range.last}` : 'the ephemeral range'}`)
  }

  private closeSocket(sock: dgram.Socket, port: number): void {
    this.usedPorts.delete(port)
    sock.removeAllListeners('message')
    try {
      sock.close()
    } catch {
      // already closed
    }
  }

  private drop(pairKey: string, reason: RelayReleaseReason): boolean {
    const p = this.pairs.get(pairKey)
    if (!p) return false
    this.pairs.delete(pairKey)
    this.closeSocket(p.a.sock, p.a.port)
    this.closeSocket(p.b.sock, p.b.port)
    this.countSystem(p.a.identity, -1)
    this.countSystem(p.b.identity, -1)
    const s = pairStats(p)
    this.opts.log.info(
      { pair: pairKey, reason, packets: s.packets[0] + s.packets[1], bytes: s.bytes[0] + s.bytes[1], dropped: sumDrops(s.dropped) },
      'relay pair released',
    )
    this.emit('released', s, reason)
    return true
  }

  /** The per-datagram path: no allocation of our own beyond what dgram hands us. */
  private onDatagram(side: Side, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const pair = side.pair
    if (side.addr !== null && rinfo.port === side.srcPort && rinfo.address === side.addr) {
      if (msg.length === RELAY_BIND_SIZE && msg[0] === 0xe5) {
        this.onBind(side, msg, rinfo)
        return
      }
      if (!looksLikeWireGuard(msg)) {
        pair.dropped.notWireGuard++
        this.drops.notWireGuard++
        return
      }
      const peer = side.peer
      if (peer.addr === null) {
        pair.dropped.peerUnbound++
        this.drops.peerUnbound++
        return
      }
      const n = msg.length
      const now = this.now()
      // refill both buckets, then take from both only if both allow it
      let dt = now - pair.refilled
      if (dt > 0) {
        pair.bytesLevel = Math.min(this.pairBytesCap, pair.bytesLevel + dt * this.pairBytesRate)
        pair.pktsLevel = Math.min(this.pairPktsCap, pair.pktsLevel + dt * this.pairPktsRate)
        pair.refilled = now
      }
      if (pair.bytesLevel < n || pair.pktsLevel < 1) {
        pair.dropped.pairLimit++
        this.drops.pairLimit++
        return
      }
      dt = now - this.hubRefilled
      if (dt > 0) {
        this.hubBytesLevel = Math.min(this.hubBytesCap, this.hubBytesLevel + dt * this.hubBytesRate)
        this.hubPktsLevel = Math.min(this.hubPktsCap, this.hubPktsLevel + dt * this.hubPktsRate)
        this.hubRefilled = now
      }
      if (this.hubBytesLevel < n || this.hubPktsLevel < 1) {
        pair.dropped.hubLimit++
        this.drops.hubLimit++
        return
      }
      pair.bytesLevel -= n
      pair.pktsLevel -= 1
      this.hubBytesLevel -= n
      this.hubPktsLevel -= 1
      pair.lastActive = now
      side.packets++
      side.bytes += n
      this.packets++
      this.bytes += n
      peer.sock.send(msg, peer.srcPort, peer.addr)
      return
    }
    if (msg.length === RELAY_BIND_SIZE && msg[0] === 0xe5) {
      this.onBind(side, msg, rinfo)
      return
    }
    if (msg.length === RELAY_CONFIRM_SIZE && msg[0] === 0xe5) {
      this.onConfirm(side, msg, rinfo)
      return
    }
    pair.dropped.stranger++
    this.drops.stranger++
  }

  /** The cookie a source must echo to be bound: a keyed hash of the side's token and the source. */
  private cookie(side: Side, address: string, port: number): Buffer {
    return relayCookie(this.secret, side.token, address, port)
  }

  /** A source echoed its challenge: it holds the token and receives at that address; it becomes the side's. */
  private onConfirm(side: Side, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const pair = side.pair
    let magic = true
    for (let i = 0; i < 4; i++) if (msg[i] !== RELAY_CONFIRM_MAGIC[i]) magic = false
    if (
      !magic ||
      !crypto.timingSafeEqual(msg.subarray(4, RELAY_BIND_SIZE), side.token) ||
      !crypto.timingSafeEqual(msg.subarray(RELAY_BIND_SIZE), this.cookie(side, rinfo.address, rinfo.port))
    ) {
      pair.dropped.badToken++
      this.drops.badToken++
      return
    }
    this.bindTo(side, rinfo)
  }

  private onBind(side: Side, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const pair = side.pair
    let magic = true
    for (let i = 0; i < 4; i++) if (msg[i] !== RELAY_BIND_MAGIC[i]) magic = false
    if (!magic) {
      // from the bound source: not WireGuard; from anyone else: a stranger
      const r = side.addr === rinfo.address && side.srcPort === rinfo.port ? 'notWireGuard' : 'stranger'
      pair.dropped[r]++
      this.drops[r]++
      return
    }
    if (!crypto.timingSafeEqual(msg.subarray(4, RELAY_BIND_SIZE), side.token)) {
      pair.dropped.badToken++
      this.drops.badToken++
      return
    }
    if (rinfo.family !== 'IPv4' || (this.usedPorts.has(rinfo.port) && (rinfo.address === this.host || rinfo.address.startsWith('127.')))) {
      pair.dropped.loop++
      this.drops.loop++
      return
    }
    const moved = side.addr !== rinfo.address || side.srcPort !== rinfo.port
    if (moved) {
      // A new source proves it receives there first (return routability): a token holder that spoofs its
      // source cannot point its side, and its peer's traffic, at someone else's address.
      const c = relayChallengeDatagram(side.token, this.cookie(side, rinfo.address, rinfo.port))
      side.sock.send(c, rinfo.port, rinfo.address)
      pair.lastActive = this.now()
      return
    }
    this.bindTo(side, rinfo)
  }

  private bindTo(side: Side, rinfo: dgram.RemoteInfo): void {
    const pair = side.pair
    const moved = side.addr !== rinfo.address || side.srcPort !== rinfo.port
    const rebind = moved && side.addr !== null
    if (moved) {
      side.addr = rinfo.address
      side.srcPort = rinfo.port
    }
    side.binds++
    this.binds++
    pair.lastActive = this.now()
    side.sock.send(side.ack, rinfo.port, rinfo.address)
    if (moved) {
      this.opts.log.debug({ pair: pair.key, identity: side.identity, addr: `${rinfo.address}:${rinfo.port}`, rebind }, 'relay side bound')
      this.emit('bound', pair.key, side.identity, `${rinfo.address}:${rinfo.port}`, rebind)
    }
  }
}

/** dgram's lookup for the IPv4 literals we bind and send to (bound sources): no DNS, no deferred callback per datagram. */
function literalLookup(address: string, _family: unknown, cb: (err: Error | null, address: string, family: number) => void): void {
  cb(null, address, 4)
}

function makeSide(identity: string, sock: dgram.Socket, port: number, pair: Pair): Side {
  const token = crypto.randomBytes(RELAY_TOKEN_BYTES)
  return {
    identity,
    sock,
    port,
    token,
    tokenHex: token.toString('hex'),
    ack: relayBoundDatagram(token),
    addr: null,
    srcPort: 0,
    binds: 0,
    packets: 0,
    bytes: 0,
    peer: undefined as unknown as Side,
    pair,
  }
}

function samePair(p: Pair, a: string, b: string): boolean {
  return (p.a.identity === a && p.b.identity === b) || (p.a.identity === b && p.b.identity === a)
}

function grant(p: Pair): RelayAllocation {
  return { [p.a.identity]: { port: p.a.port, token: p.a.tokenHex }, [p.b.identity]: { port: p.b.port, token: p.b.tokenHex } }
}

function pairStats(p: Pair): RelayPairStats {
  const addr = (s: Side) => (s.addr === null ? null : `${s.addr}:${s.srcPort}`)
  return {
    pairKey: p.key,
    a: p.a.identity,
    b: p.b.identity,
    ports: [p.a.port, p.b.port],
    bound: [addr(p.a), addr(p.b)],
    packets: [p.a.packets, p.b.packets],
    bytes: [p.a.bytes, p.b.bytes],
    binds: [p.a.binds, p.b.binds],
    dropped: { ...p.dropped },
    createdMs: p.createdMs,
    lastActiveMs: p.lastActive,
  }
}

function sumDrops(d: RelayDrops): number {
  let n = 0
  for (const k in d) n += d[k as RelayDropReason]
  return n
}
