/**
 * Verbatim repeats of a handshake message (issue 18 review, L1): one captured initiation, replayed from
 * spoofed sources at about 1,000 a second, used to count toward the under-load rate, so a real peer's
 * next initiation got a cookie reply and waited for its retry (5 s). Before the fix:
 * "not ok - the peer's initiation reaches control" and "not ok - no cookie reply is sent to it".
 * Now a worker drops a message whose mac1 it saw among its last RECENT_MACS (`handshake_repeat`) before
 * it counts toward the load rate or reaches control.
 *
 * Re-review (review 18b):
 * R3: the table was indexed by unkeyed mac1 bits ((w0 ^ w3) & 1023): two captured initiations that share
 * that slot, alternated, were never repeats. Now the set is a keyed hash of mac1, with two ways.
 * R5: a message was remembered before the under-load check, so an observer's copy from another address,
 * first, took the cookie reply and the peer's own copy was dropped silently (no cookie: its retry had no
 * mac2 either). Before: "not ok - the peer still gets a cookie reply". Now only messages that go to
 * control are remembered, and a repeat without a valid mac2 gets a cookie reply to its own source.
 */
import t from 'tap'
import sodium from 'sodium-native'
import { sessionPair } from '../../bench/testbed.js'
import { REASONS } from '../../src/ipc/layout.js'
import { MAC } from '../../src/protocol/primitives.js'

type Pair = ReturnType<typeof sessionPair>
const count = (p: Pair, r: string) => p.e.v.reasons[REASONS.indexOf(r as (typeof REASONS)[number])]

/** An initiation-shaped message with a valid mac1 for the exit node (random body: anyone knowing its public key can make one). */
function initiation(p: Pair): Buffer {
  const m = Buffer.alloc(148)
  sodium.randombytes_buf(m)
  m[0] = 1
  m[1] = m[2] = m[3] = 0
  m.set(MAC(p.e.local.mac1Key, m.subarray(0, 116)), 116)
  m.fill(0, 132)
  return m
}

/** Hands `msgs` to the exit node in one batch from consecutive addresses; returns how many reached control. */
function receive(p: Pair, msgs: Buffer[], firstIp: number): number {
  for (let i = 0; i < msgs.length; i++) {
    p.exit.iSlab.set(msgs[i], i * p.exit.slot)
    p.exit.iLens[i] = msgs[i].length
    p.exit.iAddrs[2 * i] = firstIp + i
    p.exit.iAddrs[2 * i + 1] = 4000
  }
  p.exit.inbound(msgs.length)
  return p.e.ring.drain().length
}

t.test("a replayed initiation neither reaches control nor puts the node under load for a peer's own", async (t) => {
  const p = sessionPair(64)
  const now = 9_000_000
  p.exit.setClock(now)
  const captured = initiation(p)
  let reached = 0
  let sent = 0
  for (let round = 0; round < 17; round++) {
    reached += receive(p, new Array(64).fill(captured), 0x0b000000 + sent)
    sent += 64
  }
  t.comment(`${sent} copies of one initiation within a second; ${reached} reached control`)
  t.equal(reached, 1, 'the first copy reaches control, no repeat does')
  t.equal(count(p, 'handshake_repeat'), sent - 1, 'each repeat is counted as handshake_repeat')
  p.exit.setClock(now + 900)
  const cookies0 = count(p, 'cookie_sent')
  t.equal(receive(p, [initiation(p)], 0xc6120009), 1, "the peer's initiation reaches control")
  t.equal(count(p, 'cookie_sent') - cookies0, 0, 'no cookie reply is sent to it')
})

t.test('distinct messages are not taken for repeats; a repeat of one of them is dropped', async (t) => {
  const p = sessionPair(64)
  const msgs = Array.from({ length: 200 }, () => initiation(p))
  let reached = 0
  // 50 a second: under every rate limit.
  for (let i = 0; i < msgs.length; i += 50) {
    p.exit.setClock(1_000_000 + i * 20)
    reached += receive(p, msgs.slice(i, i + 50), 0x0c000000 + i)
  }
  t.equal(reached, 200, '200 distinct initiations all reach control')
  t.equal(count(p, 'handshake_repeat'), 0, 'none counted as a repeat')
  p.exit.setClock(1_005_000)
  t.equal(receive(p, [msgs[199]], 0x0d000001), 0, 'the last of them sent again is dropped')
  t.equal(count(p, 'handshake_repeat'), 1, 'and counted')
  // 200 in 512 sets of two: a set that three of them fell in forgot its oldest (about 5%).
  let again = 0
  for (const m of msgs) again += receive(p, [m], 0x0d000002)
  t.comment(`${200 - again} of 200 sent again were taken for repeats`)
  t.ok(200 - again >= 170, 'most of them are remembered')
})

/** The slot of the old, unkeyed direct-mapped table ((w0 ^ w3) & 1023 of mac1). */
const oldSlotOf = (m: Buffer) => (m.readInt32LE(116) ^ m.readInt32LE(128)) & 1023

t.test('R3: two captured initiations that shared a slot of the unkeyed table, alternated, are repeats', async (t) => {
  const p = sessionPair(64)
  const now = 9_000_000
  p.exit.setClock(now)
  const bySlot = new Map<number, Buffer>()
  let pair: Buffer[] = []
  while (pair.length === 0) {
    const m = initiation(p)
    const o = bySlot.get(oldSlotOf(m))
    if (o) pair = [o, m]
    else bySlot.set(oldSlotOf(m), m)
  }
  let reached = 0
  for (let round = 0; round < 17; round++)
    reached += receive(
      p,
      Array.from({ length: 64 }, (_, i) => pair[i & 1]),
      0x0b000000 + round * 64,
    )
  t.comment(`1,088 copies of two initiations within a second; ${reached} reached control`)
  t.equal(reached, 2, 'the first copy of each reaches control, no repeat does')
  p.exit.setClock(now + 900)
  const cookies0 = count(p, 'cookie_sent')
  t.equal(receive(p, [initiation(p)], 0xc6120009), 1, "the peer's initiation reaches control")
  t.equal(count(p, 'cookie_sent') - cookies0, 0, 'no cookie reply is sent to it')
})

t.test("R5: under load, an observer's copy sent first from another address does not take the peer's cookie reply", async (t) => {
  const p = sessionPair(64, () => undefined, 64) // under load above 64 valid-mac1 messages a second
  const now = 9_000_000
  p.exit.setClock(now)
  receive(
    p,
    Array.from({ length: 64 }, () => initiation(p)),
    0x0c000000,
  )
  receive(
    p,
    Array.from({ length: 64 }, () => initiation(p)),
    0x0c000100,
  )
  p.exit.setClock(now + 100)
  const victim = 0xc6120009
  const observer = 0x0b0b0b0b
  const m = initiation(p)
  const copy = Buffer.from(m)
  p.exit.iSlab.set(copy, 0)
  p.exit.iLens[0] = copy.length
  p.exit.iAddrs[0] = observer
  p.exit.iAddrs[1] = 4000
  p.exit.iSlab.set(m, p.exit.slot)
  p.exit.iLens[1] = m.length
  p.exit.iAddrs[2] = victim
  p.exit.iAddrs[3] = 4000
  p.exit.inbound(2)
  const to: number[] = []
  for (let c = 0; c < p.exit.cCount; c++) to.push(p.exit.cAddrs[2 * c])
  t.equal(p.e.ring.drain().length, 0, 'under load, neither copy reaches control without a mac2')
  t.ok(to.includes(victim), 'the peer still gets a cookie reply (its retry carries a mac2 of its own)')
  t.ok(to.includes(observer), 'and the observer one for its own address')
})
