/**
 * A simulated agent speaking the real hub protocol in-process: a real Noise_IK handshake over the hub's
 * WebSocket with any hello (an enrolment key, or none to reconnect), then every message the hub sends,
 * decrypted, with the time it arrived (performance.now()). No TUN, no dataplane: what an agent's control
 * connection sees, for tests of the hub and its portal. Loopback only.
 */
import WebSocket from 'ws'
import { identityFromPublicKey } from '../../src/config/identity.js'
import { decodeKey } from '../../src/config/keys.js'
import { type HubDelta, type HubMap, applyDelta } from '../../src/hubproto/map.js'
import { initiate } from '../../src/hubproto/noise-ik.js'
import { HUB_PATH, MessageReader, T_MSG1, T_MSG2, helloTimestamp, sealMessage } from '../../src/hubproto/wire.js'
import { generateKeyPair } from '../../src/protocol/primitives.js'

export interface HubAddress {
  host?: string
  port: number
  /** The hub's public key (base64), as `initHub` returns it. */
  hubKey: string
}

export type HubMessage = { t: string; [k: string]: unknown }

export interface SimAgent {
  /** The hub's answer in its handshake: a welcome, or a refusal `{t:'error', code, message}`. */
  payload: Record<string, unknown>
  identity: string
  kp: ReturnType<typeof generateKeyPair>
  ws: WebSocket
  /** Every message after the handshake, in order, with when it arrived (performance.now()). */
  received: Array<{ at: number; m: HubMessage }>
  /** How the connection closed (the hub closes a refused one with 4000 + the code's length). */
  closed: Promise<{ code: number; reason: string }>
  send(m: unknown): void
  /** The first message from `since` on (an index into `received`) that `pred` accepts, within `ms`. */
  next(pred: (m: HubMessage) => boolean, ms?: number, since?: number): Promise<{ at: number; m: HubMessage }>
  close(): void
}

/** Connects with `hello` (merged over a plain one) and returns once the hub answered the handshake. */
export async function simAgent(hub: HubAddress, hello: Record<string, unknown>, kp = generateKeyPair()): Promise<SimAgent> {
  const full = {
    t: 'hello',
    v: 1,
    ts: helloTimestamp(Date.now()),
    hostname: 'sim',
    listenPort: 51820,
    allowGateway: false,
    acceptDefaultRoute: false,
    advertise: [],
    ...hello,
  }
  const hs = initiate(kp, decodeKey(hub.hubKey) as Buffer, Buffer.from(JSON.stringify(full)))
  const ws = new WebSocket(`ws://${hub.host ?? '127.0.0.1'}:${hub.port}${HUB_PATH}`)
  const received: SimAgent['received'] = []
  const waiters = new Set<() => void>()
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
  )
  const first = await new Promise<{ payload: Record<string, unknown>; send: (m: unknown) => void }>((resolve, reject) => {
    let reader: MessageReader | null = null
    ws.on('open', () => ws.send(Buffer.concat([Buffer.of(T_MSG1), hs.message1])))
    ws.on('error', reject)
    ws.on('close', (code: number) => reject(new Error(`closed ${code} before the handshake answer`)))
    ws.on('message', (data: Buffer) => {
      if (!reader) {
        if (data[0] !== T_MSG2) return reject(new Error('the hub answered without a handshake message'))
        const got = hs.readMessage2(data.subarray(1))
        if (!got) return reject(new Error("the hub's handshake answer failed authentication"))
        reader = new MessageReader(got.transport.recv)
        const send = (m: unknown) => {
          for (const f of sealMessage(got.transport.send, m)) ws.send(f)
        }
        resolve({ payload: JSON.parse(Buffer.from(got.payload).toString('utf8')), send })
        return
      }
      const m = reader.read(data)
      if (m !== undefined && typeof m === 'object') {
        received.push({ at: performance.now(), m: m as HubMessage })
        for (const w of waiters) w()
      }
    })
  })
  const next: SimAgent['next'] = (pred, ms = 5000, since = 0) =>
    new Promise((resolve, reject) => {
      const check = () => {
        for (let i = since; i < received.length; i++)
          if (pred(received[i].m)) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(received[i])
            return true
          }
        return false
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`no such hub message within ${ms} ms (got: ${received.map((r) => r.m.t).join(', ') || 'none'})`))
      }, ms)
      if (!check()) waiters.add(check)
    })
  return {
    ...first,
    identity: identityFromPublicKey(kp.publicKey),
    kp,
    ws,
    received,
    closed,
    next,
    close: () => ws.terminate(),
  }
}

/** The map the agent now holds: the last full map with the deltas after it applied (null before any). */
export function mapHeld(received: SimAgent['received']): HubMap | null {
  let map: HubMap | null = null
  for (const { m } of received) {
    if (m.t === 'map') map = m.map as HubMap
    else if (m.t === 'delta' && map) map = applyDelta(map, m.delta as HubDelta)
  }
  return map
}
