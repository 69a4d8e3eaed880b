/**
 * The hub link on the wire: one WebSocket per agent (path /enclave/v1/connect), binary messages
 * `type(1) ‖ body`: 0x01 Noise message 1 (agent -> hub), 0x02 message 2, 0x03 a transport message
 * (Noise ciphertext of `flags(1) ‖ JSON chunk`; flag MORE continues a message past Noise's 65,535-byte
 * limit). Messages are JSON objects with a `t` field, checked with zod on receipt; any failure closes
 * the connection.
 */
import { z } from 'zod'
import { hubDeltaSchema, hubMapSchema } from './map.js'
import type { CipherState } from './noise-ik.js'

export const HUB_PATH = '/enclave/v1/connect'
export const HUB_SUBPROTOCOL = 'enclave-hub.v1'
export const T_MSG1 = 0x01
export const T_MSG2 = 0x02
export const T_TRANSPORT = 0x03
const FLAG_MORE = 0x01
const CHUNK = 60_000
/** Largest message after reassembly. */
export const MAX_MESSAGE = 16 * 1024 * 1024
/**
 * Largest message an agent sends, before or after the handshake, as one WebSocket message and after
 * reassembly (the hub's ws maxPayload). Agents send only the handshake (the hello: at most 1,024 advertised
 * routes of 18 characters and 16 endpoints, about 23 KiB with Noise's 96 bytes), ack, resync and nat (under
 * 200 bytes); more closes the connection with 1009.
 */
export const MAX_AGENT_MESSAGE = 32 * 1024
/** Largest WebSocket message before the handshake completes: the largest hello. */
export const MAX_PREAUTH = MAX_AGENT_MESSAGE
export const HUB_PROTOCOL_VERSION = 1

export const helloSchema = z
  .object({
    t: z.literal('hello'),
    v: z.number().int(),
    /** TAI64N of the agent's clock, hex: must grow from one hello to the next (replay). */
    ts: z.string().regex(/^[0-9a-f]{24}$/),
    hostname: z.string().max(253),
    listenPort: z.number().int().min(1).max(65535),
    enrol: z.object({ key: z.string().max(64) }).optional(),
    resume: z.object({ hash: z.string().max(64) }).optional(),
    allowGateway: z.boolean(),
    acceptDefaultRoute: z.boolean(),
    advertise: z.array(z.string().max(18)).max(1024),
    endpoints: z.array(z.string().max(64)).max(16).optional(),
  })
  .passthrough()

export type Hello = z.infer<typeof helloSchema>

export const welcomeSchema = z
  .object({
    t: z.literal('welcome'),
    // Printed and written into the profile: an identity and an IPv4 address, nothing else (text from the
    // hub goes to a terminal).
    identity: z.string().regex(/^[0-9A-HJKMNP-TV-Z]{5}$/),
    address: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/),
    state: z.enum(['pending', 'approved', 'disabled']),
    enrolled: z.boolean(),
    /** How many peers the system's map has (0 while pending). */
    peers: z.number().int().min(0).optional(),
    /** Endpoint discovery (src/hubproto/reflect.ts): this connection's token and the hub's UDP ports. */
    reflect: z
      .object({ token: z.string().regex(/^[0-9a-f]{32}$/), ports: z.array(z.number().int().min(1).max(65535)).min(1).max(2) })
      .optional(),
  })
  .passthrough()

export const refusalSchema = z.object({ t: z.literal('error'), code: z.string().max(64), message: z.string().max(1000) }).passthrough()

const IPV4_PORT = /^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/

export const hubToAgentSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('map'), rev: z.number().int(), hash: z.string(), map: hubMapSchema }).passthrough(),
  z.object({ t: z.literal('delta'), rev: z.number().int(), hash: z.string(), delta: hubDeltaSchema }).passthrough(),
  z.object({ t: z.literal('state'), state: z.enum(['pending', 'approved', 'disabled', 'removed']) }).passthrough(),
  z
    .object({
      t: z.literal('reflected'),
      seq: z.number().int().min(0),
      port: z.number().int().min(1).max(65535),
      addr: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/),
    })
    .passthrough(),
  /** A relay for the path to a peer (issue 20): its UDP port on the hub's address, and this side's bind token. */
  z
    .object({
      t: z.literal('relay'),
      peer: z.string().max(16),
      port: z.number().int().min(1).max(65535),
      token: z.string().regex(/^[0-9a-f]{32}$/),
      /** The relay's IPv4 address when it is not the hub's this agent connected to (another replica's). */
      host: z
        .string()
        .regex(/^\d{1,3}(\.\d{1,3}){3}$/)
        .optional(),
    })
    .passthrough(),
  /** UDP is blocked on one side: datagrams for this peer go over the hub connection (relay-tcp). */
  z.object({ t: z.literal('relay-tcp'), peer: z.string().max(16) }).passthrough(),
  /** The hub's introduction of a peer: probe its candidates now (the peer is told the same at once). */
  z
    .object({
      t: z.literal('punch'),
      peer: z.string().max(16),
      candidates: z.array(z.string().regex(IPV4_PORT)).max(8),
      hosts: z.array(z.string().regex(IPV4_PORT)).max(8),
    })
    .passthrough(),
])

export type HubToAgent = z.infer<typeof hubToAgentSchema>

export const agentToHubSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('ack'), rev: z.number().int(), hash: z.string().optional() }).passthrough(),
  z.object({ t: z.literal('resync') }).passthrough(),
  z.object({ t: z.literal('advertise'), routes: z.array(z.string().max(18)).max(1024) }).passthrough(),
  /** The agent's reflexive address and NAT class, after discovery: the hub makes it the endpoint peers use (none, easy). */
  z
    .object({
      t: z.literal('nat'),
      nat: z.enum(['none', 'easy', 'hard', 'blocked', 'unknown']),
      addr: z
        .string()
        .regex(/^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/)
        .optional(),
      /** Its host addresses with the WireGuard port (peers behind the same router reach it there). */
      hosts: z.array(z.string().regex(IPV4_PORT)).max(8).optional(),
    })
    .passthrough(),
  /** It has traffic for a peer and no path yet (issue 20): the hub introduces the two (relay, punch, or relay-tcp). */
  z.object({ t: z.literal('path'), peer: z.string().max(16) }).passthrough(),
])

export type AgentToHub = z.infer<typeof agentToHubSchema>

/** Encrypts one JSON message into one or more WebSocket messages. */
export function sealMessage(send: CipherState, msg: unknown): Buffer[] {
  const data = Buffer.from(JSON.stringify(msg))
  const out: Buffer[] = []
  for (let o = 0; o < data.length || o === 0; o += CHUNK) {
    const part = data.subarray(o, o + CHUNK)
    const more = o + CHUNK < data.length
    const plain = Buffer.concat([Buffer.of(more ? FLAG_MORE : 0), part])
    out.push(Buffer.concat([Buffer.of(T_TRANSPORT), send.encrypt(plain)]))
    if (!more) break
  }
  return out
}

/**
 * WireGuard datagrams relayed over the hub connection (issue 20, for networks that block UDP): one
 * transport message whose plaintext is FLAG_DATAGRAM ‖ identity (5 ASCII bytes: the peer they go to,
 * agent -> hub; the peer they come from, hub -> agent) ‖ (length, u16 big-endian ‖ datagram)*: the
 * datagrams one side had ready at once travel in one message. They are WireGuard ciphertext already; the
 * hub link authenticates them as one of this connection's messages.
 */
export const FLAG_DATAGRAM = 0x02
/** The largest datagram relayed (WireGuard at the largest MTU a profile allows, 9,000, plus its overhead). */
export const MAX_RELAY_DATAGRAM = 9216
/** Bytes of datagrams (with their lengths) in one message. */
export const MAX_RELAY_BATCH = 24 * 1024

export function sealDatagrams(send: CipherState, identity: string, datagrams: readonly Uint8Array[]): Buffer {
  let n = 6
  for (const d of datagrams) n += 2 + d.length
  const plain = Buffer.allocUnsafe(n)
  plain[0] = FLAG_DATAGRAM
  plain.write(identity.padEnd(5).slice(0, 5), 1, 'latin1')
  let o = 6
  for (const d of datagrams) {
    plain.writeUInt16BE(d.length, o)
    plain.set(d, o + 2)
    o += 2 + d.length
  }
  return Buffer.concat([Buffer.of(T_TRANSPORT), send.encrypt(plain)])
}

/** What MessageReader.read returns for relayed datagrams. */
export interface RelayedDatagram {
  t: 'datagram'
  peer: string
  data: Buffer[]
  bytes: number
}

/** The datagrams of a FLAG_DATAGRAM plaintext, or null if malformed (each 32..MAX_RELAY_DATAGRAM bytes). */
function splitDatagrams(b: Buffer): Buffer[] | null {
  const out: Buffer[] = []
  let o = 6
  while (o < b.length) {
    if (o + 2 > b.length) return null
    const n = b.readUInt16BE(o)
    if (n < 32 || n > MAX_RELAY_DATAGRAM || o + 2 + n > b.length) return null
    out.push(b.subarray(o + 2, o + 2 + n))
    o += 2 + n
  }
  return out.length ? out : null
}

/** A message past the reader's limit (the hub closes the connection with 1009). */
export class MessageTooLarge extends Error {
  constructor(max: number) {
    super(`message too large (over ${max} bytes)`)
  }
}

/** Reassembles transport messages; returns the parsed JSON once complete, undefined while more is to come. */
export class MessageReader {
  private parts: Buffer[] = []
  private size = 0

  /** `max`: the largest message after reassembly (the hub reads agents with MAX_AGENT_MESSAGE). */
  constructor(
    private readonly recv: CipherState,
    private readonly max = MAX_MESSAGE,
  ) {}

  /** Throws on anything wrong (the caller closes the connection). */
  read(frame: Buffer): unknown | undefined {
    if (frame.length < 1 + 16 + 1 || frame[0] !== T_TRANSPORT) throw new Error('not a transport message')
    const plain = this.recv.decrypt(frame.subarray(1))
    if (!plain || plain.length < 1) throw new Error('a message failed authentication')
    if (plain[0] === FLAG_DATAGRAM) {
      const b = Buffer.from(plain.buffer, plain.byteOffset, plain.length)
      const data = this.parts.length || b.length > 6 + MAX_RELAY_BATCH + 2 * 64 ? null : splitDatagrams(b)
      if (!data) throw new Error('malformed relayed datagrams')
      return { t: 'datagram', peer: b.toString('latin1', 1, 6), data, bytes: b.length - 6 } satisfies RelayedDatagram
    }
    this.parts.push(Buffer.from(plain.subarray(1)))
    this.size += plain.length - 1
    if (this.size > this.max) throw new MessageTooLarge(this.max)
    if (plain[0] & FLAG_MORE) return undefined
    const text = Buffer.concat(this.parts).toString('utf8')
    this.parts = []
    this.size = 0
    return JSON.parse(text)
  }
}

/** TAI64N of `ms` with the full clock (hex, 24 digits): a hello's timestamp, which must grow from one to the next. */
export function helloTimestamp(ms: number, after = 0n): string {
  const now = BigInt(Math.floor(ms)) * 1_000_000n
  let ts = (0x400000000000000an + now / 1_000_000_000n) * 2n ** 32n + (now % 1_000_000_000n)
  if (ts <= after) ts = after + 1n
  return ts.toString(16).padStart(24, '0')
}
