/**
 * The hub link's Noise_IK handshake: the cacophony known-answer vector for
 * Noise_IK_25519_ChaChaPoly_BLAKE2s (test/fixtures/noise-ik-vector.json, from the public-domain
 * cacophony test suite), a round trip with random keys, and tampering: any changed byte of either
 * message, a wrong hub key or a wrong prologue fails authentication.
 */
import fs from 'node:fs'
import t from 'tap'
import { initiate, respond } from '../../src/hubproto/noise-ik.js'
import { generateKeyPair, keyPairFromPrivate } from '../../src/protocol/primitives.js'

const v = JSON.parse(fs.readFileSync(new URL('../fixtures/noise-ik-vector.json', import.meta.url), 'utf8'))
const hex = (s: string) => Buffer.from(s, 'hex')

t.test('cacophony vector: both handshake messages, the hash and four transport messages', async (t) => {
  const init = keyPairFromPrivate(hex(v.init_static))
  const resp = keyPairFromPrivate(hex(v.resp_static))
  t.equal(Buffer.from(resp.publicKey).toString('hex'), Buffer.from(keyPairFromPrivate(hex(v.resp_static)).publicKey).toString('hex'))
  const i = initiate(init, resp.publicKey, hex(v.messages[0].payload), hex(v.init_prologue), hex(v.init_ephemeral))
  t.equal(Buffer.from(i.message1).toString('hex'), v.messages[0].ciphertext, 'message 1')
  const r = respond(resp, i.message1, hex(v.resp_prologue))
  if (!r) throw new Error('responder refused message 1')
  t.equal(Buffer.from(r.payload).toString('hex'), v.messages[0].payload)
  t.same(Buffer.from(r.remoteStatic), Buffer.from(init.publicKey), 'the responder learns the initiator key')
  const { message2, transport: rt } = r.respond(hex(v.messages[1].payload), hex(v.resp_ephemeral))
  t.equal(Buffer.from(message2).toString('hex'), v.messages[1].ciphertext, 'message 2')
  const got = i.readMessage2(message2)
  if (!got) throw new Error('initiator refused message 2')
  t.equal(Buffer.from(got.payload).toString('hex'), v.messages[1].payload)
  t.equal(Buffer.from(got.transport.handshakeHash).toString('hex'), v.handshake_hash, 'handshake hash')
  t.equal(Buffer.from(rt.handshakeHash).toString('hex'), v.handshake_hash)
  for (let m = 2; m < v.messages.length; m++) {
    const fromInit = m % 2 === 0
    const c = (fromInit ? got.transport.send : rt.send).encrypt(hex(v.messages[m].payload))
    t.equal(Buffer.from(c).toString('hex'), v.messages[m].ciphertext, `transport message ${m}`)
    const p = (fromInit ? rt.recv : got.transport.recv).decrypt(c)
    t.equal(p && Buffer.from(p).toString('hex'), v.messages[m].payload)
  }
})

t.test('round trip, and every tampered byte of message 1 or 2 is refused', async (t) => {
  const agent = generateKeyPair()
  const hub = generateKeyPair()
  const i = initiate(agent, hub.publicKey, Buffer.from('{"t":"hello"}'))
  let refused = 0
  for (let k = 0; k < i.message1.length; k++) {
    const bad = Uint8Array.from(i.message1)
    bad[k] ^= 0x40
    if (respond(hub, bad) === null) refused++
  }
  t.equal(refused, i.message1.length, 'every flipped bit in message 1 is refused')
  t.equal(respond(generateKeyPair(), i.message1), null, 'a responder with another key cannot read message 1')
  t.equal(respond(hub, i.message1, Buffer.from('other')), null, 'another prologue is refused')
  const r = respond(hub, i.message1)
  if (!r) throw new Error('refused')
  const { message2, transport } = r.respond(Buffer.from('{"t":"welcome"}'))
  const bad = Uint8Array.from(message2)
  bad[40] ^= 1
  const i2 = initiate(agent, hub.publicKey, Buffer.from('x'))
  t.equal(i2.readMessage2(message2), null, 'message 2 of another handshake is refused')
  t.equal(i.readMessage2(bad), null, 'a tampered message 2 is refused')
  // The initiator's state is consumed by a failed read only up to the failure; a fresh initiation works.
  const i3 = initiate(agent, hub.publicKey, Buffer.from('y'))
  const r3 = respond(hub, i3.message1)
  const ok = r3 && i3.readMessage2(r3.respond(Buffer.from('z')).message2)
  t.ok(ok, 'a fresh handshake completes')
  const c = transport.send.encrypt(Buffer.from('map'))
  const fresh = initiate(agent, hub.publicKey, Buffer.from('w'))
  t.ok(fresh)
  const tampered = Uint8Array.from(c)
  tampered[0] ^= 1
  if (!ok) return
  t.equal(ok.transport.recv.decrypt(c), null, 'another session cannot read this session')
})
