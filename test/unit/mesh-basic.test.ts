import t from 'tap'
import { Mesh, addrs } from '../helpers/mesh.js'

t.test('two whole agents in one process: handshake, then packets both ways', async (t) => {
  const mesh = new Mesh('basic')
  t.teardown(async () => {
    await mesh.close().catch((e) => console.error('TEARDOWN', e))
  })
  const a = mesh.node('a')
  const b = mesh.node('b')
  mesh.writeProfile(a, { Peers: [mesh.peer(b, { Endpoint: mesh.endpoint(b) })] })
  mesh.writeProfile(b, { Peers: [mesh.peer(a)] })
  await mesh.start(a)
  await mesh.start(b)
  const got = await mesh.udp(a, b, { payload: 'first packet' })
  t.ok(got, 'the first packet reached b (staged during the handshake, then sent)')
  if (got) t.same(addrs(got), { src: a.va, dst: b.va }, 'with its addresses unchanged')
  const back = await mesh.udp(b, a, { payload: 'reply' })
  t.ok(back, 'b answers a through the session b did not start')
  t.equal(mesh.peerStatus(a, b).state, 'Up')
  t.equal(mesh.peerStatus(b, a).state, 'Up')
})
