/**
 * The workers check handshake messages before any other work (src/dataplane/pipeline.ts macsAdmit, with
 * src/protocol/macs.ts): a bad mac1 is dropped and counted there and never reaches control's ring; under
 * load an initiation without a valid mac2 gets a cookie reply from the worker (checked against the
 * known-answer vectors' construction and opened by our own initiator side), and one with a valid mac2
 * reaches control. The secret is the one control uses (shared memory).
 */
import t from 'tap'
import sodium from 'sodium-native'
import { sessionPair } from '../../bench/testbed.js'
import { HSW_SECRET_SLOT, HS_SECRETS, REASONS, SharedCookieSecret, type LayoutViews, writeHandshakeKeys } from '../../src/ipc/layout.js'
import { MSG_HANDSHAKE } from '../../src/ipc/ring.js'
import {
  checkMac2,
  consumeCookieReply,
  createInitiation,
  localStatic,
  peerCrypto,
  refreshCookieSecret,
  writeMacs,
} from '../../src/protocol/noise.js'
import { HASH, MAC, enc } from '../../src/protocol/primitives.js'
import { publicKeyFromPrivate } from '../../src/config/keys.js'
import { V } from '../helpers/handshake-vectors.js'

type Pair = ReturnType<typeof sessionPair>
const bin = (h: string): Buffer => Buffer.from(h, 'hex')
const hex = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('hex')
const SRC_IP = 0xc6120001 // 198.18.0.1, the vectors' cookie source
const SRC_PORT = 51820
const count = (v: LayoutViews, r: string) => v.reasons[REASONS.indexOf(r as (typeof REASONS)[number])]

/** Hands datagrams to the exit node's inbound path (one batch); returns the handshake messages control got. */
function receive(p: Pair, msgs: Uint8Array[], ip = SRC_IP, port = SRC_PORT): Buffer[] {
  const pipe = p.exit
  const got: Buffer[] = []
  for (let done = 0; done < msgs.length; ) {
    const k = Math.min(pipe.batch, msgs.length - done)
    for (let i = 0; i < k; i++) {
      pipe.iSlab.set(msgs[done + i], i * pipe.slot)
      pipe.iLens[i] = msgs[done + i].length
      pipe.iAddrs[2 * i] = ip
      pipe.iAddrs[2 * i + 1] = port
    }
    pipe.inbound(k)
    got.push(
      ...p.e.ring
        .drain()
        .filter((m) => m.kind === MSG_HANDSHAKE)
        .map((m) => m.payload),
    )
    done += k
  }
  return got
}

/** The cookie replies the exit node's worker made in its last inbound() call. */
function replies(p: Pair): Array<{ reply: Buffer; ip: number; port: number }> {
  const out = []
  for (let k = 0; k < p.exit.cCount; k++)
    out.push({ reply: Buffer.from(p.exit.cSlab.subarray(64 * k, 64 * k + 64)), ip: p.exit.cAddrs[2 * k], port: p.exit.cAddrs[2 * k + 1] })
  return out
}

/** Right-sized initiations or responses of random content; with a valid mac1 for `mac1Key` when given. */
function junk(n: number, size: 148 | 92, mac1Key?: Uint8Array): Buffer[] {
  return Array.from({ length: n }, () => {
    const m = Buffer.alloc(size)
    sodium.randombytes_buf(m)
    m[0] = size === 148 ? 1 : 2
    m[1] = m[2] = m[3] = 0
    if (mac1Key) m.set(MAC(mac1Key, m.subarray(0, size - 32)), size - 32)
    return m
  })
}

/** The exit node as the vectors' responder, under load: its keys and cookie secret are the vectors'. */
function vectorResponder() {
  const p = sessionPair(64)
  const R = localStatic(bin(V.responderStaticPrivate), publicKeyFromPrivate(bin(V.responderStaticPrivate)))
  const I = localStatic(bin(V.initiatorStaticPrivate), publicKeyFromPrivate(bin(V.initiatorStaticPrivate)))
  writeHandshakeKeys(p.e.layout, R.mac1Key, R.cookieKey)
  const secret = new SharedCookieSecret(p.e.layout, V.timeMs)
  secret.secret = bin(V.cookieSecret)
  const now = V.timeMs
  p.exit.setClock(now)
  // A flood of valid-mac1 junk (it takes only the public key) puts the worker under load.
  receive(p, junk(1500, 148, R.mac1Key), 0x0b000001, 4000)
  return { p, R, I, IR: peerCrypto(I, R.publicKey, bin(V.presharedKey)), secret, now }
}

t.test('junk with a bad mac1 never reaches control, and does not use up what valid messages may pass', async (t) => {
  const p = sessionPair(64)
  p.exit.setClock(1_000_000)
  const bad = [...junk(1000, 148), ...junk(1000, 92)]
  t.equal(receive(p, bad).length, 0, 'none of 2,000 right-sized initiations and responses with a bad mac1 reaches control')
  t.equal(count(p.e.v, 'bad_mac1'), 2000, 'each counted as bad_mac1')
  t.equal(count(p.e.v, 'handshake_limited'), 0, 'dropped before the rate gate: none of its budget spent')
  t.equal(p.exit.cCount, 0, 'no cookie reply for a bad mac1')
  t.equal(receive(p, junk(1, 148, p.e.local.mac1Key)).length, 1, 'a message with a valid mac1 still reaches control')
})

t.test('not under load: a valid mac1 is enough, and no cookie reply is sent', async (t) => {
  const p = sessionPair(64)
  p.exit.setClock(2_000_000)
  t.equal(receive(p, junk(20, 148, p.e.local.mac1Key)).length, 20, '20 initiations with a valid mac1 reach control')
  t.equal(count(p.e.v, 'cookie_sent'), 0)
})

t.test("under load, an initiation without mac2 gets the worker's cookie reply, in the vectors' construction", async (t) => {
  const { p, R, I, IR, now } = vectorResponder()
  t.ok(count(p.e.v, 'cookie_sent') > 0, `the flood got cookie replies (${count(p.e.v, 'cookie_sent')}), not all control's time`)
  const init = createInitiation(I, IR, V.initiatorIndex, now, bin(V.initiatorEphemeralPrivate))
  t.equal(hex(init), V.initiation, "the vectors' initiation (mac1, no mac2)")
  t.equal(receive(p, [init]).length, 0, 'it does not reach control')
  const rs = replies(p)
  t.equal(rs.length, 1, 'the worker made one cookie reply')
  const { reply, ip, port } = rs[0]
  t.same([ip, port], [SRC_IP, SRC_PORT], 'addressed to the sender')
  t.equal(hex(reply.subarray(0, 8)), `03000000${V.initiation.slice(8, 16)}`, "type 3 and the initiation's sender index")
  // The vectors' construction, with other code than the worker's: XChaCha20-Poly1305 under HASH("cookie--" || key),
  // AAD = the initiation's mac1, opening to MAC(secret, 198.18.0.1 || 51820) = the vectors' cookie.
  const cookieKey = HASH(enc.encode('cookie--'), R.publicKey)
  const cookie = Buffer.alloc(16)
  sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
    cookie,
    null,
    reply.subarray(32),
    init.subarray(116, 132),
    reply.subarray(8, 32),
    Buffer.from(cookieKey),
  )
  t.equal(hex(cookie), V.cookie, "the sealed cookie is the vectors' cookie")
  t.ok(consumeCookieReply(IR, reply, now), "our initiator side opens the worker's reply")
  t.equal(hex(IR.cookie!.value), V.cookie, 'and gets that cookie')
})

t.test('under load, an initiation with a valid mac2 reaches control, and control accepts that mac2', async (t) => {
  const { p, I, IR, secret, now } = vectorResponder()
  const init = createInitiation(I, IR, V.initiatorIndex, now, bin(V.initiatorEphemeralPrivate))
  receive(p, [init])
  t.ok(consumeCookieReply(IR, replies(p)[0].reply, now), 'the initiator got a cookie from the worker')
  writeMacs(init, IR, now + 500)
  t.equal(hex(init), V.initiationWithMac2, "the retry carries mac1 and mac2 (the vectors' bytes)")
  p.exit.setClock(now + 500) // still under load (it lasts a second after the flood)
  const got = receive(p, [init])
  t.equal(got.length, 1, 'the retry reaches control')
  t.equal(p.exit.cCount, 0, 'without a cookie reply')
  t.ok(checkMac2(secret, got[0], SRC_IP, SRC_PORT, now + 500), "control's check (the shared secret) accepts its mac2")
  t.equal(receive(p, [init], SRC_IP + 1).length, 0, 'the same bytes from another address do not (the cookie is per address)')
  t.equal(replies(p).length, 1, 'that one gets a cookie reply of its own')
})

t.test('a rotated secret: the workers answer with it at once, and old cookies stop passing', async (t) => {
  const { p, I, IR, secret, now } = vectorResponder()
  const init = createInitiation(I, IR, V.initiatorIndex, now, bin(V.initiatorEphemeralPrivate))
  receive(p, [init])
  consumeCookieReply(IR, replies(p)[0].reply, now)
  secret.secret = Buffer.alloc(32, 7) // control's rotation (every 2 minutes)
  writeMacs(init, IR, now + 10)
  t.equal(receive(p, [init]).length, 0, 'a mac2 from the old secret no longer passes under load')
  t.ok(consumeCookieReply(IR, replies(p)[0].reply, now + 10), 'a fresh cookie reply comes back')
  t.equal(hex(IR.cookie!.value), hex(MAC(Buffer.alloc(32, 7), bin('c6120001ca6c'))), 'made with the new secret')
  writeMacs(init, IR, now + 20)
  t.equal(receive(p, [init]).length, 1, 'and the retry with it passes')
})

t.test('until control wrote the keys, a worker passes no handshake message on', async (t) => {
  const p = sessionPair(64)
  new Int32Array(p.e.layout.handshake, 128, 1)[0] = 0 // HSW_KEYS_SET: as before control's write
  p.exit.setClock(3_000_000)
  t.equal(receive(p, junk(5, 148, p.e.local.mac1Key)).length, 0)
  t.equal(count(p.e.v, 'bad_mac1'), 5)
})

t.test('the shared secret is replaced once it is 2 minutes old, in the slot the workers read', async (t) => {
  const p = sessionPair(64)
  const shared = new SharedCookieSecret(p.e.layout, 1_000_000)
  const first = hex(shared.secret)
  t.equal(hex(refreshCookieSecret(shared, 1_000_000 + 119_999)), first, 'kept before 2 minutes')
  const slot = p.e.v.hsWords[HSW_SECRET_SLOT]
  const next = hex(refreshCookieSecret(shared, 1_000_000 + 120_000))
  t.not(next, first, 'replaced at 2 minutes')
  t.not(p.e.v.hsWords[HSW_SECRET_SLOT], slot, 'in the other slot, then switched')
  t.equal(
    hex(p.e.v.handshake.subarray(HS_SECRETS + 32 * p.e.v.hsWords[HSW_SECRET_SLOT], HS_SECRETS + 32 * p.e.v.hsWords[HSW_SECRET_SLOT] + 32)),
    next,
  )
  t.equal(shared.secretMs, 1_000_000 + 120_000)
})
