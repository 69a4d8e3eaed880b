/**
 * Sends random, structured and mutated datagrams at an agent (run inside a test namespace).
 * argv: <dst ip> <dst port> <count> <initiator private key b64> <responder public key b64> [captured.json]
 * captured.json (from sniff-transport.py): live receiver indexes and real transport packets seen on the wire.
 * Kinds, in equal shares: mutated real initiations (made with a key the target knows, so they reach deep into
 * the handshake code); truncated and oversized initiations and responses; valid type bytes with random bodies
 * of any length; transport headers with a live receiver index and random counter and body; real captured
 * transport packets replayed as they are and with bits flipped; random transport headers; random junk.
 * Prints one JSON line: datagrams sent, seconds, and the count per kind.
 */
import { native } from '../../src/native/io.js'
import { createInitiation, localStatic, peerCrypto } from '../../src/protocol/noise.js'
import { publicKeyFromPrivate } from '../../src/config/keys.js'
import { parseIpv4 } from '../../src/common/ipv4.js'
import fs from 'node:fs'
import sodium from 'sodium-native'

const [dstS, portS, countS, skB64, peerPkB64, capturedFile] = process.argv.slice(2)
const dst = parseIpv4(dstS) as number
const port = Number(portS)
const count = Number(countS)
const sk = Buffer.from(skB64, 'base64')
const me = localStatic(sk, publicKeyFromPrivate(sk))
const peer = peerCrypto(me, Buffer.from(peerPkB64, 'base64'))
const seeds = Array.from({ length: 16 }, (_, i) => createInitiation(me, peer, i + 1, Date.now() - 3_600_000 + i))
const captured: { indexes: number[]; packets: string[] } = capturedFile
  ? JSON.parse(fs.readFileSync(capturedFile, 'utf8'))
  : { indexes: [], packets: [] }
const live = captured.indexes
const real = captured.packets.map((h) => Buffer.from(h, 'hex'))
const KINDS = [
  'mutated_init',
  'truncated_or_oversized_handshake',
  'type_random_body',
  'live_index_transport',
  'replayed_real',
  'flipped_real',
  'random_transport',
  'junk',
]
const perKind = new Array(KINDS.length).fill(0)
const started = Date.now()

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
    let kind = rnd[r++ % 4096] % KINDS.length
    if ((kind === 3 && live.length === 0) || ((kind === 4 || kind === 5) && real.length === 0)) kind = 6
    perKind[kind]++
    let len: number
    const fill = (from: number, to: number) => {
      for (let j = from; j < to; j++) slab[o + j] = rnd[(r + j) % 4096]
      r += to - from
    }
    const putIndex = (at: number, v: number) => {
      slab[o + at] = v & 0xff
      slab[o + at + 1] = (v >>> 8) & 0xff
      slab[o + at + 2] = (v >>> 16) & 0xff
      slab[o + at + 3] = (v >>> 24) & 0xff
    }
    if (kind === 0) {
      // mutated initiation: flip 1-4 bits, sometimes truncate or extend
      const s = seeds[rnd[r++ % 4096] % seeds.length]
      slab.set(s, o)
      len = s.length
      const flips = 1 + (rnd[r++ % 4096] % 4)
      for (let f = 0; f < flips; f++) slab[o + (rnd[r++ % 4096] % len)] ^= 1 << (rnd[r++ % 4096] % 8)
      const sz = rnd[r++ % 4096]
      if (sz < 20) len = sz % len
      else if (sz > 240) len += sz % 64
    } else if (kind === 1) {
      // a real initiation (valid mac1) cut short or padded out, or a response / cookie reply of the wrong size
      const which = rnd[r++ % 4096] % 3
      const cut = (rnd[r++ % 4096] | (rnd[r++ % 4096] << 8)) % 1400
      if (which === 0) {
        const s = seeds[rnd[r++ % 4096] % seeds.length]
        slab.set(s, o)
        len = cut < 700 ? 1 + (cut % (s.length - 1)) : s.length + 1 + (cut % 1200)
        if (len > s.length) fill(s.length, len)
      } else {
        len = which === 1 ? (cut < 700 ? 1 + (cut % 91) : 93 + cut) : cut < 700 ? 1 + (cut % 63) : 65 + cut
        fill(0, len)
        slab[o] = which === 1 ? 2 : 3
        if (len > 4) slab.fill(0, o + 1, o + 4)
        if (live.length && len >= 12) putIndex(which === 1 ? 8 : 4, live[rnd[r++ % 4096] % live.length])
      }
    } else if (kind === 2) {
      // a valid type byte (1-4) and reserved zeros, then a random body of any length
      len = 4 + ((rnd[r++ % 4096] | (rnd[r++ % 4096] << 8)) % 1500)
      fill(0, len)
      slab[o] = 1 + (rnd[r++ % 4096] % 4)
      slab.fill(0, o + 1, o + 4)
    } else if (kind === 3) {
      // transport header with a live receiver index, random counter (sometimes small), random body
      len = 32 + (rnd[r++ % 4096] % 1400)
      fill(0, len)
      slab[o] = 4
      slab.fill(0, o + 1, o + 4)
      putIndex(4, live[rnd[r++ % 4096] % live.length])
      if (rnd[r++ % 4096] & 1) slab.fill(0, o + 9, o + 16)
    } else if (kind === 4 || kind === 5) {
      // a real transport packet seen on the wire, replayed (the replay window must refuse it) or with bits flipped
      const p = real[rnd[r++ % 4096] % real.length]
      slab.set(p, o)
      len = p.length
      if (kind === 5) {
        const flips = 1 + (rnd[r++ % 4096] % 3)
        for (let f = 0; f < flips; f++) slab[o + 16 + (rnd[r++ % 4096] % (len - 16))] ^= 1 << (rnd[r++ % 4096] % 8)
      }
    } else if (kind === 6) {
      // transport header with random index/counter and random payload
      len = 32 + (rnd[r++ % 4096] % 1400)
      fill(0, len)
      slab[o] = 4
      slab.fill(0, o + 1, o + 4)
    } else {
      len = rnd[r++ % 4096] % 200
      fill(0, len)
    }
    lens[i] = len === 0 ? 1 : len
    addrs[2 * i] = dst
    addrs[2 * i + 1] = port
  }
  const n = native.sendBatch(fd, slab, SLOT, 0, lens, addrs, B)
  sent += Math.max(n, 0)
  if (n <= 0) await new Promise((res) => setTimeout(res, 1))
}
const seconds = (Date.now() - started) / 1000
console.log(JSON.stringify({ sent, seconds, kinds: Object.fromEntries(KINDS.map((k, i) => [k, perKind[i]])) }))
