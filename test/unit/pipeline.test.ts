/**
 * Every accept path and drop reason of the data plane's Pipeline, without root: a client and an exit
 * node (bench/testbed.ts) share one session in shared memory, the way control installs it. Packets
 * the client's pipeline would never produce (other inner sources, other destinations) are sealed
 * with sealPacket, control's single-packet path, under the client's real keys.
 */
import t from 'tap'
import sodium from 'sodium-native'
import { A_VA, B_VA, C_VA, HEADROOM, LAN, deliver, sessionPair } from '../../bench/testbed.js'
import {
  KEY_BYTES_PER_SLOT,
  KP_RECV_ONLY,
  KP_VALID,
  K_FIELDS,
  K_INDEX,
  K_SEND_CTR,
  K_STATE,
  type LayoutViews,
  PF_ENDPOINT,
  PF_FIELDS,
  P_CUR_KP,
  REASONS,
  packEndpoint,
} from '../../src/ipc/layout.js'
import { MSG_CONFIRMED, MSG_HANDSHAKE, MSG_STAGED } from '../../src/ipc/ring.js'
import { MAC } from '../../src/protocol/primitives.js'
import { REJECT_AFTER_TIME_MS, SEND_COUNTER_LIMIT } from '../../src/protocol/constants.js'
import { SEAL_COUNTER_LIMIT, sealPacket } from '../../src/dataplane/transport.js'
import { CT_PEER_SHARE, PROTO_UDP, ctPeerCount, ctTrack } from '../../src/dataplane/conntrack.js'
import { LOG_LINES_PER_S, STAGED_BURST, STAGED_PER_S } from '../../src/dataplane/pipeline.js'

type Pair = ReturnType<typeof sessionPair>

function reasons(v: LayoutViews): Record<string, number> {
  const r: Record<string, number> = {}
  REASONS.forEach((name, i) => {
    r[name] = v.reasons[i]
  })
  return r
}

function ip4(b: Uint8Array, o: number, a: number): void {
  for (let i = 0; i < 4; i++) b[o + i] = (a >>> (24 - 8 * i)) & 255
}

/** An IPv4/UDP packet src:sport -> dst:dport with `size` bytes in all. */
function udp(src: number, dst: number, sport: number, dport: number, size = 60): Uint8Array {
  const b = new Uint8Array(size)
  b[0] = 0x45
  b[2] = size >> 8
  b[3] = size & 255
  b[8] = 64
  b[9] = PROTO_UDP
  ip4(b, 12, src)
  ip4(b, 16, dst)
  b[20] = sport >> 8
  b[21] = sport & 255
  b[22] = dport >> 8
  b[23] = dport & 255
  return b
}

/** An ICMP error (type 3, port unreachable) from src to dst quoting the first 28 bytes of `quoted`. */
function icmpError(src: number, dst: number, quoted: Uint8Array): Uint8Array {
  const b = new Uint8Array(20 + 8 + 28)
  b[0] = 0x45
  b[3] = b.length
  b[8] = 64
  b[9] = 1
  ip4(b, 12, src)
  ip4(b, 16, dst)
  b[20] = 3
  b[21] = 3
  b.set(quoted.subarray(0, 28), 28)
  return b
}

function now(p: Pair, ms = Date.now()): void {
  p.client.setClock(ms)
  p.exit.setClock(ms)
}

/** Runs one IP packet through a pipeline's outbound path; returns the datagram length (0 = none). */
function out(pipe: Pair['client'], pkt: Uint8Array): number {
  pipe.oSlab.set(pkt, HEADROOM)
  pipe.oLens[0] = pkt.length
  return pipe.outbound(1) === 1 ? pipe.sLens[0] : 0
}

/** Puts one datagram into the exit node's receive slab, from the client's usual address. */
function inject(p: Pair, d: Uint8Array, from = 0xc6120001): void {
  p.exit.iSlab.set(d, 0)
  p.exit.iLens[0] = d.length
  p.exit.iAddrs[0] = from
  p.exit.iAddrs[1] = 51820
}

/** A datagram sealed under the client's session keys (control's path), carrying any inner packet. */
function sealed(p: Pair, inner: Uint8Array): Uint8Array {
  const d = sealPacket(p.c.v.kpI32, p.c.v.kpKeys, p.c.kp, inner, 1420)
  if (typeof d === 'number') throw new Error(`sealPacket failed: ${d}`)
  return d
}

function lastDatagram(pipe: Pair['client']): Uint8Array {
  return pipe.oSlab.slice(0, pipe.sLens[0])
}

t.test('accepted: client -> exit node -> LAN, tracked; the LAN reply goes back to the client', async (t) => {
  const p = sessionPair(4)
  now(p)
  const req = udp(A_VA, LAN + 250, 40000, 8080, 100)
  t.ok(out(p.client, req) > 0, 'the client seals its own packet')
  deliver(p.client, p.exit, 1)
  t.equal(p.exit.inbound(1), 1, 'the exit node accepts it')
  t.same(p.exit.iSlab.subarray(HEADROOM, HEADROOM + p.exit.wLens[0]), req, 'plaintext intact, padding cut by the IP length')
  t.ok(out(p.exit, udp(LAN + 250, A_VA, 8080, 40000)) > 0, 'the reply from the LAN leaves (a tracked flow)')
  p.client.iSlab.set(lastDatagram(p.exit), 0)
  p.client.iLens[0] = p.exit.sLens[0]
  t.equal(p.client.inbound(1), 1, 'the client accepts the reply')
  t.equal(reasons(p.e.v).unsolicited, 0)
  t.ok(out(p.exit, udp(B_VA, A_VA, 5, 6)) > 0, "the exit node's own traffic leaves")
})

t.test('unsolicited: only own traffic and replies to the peer flows leave, on every node', async (t) => {
  const p = sessionPair(4)
  now(p)
  out(p.client, udp(A_VA, LAN + 250, 40000, 8080))
  deliver(p.client, p.exit, 1)
  p.exit.inbound(1)
  const cases: Array<[string, Uint8Array]> = [
    ['a LAN host starting a flow', udp(LAN + 250, A_VA, 8080, 40001)],
    ['a forged overlay source', udp(0x64404d4d, A_VA, 8080, 40000)],
    ['a forged outside source', udp(0xc6336407, A_VA, 8080, 40000)],
    ['the right ports from another LAN host', udp(LAN + 251, A_VA, 8080, 40000)],
    ['a reply to the flow, sent to another peer', udp(LAN + 250, C_VA, 8080, 40000)],
  ]
  for (const [what, pkt] of cases) t.equal(out(p.exit, pkt), 0, `dropped: ${what}`)
  t.equal(reasons(p.e.v).unsolicited, cases.length, 'each counted as unsolicited')
  t.equal(out(p.client, udp(0x0a000009, B_VA, 1, 2)), 0, 'a node that provides no routes sends only its own address')
  t.equal(reasons(p.c.v).unsolicited, 1)
})

t.test("ICMP errors go only to the quoted flow's peer, at the quoted source", async (t) => {
  const p = sessionPair(4)
  now(p)
  const req = udp(A_VA, LAN + 250, 40000, 8080)
  out(p.client, req)
  deliver(p.client, p.exit, 1)
  p.exit.inbound(1)
  t.ok(out(p.exit, icmpError(LAN + 1, A_VA, req)) > 0, 'port unreachable quoting the flow, to its peer: admitted')
  t.equal(out(p.exit, icmpError(LAN + 1, C_VA, req)), 0, 'the same error sent to another peer: dropped')
  t.equal(out(p.exit, icmpError(LAN + 1, A_VA, udp(A_VA, LAN + 250, 40001, 8080))), 0, 'quoting an untracked flow: dropped')
  // A flow owned by peer 0 whose peer-side address routes to peer 1: an error to it must not go to peer 1.
  const ct = new Int32Array(p.e.conntrack)
  ctTrack(ct, PROTO_UDP, C_VA, LAN + 250, ((5000 << 16) | 8080) >>> 0, 0, p.exit.nowS, 30)
  t.equal(out(p.exit, icmpError(LAN + 1, C_VA, udp(C_VA, LAN + 250, 5000, 8080))), 0, "peer 0's flow: no error to peer 1")
  t.equal(reasons(p.e.v).unsolicited, 3)
})

t.test("ICMP errors from this node's own address go to a peer only when they quote that peer's packet", async (t) => {
  const p = sessionPair(4)
  now(p)
  const req = udp(A_VA, LAN + 250, 40000, 8080)
  out(p.client, req)
  deliver(p.client, p.exit, 1)
  p.exit.inbound(1)
  // Admitted: the kernel answering what the peer sent to us, or a flow the peer started through us (PMTU).
  t.ok(out(p.exit, icmpError(B_VA, A_VA, udp(A_VA, B_VA, 40000, 9))) > 0, 'port unreachable for a packet the peer sent to us')
  t.ok(out(p.exit, icmpError(B_VA, A_VA, req)) > 0, "an error quoting the peer's tracked flow through us")
  t.ok(out(p.exit, udp(B_VA, A_VA, 5, 6)) > 0, 'own traffic that is not an ICMP error is unchanged')
  // Dropped: what a LAN host forging the peer's address makes our kernel say (TTL 1 through us, a lost fragment).
  const forged: Array<[string, Uint8Array]> = [
    ['a forged packet forwarded to another LAN host (untracked)', udp(A_VA, LAN + 251, 40000, 8080)],
    ['a forged packet forwarded to an outside host', udp(A_VA, 0xc6120001, 1234, 53)],
    ["a packet of another peer's address", udp(C_VA, B_VA, 1, 9)],
  ]
  for (const [what, q] of forged) t.equal(out(p.exit, icmpError(B_VA, A_VA, q)), 0, `own error quoting ${what}: dropped`)
  t.equal(out(p.exit, icmpError(B_VA, C_VA, req)), 0, "the peer's flow quoted in an error to another peer: dropped")
  t.equal(reasons(p.e.v).unsolicited, forged.length + 1, 'each counted as unsolicited')
})

t.test('inbound drops: disallowed inner source, unknown destination, replay, bad MAC', async (t) => {
  const p = sessionPair(4)
  now(p)
  const ep0 = p.e.v.peerF64[PF_ENDPOINT]
  inject(p, sealed(p, udp(0x0a090909, LAN + 250, 1, 2)))
  t.equal(p.exit.inbound(1), 0)
  t.equal(reasons(p.e.v).not_allowed, 1, 'a source the peer may not use: not_allowed')
  inject(p, sealed(p, udp(A_VA, 0x08080808, 1, 2)))
  t.equal(p.exit.inbound(1), 0)
  t.equal(reasons(p.e.v).not_for_us, 1, 'a destination that is neither us nor our routes: not_for_us')
  const good = sealed(p, udp(A_VA, LAN + 250, 1, 2))
  inject(p, good)
  t.equal(p.exit.inbound(1), 1, 'first copy accepted')
  inject(p, good)
  t.equal(p.exit.inbound(1), 0)
  t.equal(reasons(p.e.v).replay, 1, 'second copy: replay')
  const bad = sealed(p, udp(A_VA, LAN + 250, 1, 2))
  bad[bad.length - 1] ^= 1
  inject(p, bad, 0x0a0a0a0a)
  t.equal(p.exit.inbound(1), 0)
  t.equal(reasons(p.e.v).bad_mac, 1, 'a flipped tag bit: bad_mac')
  t.equal(p.e.v.peerF64[PF_ENDPOINT], packEndpoint(0xc6120001, 51820), 'the endpoint moved only for authenticated packets')
  t.not(ep0, 0)
})

t.test('expired keypair: dropped inbound, staged outbound', async (t) => {
  const p = sessionPair(4)
  const t0 = Date.now()
  now(p, t0 + REJECT_AFTER_TIME_MS)
  inject(p, sealed(p, udp(A_VA, LAN + 250, 1, 2)))
  t.equal(p.exit.inbound(1), 0)
  t.equal(reasons(p.e.v).expired, 1, 'inbound: expired')
  t.equal(out(p.client, udp(A_VA, LAN + 250, 1, 2)), 0)
  t.equal(reasons(p.c.v).staged, 1, 'outbound: handed to control for a handshake')
  t.same(
    p.c.ring.drain().map((m) => m.kind),
    [MSG_STAGED],
  )
})

t.test('a flood of packets waiting for a session leaves room in the ring for the handshake', async (t) => {
  const p = sessionPair(4)
  const t0 = Date.now() + REJECT_AFTER_TIME_MS // the client's session expired: its traffic waits for a handshake
  // 1,000 packets over one second: within the per-peer pace (STAGED_PER_S), so only the ring's half limits them.
  for (let i = 0; i < 1000; i++) {
    now(p, t0 + i)
    out(p.client, udp(A_VA, LAN + 250, 1, 2))
  }
  t.equal(reasons(p.c.v).staged_limited, 0, 'none over the per-peer pace')
  t.ok(reasons(p.c.v).ring_full > 0, `the ring filled: ${reasons(p.c.v).ring_full} waiting packets dropped`)
  // The peer's handshake response arrives now.
  const response = new Uint8Array(92)
  response[0] = 2
  response.set(MAC(p.c.local.mac1Key, response.subarray(0, 60)), 60) // its mac1 (the worker checks it)
  p.client.iSlab.set(response, 0)
  p.client.iLens[0] = response.length
  p.client.iAddrs[0] = 0xc6120002
  p.client.iAddrs[1] = 51820
  p.client.inbound(1)
  const kinds = p.c.ring.drain().map((m) => m.kind)
  t.ok(kinds.includes(MSG_HANDSHAKE), 'the handshake response reached control')
  t.equal(kinds.filter((k) => k === MSG_STAGED).length, 128, 'waiting packets took half the ring (256), no more')
})

t.test('packets waiting for a session are paced per peer', async (t) => {
  const p = sessionPair(4)
  const t0 = Date.now() + REJECT_AFTER_TIME_MS
  now(p, t0)
  for (let i = 0; i < 200; i++) out(p.client, udp(A_VA, LAN + 250, 1, 2))
  t.equal(p.c.ring.drain().length, STAGED_BURST, `${STAGED_BURST} of 200 at one instant reach control`)
  t.equal(reasons(p.c.v).staged_limited, 200 - STAGED_BURST, 'the rest are counted as staged_limited')
  now(p, t0 + 10)
  for (let i = 0; i < 200; i++) out(p.client, udp(A_VA, LAN + 250, 1, 2))
  t.equal(p.c.ring.drain().length, (STAGED_PER_S * 10) / 1000, '10 ms later: 10 ms worth')
})

t.test('keypair promotion: the first data on a receive-only keypair makes it current', async (t) => {
  const p = sessionPair(4)
  now(p)
  const kb = p.e.kp * K_FIELDS
  Atomics.store(p.e.v.kpI32, kb + K_STATE, KP_RECV_ONLY)
  Atomics.store(p.e.v.peerI32, P_CUR_KP, -1)
  t.equal(out(p.exit, udp(B_VA, A_VA, 1, 2)), 0, 'before: the exit node cannot send on it')
  p.e.ring.drain()
  out(p.client, udp(A_VA, B_VA, 1, 2))
  deliver(p.client, p.exit, 1)
  t.equal(p.exit.inbound(1), 1)
  t.equal(Atomics.load(p.e.v.kpI32, kb + K_STATE), KP_VALID, 'state VALID')
  t.equal(Atomics.load(p.e.v.peerI32, P_CUR_KP), p.e.kp, 'current keypair of the peer')
  t.same(
    p.e.ring.drain().map((m) => [m.kind, m.aux]),
    [[MSG_CONFIRMED, p.e.kp]],
    'control told',
  )
  t.ok(out(p.exit, udp(B_VA, A_VA, 1, 2)) > 0, 'after: the exit node sends on it')
})

t.test('the send counter stops at its limit and never wraps (both paths)', async (t) => {
  const p = sessionPair(4)
  now(p)
  const kb = p.c.kp * K_FIELDS
  Atomics.store(p.c.v.kpI32, kb + K_SEND_CTR, (SEND_COUNTER_LIMIT - 1) | 0)
  t.ok(out(p.client, udp(A_VA, B_VA, 1, 2)) > 0, 'the last counter is used')
  t.equal(new DataView(p.client.oSlab.buffer).getUint32(8, true), SEND_COUNTER_LIMIT - 1, 'with counter LIMIT - 1')
  for (let i = 0; i < 5; i++) t.equal(out(p.client, udp(A_VA, B_VA, 1, 2)), 0, `send ${i + 1} past the limit: nothing`)
  t.equal(reasons(p.c.v).counter_exhausted, 5)
  t.equal(sealPacket(p.c.v.kpI32, p.c.v.kpKeys, p.c.kp, new Uint8Array(0), 1420), SEAL_COUNTER_LIMIT, "control's path refuses too")
  t.equal(Atomics.load(p.c.v.kpI32, kb + K_SEND_CTR) >>> 0, SEND_COUNTER_LIMIT, 'the counter stays at the limit')
  Atomics.store(p.c.v.kpI32, kb + K_SEND_CTR, -1) // 2^32 - 1: one more add would wrap to 0
  for (let i = 0; i < 3; i++) t.equal(out(p.client, udp(A_VA, B_VA, 1, 2)), 0, `at 2^32-1, send ${i + 1}: nothing (no wrap to 0)`)
  t.equal(Atomics.load(p.c.v.kpI32, kb + K_SEND_CTR) >>> 0, 2 ** 32 - 1, 'no wrap')
})

/** Control's retirement of a keypair slot (state, index, then keys zeroed). */
function retire(v: LayoutViews, kp: number): void {
  Atomics.store(v.kpI32, kp * K_FIELDS + K_STATE, 0)
  Atomics.store(v.kpI32, kp * K_FIELDS + K_INDEX, 0)
  v.kpKeys.fill(0, kp * KEY_BYTES_PER_SLOT, (kp + 1) * KEY_BYTES_PER_SLOT)
}

t.test('a keypair retired between the check and decryption: the packet is dropped, not delivered', async (t) => {
  const p = sessionPair(4)
  now(p)
  // An attacker's packet sealed under the all-zero key, with the live receiver index.
  p.c.v.kpKeys.fill(0, p.c.kp * KEY_BYTES_PER_SLOT, p.c.kp * KEY_BYTES_PER_SLOT + 32)
  out(p.client, udp(A_VA, LAN + 250, 1, 2))
  const forged = lastDatagram(p.client)
  inject(p, forged, 0x0b0b0b0b)
  t.equal(p.exit.inbound(1), 0, 'while the keys are live it fails the tag')
  t.equal(reasons(p.e.v).bad_mac, 1)
  const real = sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached
  const s = sodium as unknown as Record<string, unknown>
  s.crypto_aead_chacha20poly1305_ietf_decrypt_detached = (...a: unknown[]) => {
    retire(p.e.v, p.e.kp) // control retires the slot after the worker's state check
    return (real as (...x: unknown[]) => unknown)(...a)
  }
  try {
    out(p.client, udp(A_VA, LAN + 250, 1, 2)) // a fresh counter
    inject(p, lastDatagram(p.client), 0x0b0b0b0b)
    t.equal(p.exit.inbound(1), 0, 'not delivered')
  } finally {
    s.crypto_aead_chacha20poly1305_ietf_decrypt_detached = real
  }
  t.equal(p.exit.wLens[0], 0)
  t.equal(reasons(p.e.v).expired, 1, 'counted as expired')
  t.equal(p.e.v.peerF64[0 * PF_FIELDS + PF_ENDPOINT], packEndpoint(0xc6120002, 51820), 'the endpoint did not move')
})

t.test('a keypair retired during encryption: nothing is sent', async (t) => {
  const p = sessionPair(4)
  now(p)
  const real = sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached
  const s = sodium as unknown as Record<string, unknown>
  s.crypto_aead_chacha20poly1305_ietf_encrypt_detached = (...a: unknown[]) => {
    retire(p.c.v, p.c.kp)
    return (real as (...x: unknown[]) => unknown)(...a)
  }
  try {
    t.equal(out(p.client, udp(A_VA, B_VA, 1, 2)), 0, 'the worker path sends nothing')
    Atomics.store(p.c.v.kpI32, p.c.kp * K_FIELDS + K_INDEX, (1 << 12) | 7)
    Atomics.store(p.c.v.kpI32, p.c.kp * K_FIELDS + K_STATE, KP_VALID)
    t.type(sealPacket(p.c.v.kpI32, p.c.v.kpKeys, p.c.kp, new Uint8Array(0), 1420), 'number', "control's path returns no datagram")
  } finally {
    s.crypto_aead_chacha20poly1305_ietf_encrypt_detached = real
  }
  t.equal(reasons(p.c.v).expired, 1)
})

t.test("conntrack: a peer at its share evicts its own flows, counted; others' flows stay", async (t) => {
  const p = sessionPair(64)
  now(p)
  const ct = new Int32Array(p.e.conntrack)
  // Peer 1's answered flow, which peer 0's flood must not evict.
  ctTrack(ct, PROTO_UDP, C_VA, LAN + 9, ((7 << 16) | 7) >>> 0, 1, p.exit.nowS, 180)
  t.equal(out(p.exit, udp(LAN + 9, C_VA, 7, 7)) === 0 && reasons(p.e.v).staged, 1, "peer 1's flow answered (staged: no session)")
  const flows = CT_PEER_SHARE + 640
  for (let base = 0; base < flows; base += 64) {
    for (let i = 0; i < 64; i++) {
      const f = base + i
      p.client.oSlab.set(udp(A_VA, LAN + 256 + (f >>> 14), 1024 + (f & 0x3fff), 80), i * p.client.slot + HEADROOM)
      p.client.oLens[i] = 60
    }
    p.client.outbound(64)
    deliver(p.client, p.exit, 64)
    p.exit.inbound(64)
  }
  const r = reasons(p.e.v)
  t.ok(ctPeerCount(ct, 0) <= CT_PEER_SHARE, `peer 0 holds ${ctPeerCount(ct, 0)} <= ${CT_PEER_SHARE} entries`)
  t.ok(r.conntrack_evicted > 0, `evictions of its own entries counted: ${r.conntrack_evicted}`)
  t.ok(
    r.conntrack_evicted + r.conntrack_full >= 640,
    `past its share every new flow evicted its own entry or was refused (${r.conntrack_evicted} + ${r.conntrack_full})`,
  )
  t.equal(out(p.exit, udp(LAN + 9, C_VA, 7, 7)), 0)
  t.equal(reasons(p.e.v).staged, 2, "peer 1's flow is still there (its reply is admitted and staged, not unsolicited)")
})

t.test('-v 5 lines are rate-limited per reason', async (t) => {
  const posted: Array<{ t: string; msg?: string; verdict?: string }> = []
  const p = sessionPair(64, (m) => posted.push(m as { t: string }))
  const t0 = Date.now()
  p.exit.logLevel = 5
  now(p, t0)
  for (let i = 0; i < 64; i++) {
    p.exit.oSlab.set(udp(LAN + 250, A_VA, 1, 2), i * p.exit.slot + HEADROOM)
    p.exit.oLens[i] = 60
  }
  p.exit.outbound(64)
  const lines = posted.filter((m) => m.t === 'flow' && m.verdict?.startsWith('drop unsolicited'))
  t.equal(lines.length, LOG_LINES_PER_S, `64 unsolicited packets, ${LOG_LINES_PER_S} lines`)
  now(p, t0 + 1000)
  t.ok(
    posted.some((m) => m.t === 'log' && m.msg === `${64 - LOG_LINES_PER_S} similar lines suppressed (unsolicited)`),
    'then one line with the count',
  )
  t.equal(reasons(p.e.v).unsolicited, 64, 'every packet still counted')
})
