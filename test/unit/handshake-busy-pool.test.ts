/**
 * A responder whose handshake pool is busy: two initiations from the same peer that arrived seconds apart
 * leave the pool together. WireGuard's flood check (at most one initiation per peer every 20 ms) must
 * measure when they arrived, not when the pool was done with them: measured after the pool, the second
 * (the only one the initiator still holds state for) was refused as a flood, the first was answered in
 * vain, and the session waited for the initiator's next retry, 5 s later.
 *
 * Whole agents in one process (test/helpers/mesh.ts; their clock runs with real time, and the test moves it
 * ahead to reach the initiator's retry); the responder's real
 * pool is wrapped so that the first initiation's result is held until a second is queued, and results come
 * back in order, as from one busy pool thread.
 */
import t from 'tap'
import { REKEY_TIMEOUT_MS } from '../../src/protocol/constants.js'
import type { HandshakePool } from '../../src/agent/handshake-pool.js'
import { startHandshakePool } from '../../src/agent/handshake-pool.js'
import type { HandshakeTaskRunner } from '../../src/agent/peers/handshakes.js'
import { Mesh } from '../helpers/mesh.js'

/**
 * The real pool, with the first consume's result held until a second consume's result is ready: then both
 * come back in order, at the same moment of the responder's clock.
 */
function busyPool(real: HandshakePool, seen: { consumes: number }): HandshakePool {
  let open!: () => void
  const gate = new Promise<void>((r) => {
    open = r
  })
  let last: Promise<unknown> = Promise.resolve()
  const runTask = ((task: Parameters<HandshakeTaskRunner>[0]) => {
    if (task.op !== 'consume') return real.runTask(task)
    const i = ++seen.consumes
    const result = real.runTask(task).then(async (r) => {
      if (i === 1) await gate
      if (i === 2) open()
      return r
    })
    const inOrder = last.then(() => result)
    last = inOrder.catch(() => undefined)
    return inOrder
  }) as HandshakeTaskRunner
  return { runTask, destroy: () => real.destroy() }
}

t.test('two initiations that arrived apart are not taken for a flood when a busy pool returns them together', async (t) => {
  const mesh = new Mesh('busypool')
  t.teardown(() => mesh.close())
  const a = mesh.node('a')
  const b = mesh.node('b')
  mesh.writeProfile(a, { Peers: [mesh.peer(b, { Endpoint: mesh.endpoint(b) })] })
  mesh.writeProfile(b, { Peers: [mesh.peer(a)] })
  const seen = { consumes: 0 }
  await mesh.start(a)
  await mesh.start(b, { deps: { handshakePool: (sk, pk) => busyPool(startHandshakePool(sk, pk), seen) } })

  // a's first packet sends the first initiation; b's pool holds it.
  const first = mesh.udp(a, b, { payload: 'first', timeoutMs: 20_000 })
  await mesh.until('b to take the first initiation', () => seen.consumes === 1)
  await mesh.settle()
  t.equal(mesh.peerStatus(a, b).state === 'Up', false, 'no session while b holds the first initiation')

  // a retries after REKEY_TIMEOUT (plus up to 333 ms of jitter); the retry opens b's pool, and b gets both
  // results back to back, at the same moment of its clock.
  await mesh.advance(REKEY_TIMEOUT_MS + 1000, 250)
  await mesh.until("a's retry at b's pool", () => seen.consumes >= 2)
  t.equal(seen.consumes, 2, 'b took exactly two initiations from a')
  // With the retry answered the session is up within milliseconds; refused, the next retry comes 5 s later.
  await mesh.until('the session', () => mesh.peerStatus(a, b).state === 'Up', 2000).catch(() => undefined)
  const refused = b.log.filter((l) => l.includes('handshake initiation refused'))
  t.same(refused, [], 'b refused neither initiation (they arrived 5 s apart: no flood)')
  t.equal(mesh.peerStatus(a, b).state, 'Up', "a's session is up with its retry, without waiting 5 s more")
  t.ok(await first, 'the first packet, staged during the handshake, reached b')
  t.equal(seen.consumes, 2, 'and no third initiation was needed')
})
