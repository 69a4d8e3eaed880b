/**
 * Several whole agents in one process, without root: each Agent is the real class with its real workers,
 * handshake pool, control socket and timers, wired through AgentDeps to
 *  - memory devices on one MemoryNet (its UDP port is an address on the wire; its TUN a pair of queues),
 *  - a MemoryOsNetwork of its own (routes, rules and iptables as data, every change recorded),
 *  - one OffsetClock shared by all (advance() moves time for control and workers alike).
 * Profiles are written and read through the real schema. Packets are built here and sent into an
 * agent's TUN as its OS would; what an agent writes to its TUN is read back with `fromTun`.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Agent } from '../../src/agent/agent.js'
import { memoryDevices } from '../../src/agent/devices.js'
import type { LineSink } from '../../src/log/logger.js'
import type { StatusModel } from '../../src/views/status-model.js'
import { intToIp, parseIpv4 } from '../../src/common/ipv4.js'
import { writeProfile } from '../../src/config/profile.js'
import { identityFromPublicKey, virtualAddressFromPublicKey } from '../../src/config/identity.js'
import { generatePrivateKey, publicKeyFromPrivate } from '../../src/config/keys.js'
import { MemoryNet, type MemoryPort } from '../../src/io/memory-net.js'
import { MemoryOsNetwork } from '../../src/platform/memory-network.js'
import { OffsetClock } from '../../src/platform/clock.js'
import type { AgentDeps } from '../../src/agent/agent-deps.js'

export interface MeshNode {
  name: string
  dir: string
  configDir: string
  runDir: string
  profileFile: string
  privateKey: string
  publicKey: string
  identity: string
  /** Virtual address, as text and as a number. */
  va: string
  vaInt: number
  /** Underlay address on the memory wire and UDP port. */
  ip: number
  port: number
  os: MemoryOsNetwork
  log: string[]
  agent?: Agent
  dev?: MemoryPort
}

let meshCount = 0

export class Mesh {
  readonly net = new MemoryNet()
  readonly clock = new OffsetClock()
  readonly dir: string
  readonly nodes: MeshNode[] = []
  private nextIp = parseIpv4('198.18.0.1') as number

  constructor(name = 'mesh') {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-${name}-${process.pid}-${meshCount++}-`))
  }

  /** A node with fresh keys and a profile (no peers; `extra` merged in). */
  node(name: string, extra: Record<string, unknown> = {}): MeshNode {
    const sk = generatePrivateKey()
    const pk = publicKeyFromPrivate(sk)
    const dir = path.join(this.dir, name)
    const vaInt = virtualAddressFromPublicKey(pk)
    const n: MeshNode = {
      name,
      dir,
      configDir: dir,
      runDir: path.join(dir, 'run'),
      profileFile: path.join(dir, 'profiles', 'Universe.profile'),
      privateKey: sk.toString('base64'),
      publicKey: pk.toString('base64'),
      identity: identityFromPublicKey(pk),
      va: intToIp(vaInt),
      vaInt,
      ip: this.nextIp++,
      port: 51820,
      os: new MemoryOsNetwork(),
      log: [],
    }
    this.writeProfile(n, extra)
    this.nodes.push(n)
    return n
  }

  /** The node's underlay endpoint as a profile writes it. */
  endpoint(n: MeshNode): string {
    return `${intToIp(n.ip)}:${n.port}`
  }

  /** A Peers entry for `n` (extra keys merged in). */
  peer(n: MeshNode, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { PublicKey: n.publicKey, Description: n.name, ...extra }
  }

  /** (Re)writes the node's profile through the real schema: its key and port, `extra` merged in. */
  writeProfile(n: MeshNode, extra: Record<string, unknown>): void {
    writeProfile(n.profileFile, { PrivateKey: n.privateKey, LocalPort: n.port, Peers: [], ExitNode: {}, ...extra })
  }

  /**
   * A laptop (tag laptops) and a server (tag servers) with Policies that let laptops start `acls` to
   * servers, written into both profiles. `server(o)` rewrites the server's profile: the laptop untagged
   * (`tagged: false`) or other Acls; the laptop keeps its own profile.
   */
  laptopAndServer(acls: unknown[] = [{ Protocol: 'Udp', Ports: '7' }], description?: string) {
    const a = this.node('laptop')
    const b = this.node('server')
    const policies = (list: unknown[]) => [
      { ...(description ? { Description: description } : {}), SenderTags: ['laptops'], ReceiverTags: ['servers'], Acls: list },
    ]
    this.writeProfile(a, {
      Tags: ['laptops'],
      Policies: policies(acls),
      Peers: [this.peer(b, { Endpoint: this.endpoint(b), Tags: ['servers'] })],
    })
    const server = (o: { tagged?: boolean; acls?: unknown[] } = {}) =>
      this.writeProfile(b, {
        Tags: ['servers'],
        Policies: policies(o.acls ?? acls),
        Peers: [this.peer(a, o.tagged === false ? {} : { Tags: ['laptops'] })],
      })
    server()
    return { a, b, server }
  }

  /** Builds the node's Agent over the memory wire (not started). */
  agent(n: MeshNode, opts: { workers?: number; verbosity?: number; deps?: Partial<AgentDeps>; hubBackoffMs?: number } = {}): Agent {
    const open = memoryDevices(this.net, n.ip)
    const out: LineSink = {
      write(line: string) {
        n.log.push(line)
        if (n.log.length > 20_000) n.log.splice(0, 5_000)
      },
    }
    const agent = new Agent(
      {
        configDir: n.configDir,
        runDir: n.runDir,
        stateDir: path.join(n.dir, 'state'),
        hubBackoffMs: opts.hubBackoffMs ?? 500,
        verbosity: opts.verbosity ?? 3,
        workers: opts.workers ?? 2,
      },
      {
        clock: this.clock,
        os: n.os,
        openDevices: async (p, q, o, d) => {
          const set = await open(p, q, o, d)
          n.dev = open.port
          return set
        },
        resolve: async (host) => {
          throw new Error(`no DNS on the memory network (${host})`)
        },
        requireRoot: false,
        testHooks: true,
        logOut: out,
        ...opts.deps,
      },
    )
    return agent
  }

  /** Builds and starts the node's Agent. */
  async start(
    n: MeshNode,
    opts: { workers?: number; verbosity?: number; deps?: Partial<AgentDeps>; hubBackoffMs?: number } = {},
  ): Promise<Agent> {
    const a = this.agent(n, opts)
    await a.start()
    n.agent = a
    return a
  }

  /** Stops every agent, the wire, and removes the directory. */
  async close(): Promise<void> {
    for (const n of this.nodes) await n.agent?.stop('test teardown').catch(() => undefined)
    await this.net.close()
    fs.rmSync(this.dir, { recursive: true, force: true })
  }

  /** The node's status model (the same object the control socket serves). */
  status(n: MeshNode): StatusModel {
    if (!n.agent) throw new Error(`${n.name} is not running`)
    return n.agent.status()
  }

  /** The status of `n`'s peer `of` (by identity). */
  peerStatus(n: MeshNode, of: MeshNode): StatusModel['peers'][number] {
    const p = this.status(n).peers.find((x) => x.identity === of.identity)
    if (!p) throw new Error(`${n.name} has no peer ${of.name}`)
    return p
  }

  /** Waits until the wire and every agent's queues are empty (what was sent has been taken). */
  async settle(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      this.net.pump()
      if (this.net.idle()) {
        await new Promise((r) => setTimeout(r, 2))
        this.net.pump()
        if (this.net.idle()) return
      }
      if (Date.now() > deadline) throw new Error('the memory network did not settle')
      await new Promise((r) => setTimeout(r, 1))
    }
  }

  /** Moves time forward `ms` in steps of `stepMs`, letting the network settle after each step. */
  async advance(ms: number, stepMs = 1000): Promise<void> {
    for (let left = ms; left > 0; left -= stepMs) {
      await this.clock.advance(Math.min(stepMs, left))
      await this.settle()
    }
  }

  /** Resolves when `cond()` is true, polling every few ms; rejects with `what` after timeoutMs (real time). */
  async until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  /**
   * Sends a UDP packet from `from`'s OS into its TUN (source: its virtual address unless given) and
   * resolves with the packet `to`'s agent writes to its TUN for it, or undefined after timeoutMs.
   */
  async udp(
    from: MeshNode,
    to: MeshNode | string,
    opts: { src?: string; sport?: number; dport?: number; payload?: string; timeoutMs?: number } = {},
    receiver?: MeshNode,
  ): Promise<Uint8Array | undefined> {
    const dst = typeof to === 'string' ? to : to.va
    const rx = receiver ?? (typeof to === 'string' ? undefined : to)
    const payload = Buffer.from(opts.payload ?? `hello ${Math.random()}`)
    const pkt = udpPacket(opts.src ?? from.va, dst, opts.sport ?? 40000, opts.dport ?? 7, payload)
    if (!from.dev?.sendToTun(pkt)) throw new Error(`${from.name}'s TUN queue is full or it is not running`)
    if (!rx?.dev) return undefined
    return rx.dev.nextFromTun((p) => samePayload(p, payload), opts.timeoutMs ?? 3000)
  }
}

/** Whether `p` is an IPv4/UDP packet carrying `payload`. */
export function samePayload(p: Uint8Array, payload: Uint8Array): boolean {
  if (p.length < 28 || p[9] !== 17) return false
  const ihl = (p[0] & 15) * 4
  const body = p.subarray(ihl + 8)
  return Buffer.compare(Buffer.from(body.subarray(0, payload.length)), Buffer.from(payload)) === 0 && body.length >= payload.length
}

function checksum(b: Uint8Array, off: number, len: number): number {
  let s = 0
  for (let i = 0; i < len; i += 2) s += (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0)
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16)
  return ~s & 0xffff
}

/** An IPv4/UDP packet (IP checksum set, UDP checksum 0 = none, as IPv4 allows). */
export function udpPacket(src: string, dst: string, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const len = 28 + payload.length
  const p = new Uint8Array(len)
  const s = parseIpv4(src) as number
  const d = parseIpv4(dst) as number
  p[0] = 0x45
  p[2] = len >> 8
  p[3] = len & 255
  p[8] = 64
  p[9] = 17
  for (let i = 0; i < 4; i++) {
    p[12 + i] = (s >>> (24 - 8 * i)) & 255
    p[16 + i] = (d >>> (24 - 8 * i)) & 255
  }
  const c = checksum(p, 0, 20)
  p[10] = c >> 8
  p[11] = c & 255
  p[20] = sport >> 8
  p[21] = sport & 255
  p[22] = dport >> 8
  p[23] = dport & 255
  p[24] = (8 + payload.length) >> 8
  p[25] = (8 + payload.length) & 255
  p.set(payload, 28)
  return p
}

/** Source and destination of an IPv4 packet, as text. */
export function addrs(p: Uint8Array): { src: string; dst: string } {
  return { src: `${p[12]}.${p[13]}.${p[14]}.${p[15]}`, dst: `${p[16]}.${p[17]}.${p[18]}.${p[19]}` }
}

/** An IPv4 ICMP echo request (type 8) or reply (type 0), checksums set. */
export function icmpEcho(src: string, dst: string, type: 0 | 8, id: number, seq: number, payload = new Uint8Array(32)): Uint8Array {
  const len = 28 + payload.length
  const p = udpPacket(src, dst, 0, 0, payload)
  p[9] = 1
  p[10] = 0
  p[11] = 0
  const c = checksum(p, 0, 20)
  p[10] = c >> 8
  p[11] = c & 255
  p[20] = type
  p[21] = 0
  p[22] = 0
  p[23] = 0
  p[24] = id >> 8
  p[25] = id & 255
  p[26] = seq >> 8
  p[27] = seq & 255
  const ic = checksum(p, 20, len - 20)
  p[22] = ic >> 8
  p[23] = ic & 255
  return p
}

/** The key=value fields of a logfmt line. */
export function logFields(line: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const m of line.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)) out[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2]
  return out
}

export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const

/** An IPv4/TCP segment with the given flags (IP checksum set; the TCP checksum is not checked in memory). */
export function tcpPacket(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const u = udpPacket(src, dst, sport, dport, new Uint8Array(12 + payload.length))
  const p = new Uint8Array(40 + payload.length)
  p.set(u.subarray(0, 20))
  const len = p.length
  p[2] = len >> 8
  p[3] = len & 255
  p[9] = 6
  p[10] = 0
  p[11] = 0
  const c = checksum(p, 0, 20)
  p[10] = c >> 8
  p[11] = c & 255
  p[20] = sport >> 8
  p[21] = sport & 255
  p[22] = dport >> 8
  p[23] = dport & 255
  p[32] = 5 << 4 // data offset: 20 bytes
  p[33] = flags
  p[34] = 0xff // window
  p.set(payload, 40)
  return p
}

/** Whether `p` is a TCP segment from `sport` to `dport` carrying `payload`. */
export function tcpCarries(p: Uint8Array, sport: number, dport: number, payload: string): boolean {
  if (p.length < 40 || p[9] !== 6) return false
  const ihl = (p[0] & 15) * 4
  const off = ihl + (p[ihl + 12] >> 4) * 4
  return (
    ((p[ihl] << 8) | p[ihl + 1]) === sport &&
    ((p[ihl + 2] << 8) | p[ihl + 3]) === dport &&
    Buffer.from(p.subarray(off)).toString() === payload
  )
}
