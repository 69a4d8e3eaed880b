/**
 * IPv4 packets and fragments for whole-pipeline tests (bench/testbed.ts sessionPair): a client (peer
 * slot 0 of the exit node) and an exit node with a LAN behind it.
 */
import { HEADROOM, deliver, type sessionPair } from '../../bench/testbed.js'

export type Pair = ReturnType<typeof sessionPair>

export function ip4(b: Uint8Array, o: number, a: number): void {
  for (let i = 0; i < 4; i++) b[o + i] = (a >>> (24 - 8 * i)) & 255
}

/**
 * One IPv4 fragment: `body` is its share of the datagram (a UDP or ICMP header first when offset8 is 0),
 * `offset8` its offset in 8-byte units, `more` the MF flag. A whole datagram is offset 0 without MF.
 */
export function fragment(
  proto: number,
  src: number,
  dst: number,
  id: number,
  offset8: number,
  more: boolean,
  body: Uint8Array,
): Uint8Array {
  const size = 20 + body.length
  const b = new Uint8Array(size)
  b[0] = 0x45
  b[2] = size >> 8
  b[3] = size & 255
  b[4] = (id >> 8) & 255
  b[5] = id & 255
  b[6] = (more ? 0x20 : 0) | ((offset8 >> 8) & 0x1f)
  b[7] = offset8 & 255
  b[8] = 64
  b[9] = proto
  ip4(b, 12, src)
  ip4(b, 16, dst)
  b.set(body, 20)
  return b
}

/** A UDP header (ports only) followed by zeros: `n` bytes in all. */
export function udp(sport: number, dport: number, n = 8): Uint8Array {
  const body = new Uint8Array(n)
  body[0] = sport >> 8
  body[1] = sport & 255
  body[2] = dport >> 8
  body[3] = dport & 255
  return body
}

/** Client -> exit node through the tunnel: whether the exit node let it in (to its TUN). */
export function send(p: Pair, pkt: Uint8Array): boolean {
  p.client.oSlab.set(pkt, HEADROOM)
  p.client.oLens[0] = pkt.length
  if (p.client.outbound(1) !== 1) throw new Error('the client did not seal it')
  deliver(p.client, p.exit, 1)
  return p.exit.inbound(1) === 1
}

/** LAN -> exit node's TUN -> client: whether the exit node let it out (sealed it for the client). */
export function leaves(p: Pair, pkt: Uint8Array): boolean {
  p.exit.oSlab.set(pkt, HEADROOM)
  p.exit.oLens[0] = pkt.length
  return p.exit.outbound(1) === 1
}

/** Many LAN packets out through the exit node in batches; returns how many left. */
export function flood(p: Pair, make: (k: number) => Uint8Array, n: number): number {
  const e = p.exit
  let out = 0
  for (let done = 0; done < n; ) {
    const k = Math.min(e.batch, n - done)
    for (let i = 0; i < k; i++) {
      const pkt = make(done + i)
      e.oSlab.set(pkt, i * e.slot + HEADROOM)
      e.oLens[i] = pkt.length
    }
    out += e.outbound(k)
    done += k
  }
  return out
}

/** A small deterministic PRNG (xorshift32): a random sequence a failure can be replayed with. */
export function rng(seed: number): () => number {
  let s = seed | 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 4294967296
  }
}
