/**
 * Control-plane parts wired as the agent wires them, without root, sockets or threads: datagrams
 * "sent" are recorded, the handshake pool runs in-process, the clock is a variable, the log records.
 */
import handshakeTask from '../../workers/handshake.js'
import { KeypairSlots } from '../../src/agent/peers/keypairs.js'
import type { AgentLogger } from '../../src/log/logger.js'
import { PeerMemory } from '../../src/agent/peers/peer-memory.js'
import { type PeerRuntime, PeerTable, newPeer } from '../../src/agent/peers/peer-table.js'
import type { PeerConfig } from '../../src/config/profile.js'
import { peerFixture } from './fixtures.js'
import { Sessions } from '../../src/agent/peers/sessions.js'
import { RingDispatcher } from '../../src/agent/ring-dispatch.js'
import { type HandshakeTaskRunner, Handshakes } from '../../src/agent/peers/handshakes.js'
import { createLayout, views } from '../../src/ipc/layout.js'
import { createInitiation, localStatic, peerCrypto } from '../../src/protocol/noise.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

export interface LogLine {
  level: string
  obj: Record<string, unknown>
  msg: string
}

export function recordingLog(lines: LogLine[]): AgentLogger {
  const at =
    (level: string) =>
    (obj: unknown, msg?: string): void => {
      if (typeof obj === 'string') lines.push({ level, obj: {}, msg: obj })
      else lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' })
    }
  const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'network', 'protocol']
  return Object.fromEntries(levels.map((l) => [l, at(l)])) as unknown as AgentLogger
}

export const PEER_IP = 0x7f000002
export const PEER_PORT = 51820

export function controlHarness(opts: { quarantineMs?: number; maxPeers?: number; underLoadPerS?: number } = {}) {
  const maxPeers = opts.maxPeers ?? 16
  const layout = createLayout(maxPeers, 1)
  const v = views(layout)
  const keypairs = new KeypairSlots(v, opts.quarantineMs ?? 10_000)
  const memory = new PeerMemory(v, maxPeers, 1)
  const peers = new PeerTable(maxPeers, 10_000)
  const sent: Array<{ buf: Buffer; ip: number; port: number }> = []
  const send = (buf: Uint8Array, ip: number, port: number) => {
    sent.push({ buf: Buffer.from(buf), ip, port })
  }
  const sessions = new Sessions(keypairs, memory, peers, send, 1420)
  const clock = { now: 1_000_000 }
  const lines: LogLine[] = []
  const log = recordingLog(lines)
  const me = generateKeyPair()
  const local = localStatic(me.privateKey, me.publicKey)
  const up: PeerRuntime[] = []
  const tasks = { consume: 0, respond: 0 }
  const runTask = ((task: Parameters<typeof handshakeTask>[0]) => {
    tasks[task.op]++
    return Promise.resolve(handshakeTask(task))
  }) as HandshakeTaskRunner
  const onSessionUp = (p: PeerRuntime) => {
    up.push(p)
  }
  const handshakes = new Handshakes({
    local,
    peers,
    sessions,
    keypairs,
    send,
    runTask,
    log,
    onSessionUp,
    clock: () => clock.now,
    underLoadPerS: opts.underLoadPerS,
  })
  const dispatcher = new RingDispatcher({ peers, sessions, handshakes, log, onSessionUp })
  const addPeer = (publicKey: Uint8Array, name = `peer${peers.size}`, presharedKey?: Buffer): PeerRuntime => {
    const slot = peers.takeSlot(clock.now)!
    const psk = presharedKey ? { PresharedKey: Buffer.from(presharedKey).toString('base64') } : {}
    const cfg: PeerConfig = peerFixture(publicKey, { Description: name, ...psk })
    const peer = newPeer(slot, cfg, peerCrypto(local, cfg.publicKey, presharedKey))
    memory.reset(slot)
    peer.ep.configured = { ip: PEER_IP, port: PEER_PORT }
    peers.add(peer)
    return peer
  }
  return { layout, v, keypairs, memory, peers, sessions, handshakes, dispatcher, local, me, sent, clock, lines, log, up, tasks, addPeer }
}

/** Lets pending handshake tasks (promises) finish. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
}

/** A WireGuard initiator talking to the harness's agent (noise functions, as a stock peer would). */
export function initiator(agentPublicKey: Uint8Array) {
  const keys = generateKeyPair()
  const local = localStatic(keys.privateKey, keys.publicKey)
  const crypto = peerCrypto(local, agentPublicKey)
  return { keys, local, crypto, initiation: (index: number, nowMs: number) => createInitiation(local, crypto, index, nowMs) }
}
