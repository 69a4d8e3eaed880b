/**
 * What the agent says is what it did, checked on whole agents in one process (test/helpers/mesh.ts).
 */
import t from 'tap'
import { type MeshNode, Mesh, icmpEcho, logFields } from '../helpers/mesh.js'

const LAN = '172.26.0.0/20'
const PRINTER = '172.26.0.250'

function exitAndClient(mesh: Mesh): { e: MeshNode; c: MeshNode } {
  const e = mesh.node('exit')
  const c = mesh.node('laptop')
  mesh.writeProfile(e, { Peers: [mesh.peer(c)], ExitNode: { ProvidesRoutes: [LAN] } })
  mesh.writeProfile(c, { Peers: [mesh.peer(e, { Endpoint: mesh.endpoint(e) })], ExitNode: { AvailableRoutes: { [e.identity]: [LAN] } } })
  return { e, c }
}

const flows = (n: MeshNode) =>
  n.log
    .filter((l) => l.includes('msg=flow'))
    .map(logFields)
    .filter((f) => f.proto !== 'udp') // the packet that brought the session up

t.test('-v 5 flow lines describe the inner packet in both directions, outbound too (read before it is sealed)', async (t) => {
  const mesh = new Mesh('flowlog')
  t.teardown(() => mesh.close())
  const { e, c } = exitAndClient(mesh)
  await mesh.start(e, { verbosity: 5 })
  await mesh.start(c, { verbosity: 5 })
  // A session first (the first packet waits for the handshake), then one ping through the exit node.
  t.ok(await mesh.udp(c, PRINTER, { dport: 9 }, e), 'session up')
  c.log.length = 0
  e.log.length = 0
  c.dev!.sendToTun(icmpEcho(c.va, PRINTER, 8, 77, 1))
  const req = await e.dev!.nextFromTun((p) => p[9] === 1 && p[20] === 8)
  t.ok(req, 'the echo request left the exit node into its LAN')
  e.dev!.sendToTun(icmpEcho(PRINTER, c.va, 0, 77, 1))
  const rep = await c.dev!.nextFromTun((p) => p[9] === 1 && p[20] === 0)
  t.ok(rep, 'the echo reply reached the laptop')
  await mesh.until('four flow lines', () => flows(c).length >= 2 && flows(e).length >= 2)
  const want = (dir: string, src: string, dst: string, type: string, verdict: RegExp) => ({
    dir,
    proto: 'icmp',
    src,
    dst,
    icmp_type: type,
    verdict,
  })
  t.match(
    flows(c),
    [want('outbound', c.va, PRINTER, '8', /routed/), want('inbound', PRINTER, c.va, '0', /delivered/)],
    'laptop: request out, reply in',
  )
  t.match(
    flows(e),
    [want('inbound', c.va, PRINTER, '8', /routed to LAN/), want('outbound', PRINTER, c.va, '0', /routed/)],
    'exit node: request in, reply out',
  )
  for (const f of [...flows(c), ...flows(e)])
    t.equal(f.proto, 'icmp', `no line shows ciphertext as a packet (${f.dir} ${f.src} -> ${f.dst})`)
})
