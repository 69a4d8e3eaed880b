/**
 * Answers stock wireguard-go's handshake with our protocol code, inside a test namespace, and reports
 * what it saw (test/netns/handshake-wireguard-go.test.ts makes the assertions).
 * argv: <listen port> <responder private key hex> <initiator public key hex> <psk hex> <ephemeral private hex>
 *       <cookie secret hex> <cookie nonce hex>
 * Listens on 127.0.0.1, prints {"ready":true}, then:
 *   1. takes wireguard-go's first initiation and answers it with a cookie reply (fixed secret and nonce);
 *   2. takes its retry, checks the retry's mac2 against that cookie and answers with a response built
 *      with the fixed ephemeral key;
 *   3. opens transport messages from wireguard-go with the derived keys (its confirming keepalive first),
 *      sends an ICMP echo request through the tunnel sealed with our send key and waits for the reply.
 * Prints one JSON line {"report": ...}, or {"error": ..., "report": what it saw so far} and exits 1.
 */
import dgram from 'node:dgram'
import {
  acceptInitiation,
  checkMac1,
  checkMac2,
  consumeInitiation,
  createCookieReply,
  createResponse,
  localStatic,
  peerCrypto,
} from '../../src/protocol/noise.js'
import { publicKeyFromPrivate } from '../../src/config/keys.js'
import { AEAD_OPEN, tai64n } from '../../src/protocol/primitives.js'
import { KEY_BYTES_PER_SLOT, K_FIELDS, K_INDEX, K_REMOTE, K_SEND_CTR, K_STATE, KP_VALID } from '../../src/ipc/layout.js'
import { sealPacket } from '../../src/dataplane/transport.js'

const [portS, skHex, peerPkHex, pskHex, ephHex, secretHex, nonceHex] = process.argv.slice(2)
const bin = (h: string) => Buffer.from(h, 'hex')
const hex = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('hex')
const sk = bin(skHex)
const me = localStatic(sk, publicKeyFromPrivate(sk))
const peer = peerCrypto(me, bin(peerPkHex), bin(pskHex))
const cc = { secret: bin(secretHex), secretMs: Date.now() }
const OUR_INDEX = 0x1badb002
const TUNNEL_SRC = [10, 99, 0, 2]
const TUNNEL_DST = [10, 99, 0, 1]

const sock = dgram.createSocket('udp4')
const queue: { msg: Buffer; address: string; port: number }[] = []
let wake: (() => void) | undefined
sock.on('message', (msg, r) => {
  queue.push({ msg, address: r.address, port: r.port })
  wake?.()
})

async function next(type: number, what: string) {
  const deadline = Date.now() + 20_000
  for (;;) {
    const i = queue.findIndex((d) => d.msg[0] === type)
    if (i >= 0) return queue.splice(i, 1)[0]
    if (Date.now() > deadline) throw new Error(`no ${what} from wireguard-go within 20 s`)
    await new Promise<void>((r) => {
      wake = r
      setTimeout(r, 500)
    })
  }
}

function ipToInt(a: string): number {
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0)
}

function checksum(b: Uint8Array): number {
  let s = 0
  for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] ?? 0)
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16)
  return ~s & 0xffff
}

/** An IPv4 ICMP echo request from our tunnel address to wireguard-go's. */
function echoRequest(id: number, seq: number, data: Buffer): Buffer {
  const icmp = Buffer.alloc(8 + data.length)
  icmp[0] = 8
  icmp.writeUInt16BE(id, 4)
  icmp.writeUInt16BE(seq, 6)
  data.copy(icmp, 8)
  icmp.writeUInt16BE(checksum(icmp), 2)
  const ip = Buffer.alloc(20)
  ip[0] = 0x45
  ip.writeUInt16BE(20 + icmp.length, 2)
  ip[8] = 64
  ip[9] = 1
  ip.set(TUNNEL_SRC, 12)
  ip.set(TUNNEL_DST, 16)
  ip.writeUInt16BE(checksum(ip), 10)
  return Buffer.concat([ip, icmp])
}

const report: Record<string, unknown> = {}

async function main() {
  await new Promise<void>((r) => sock.bind(Number(portS), '127.0.0.1', r))
  console.log(JSON.stringify({ ready: true }))
  const staticStaticFor = (pk: Uint8Array) => (hex(pk) === peerPkHex ? peer.staticStatic : undefined)

  // 1. The first initiation: read it, then ask for a cookie.
  const first = await next(1, 'initiation')
  const firstNow = Date.now()
  const ci1 = consumeInitiation(me, first.msg, staticStaticFor, firstNow)
  report.first = {
    length: first.msg.length,
    from: `${first.address}:${first.port}`,
    mac1: checkMac1(me, first.msg),
    mac2: hex(first.msg.subarray(132)),
    static: ci1 ? hex(ci1.peerPublicKey) : null,
    timestamp: ci1 ? hex(ci1.timestamp) : null,
    ourTimestampNow: hex(tai64n(firstNow)),
  }
  const srcIp = ipToInt(first.address)
  sock.send(createCookieReply(me, cc, first.msg, srcIp, first.port, firstNow, bin(nonceHex)), first.port, first.address)

  // 2. The retry carries mac2 made with our cookie; answer it.
  const retry = await next(1, 'initiation after the cookie reply')
  const now = Date.now()
  const ci2 = consumeInitiation(me, retry.msg, staticStaticFor, now)
  report.retry = {
    mac1: checkMac1(me, retry.msg),
    mac2: checkMac2(cc, retry.msg, ipToInt(retry.address), retry.port, now),
    static: ci2 ? hex(ci2.peerPublicKey) : null,
    accepted: ci2 ? acceptInitiation(peer, ci2, now, 0) : null,
  }
  if (!ci2) throw new Error(`retry did not authenticate: ${JSON.stringify(report)}`)
  const { msg: response, keys } = createResponse(peer, OUR_INDEX, now, bin(ephHex))
  report.response = hex(response)
  report.responderIndexInResponse = response.readUInt32LE(4)
  sock.send(response, retry.port, retry.address)

  // 3. Transport: wireguard-go confirms with a keepalive, then answers our ping through the tunnel.
  const open = (msg: Buffer) => {
    const counter = Number(msg.readBigUInt64LE(8))
    const plain = AEAD_OPEN(keys.recvKey, counter, msg.subarray(16), new Uint8Array(0))
    return { receiver: msg.readUInt32LE(4), counter, plain }
  }
  const ka = open((await next(4, 'keepalive')).msg)
  report.keepalive = { receiver: ka.receiver, counter: ka.counter, opened: ka.plain !== null, length: ka.plain?.length ?? null }

  const kpI32 = new Int32Array(K_FIELDS)
  const kpKeys = new Uint8Array(KEY_BYTES_PER_SLOT)
  kpI32[K_STATE] = KP_VALID
  kpI32[K_INDEX] = OUR_INDEX
  kpI32[K_REMOTE] = keys.remoteIndex | 0
  kpI32[K_SEND_CTR] = 0
  kpKeys.set(keys.sendKey, 0)
  const data = Buffer.from('enclave known-answer ping')
  const ping = sealPacket(kpI32, kpKeys, 0, echoRequest(0x4b41, 1, data), 1420)
  if (typeof ping === 'number') throw new Error(`sealPacket failed: ${ping}`)
  sock.send(ping, retry.port, retry.address)
  let unopened = 0
  for (let n = 0; n < 20; n++) {
    const t = open((await next(4, 'echo reply')).msg)
    if (!t.plain) unopened++
    if (!t.plain || t.plain.length === 0) continue // a keepalive, or one we could not open
    const p = t.plain
    report.echoReply = {
      opened: true,
      src: Array.from(p.subarray(12, 16)).join('.'),
      dst: Array.from(p.subarray(16, 20)).join('.'),
      icmpType: p[20],
      id: p.readUInt16BE(24),
      seq: p.readUInt16BE(26),
      data: p.subarray(28, 28 + data.length).toString(),
    }
    break
  }
  report.unopened = unopened
}

main()
  .then(() => console.log(JSON.stringify({ report })))
  .catch((e) => {
    console.log(JSON.stringify({ error: String(e?.message ?? e), report }))
    process.exitCode = 1
  })
  .finally(() => sock.close())
