/**
 * Verbatim repeats of a handshake message (issue 18 review, L1): one captured initiation, replayed from
 * spoofed sources at about 1,000 a second, used to count toward the under-load rate, so a real peer's
 * next initiation got a cookie reply and waited for its retry (5 s). Before the fix:
 * "not ok - the peer's initiation reaches control" and "not ok - no cookie reply is sent to it".
 * Now a worker drops a message whose mac1 it saw among its last RECENT_MACS (`handshake_repeat`) before
 * it counts toward the load rate or reaches control.
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
  t.equal(receive(p, [msgs[7]], 0x0d000001), 0, 'one of them sent again is dropped')
  t.equal(count(p, 'handshake_repeat'), 1, 'and counted')
})
