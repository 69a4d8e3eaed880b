/**
 * Sends random and mutated datagrams at an agent (run inside a test namespace).
 * argv: <dst ip> <dst port> <count> <initiator private key b64> <responder public key b64>
 * Mutations start from real handshake initiations made with a key the target knows, so they
 * reach deep into the handshake code, plus random transport headers and random junk.
 */
import { native } from '../../src/native/io.js'
import { createInitiation, localStatic, peerCrypto } from '../../src/protocol/noise.js'
import { publicKeyFromPrivate } from '../../src/control/keys.js'
import { parseIpv4 } from '../../src/common/ipv4.js'
import sodium from 'sodium-native'

const [dstS, portS, countS, skB64, peerPkB64] = process.argv.slice(2)
const dst = parseIpv4(dstS) as number
const port = Number(portS)
const count = Number(countS)
const sk = Buffer.from(skB64, 'base64')
const me = localStatic(sk, publicKeyFromPrivate(sk))
const peer = peerCrypto(me, Buffer.from(peerPkB64, 'base64'))
const seeds = Array.from({ length: 16 }, (_, i) => createInitiation(me, peer, i + 1, Date.now() - 3_600_000 + i))

const SLOT = 2048
const B = 64
const slab = new Uint8Array(SLOT * B)
const lens = new Int32Array(B)
const addrs = new Uint32Array(2 * B)
const rnd = Buffer.alloc(4096)
const fd = native.udpOpen(0, 0, false, 0, 1 << 22, 0)
let sent = 0
while (sent < count) {
  sodium.randombytes_buf(rnd)
  let r = 0
  for (let i = 0; i < B; i++) {
    const o = i * SLOT
    const kind = rnd[r++ % 4096] % 4
    let len: number
    if (kind === 0) {
      // mutated initiation: flip 1-4 bytes, sometimes truncate or extend
      const s = seeds[rnd[r++ % 4096] % seeds.length]
      slab.set(s, o)
      len = s.length
      const flips = 1 + (rnd[r++ % 4096] % 4)
      for (let f = 0; f < flips; f++) slab[o + (rnd[r++ % 4096] % len)] ^= 1 << (rnd[r++ % 4096] % 8)
      const sz = rnd[r++ % 4096]
      if (sz < 20) len = sz % len
      else if (sz > 240) len += sz % 64
    } else if (kind === 1) {
      // transport header with random index/counter and random payload
      len = 32 + (rnd[r++ % 4096] % 1400)
      for (let j = 0; j < len; j++) slab[o + j] = rnd[(r + j) % 4096]
      r += len
      slab[o] = 4
      slab[o + 1] = 0
      slab[o + 2] = 0
      slab[o + 3] = 0
    } else if (kind === 2) {
      // response / cookie sized messages with random contents
      len = rnd[r++ % 4096] % 2 ? 92 : 64
      for (let j = 0; j < len; j++) slab[o + j] = rnd[(r + j) % 4096]
      r += len
      slab[o] = len === 92 ? 2 : 3
      slab[o + 1] = 0
      slab[o + 2] = 0
      slab[o + 3] = 0
    } else {
      len = rnd[r++ % 4096] % 200
      for (let j = 0; j < len; j++) slab[o + j] = rnd[(r + j) % 4096]
      r += len
    }
    lens[i] = len === 0 ? 1 : len
    addrs[2 * i] = dst
    addrs[2 * i + 1] = port
  }
  const n = native.sendBatch(fd, slab, SLOT, 0, lens, addrs, B)
  sent += Math.max(n, 0)
  if (n <= 0) await new Promise((res) => setTimeout(res, 1))
}
console.log(JSON.stringify({ sent }))
