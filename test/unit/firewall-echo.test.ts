/**
 * The reply-only firewall keys ICMP echo flows by identifier and by which side asked: a flow a peer
 * started with an echo request lets only echo replies of that identifier leave toward it.
 */
import t from 'tap'
import { createConntrack } from '../../src/dataplane/conntrack.js'
import { EGRESS_DROP, EGRESS_REPLY, Firewall } from '../../src/dataplane/firewall.js'
import type { DataplaneTables } from '../../src/ipc/messages.js'
import { parseIpv4 } from '../../src/common/ipv4.js'
import { icmpEcho } from '../helpers/mesh.js'

const PEER = '10.99.0.2'
const LAN_HOST = '172.26.0.10'
const tables = { selfAddr: parseIpv4('10.99.0.1') as number } as unknown as DataplaneTables

t.test('a LAN host answers a peer ping; its echo request with the same id does not leave as a reply', async (t) => {
  const fw = new Firewall(createConntrack(), 0)
  const now = 100
  const req = icmpEcho(PEER, LAN_HOST, 8, 4242, 1)
  t.equal(fw.track(req, 0, 3, now), 0, "the peer's echo request is tracked")
  const reply = icmpEcho(LAN_HOST, PEER, 0, 4242, 1)
  t.equal(fw.egress(reply, 0, reply.length, 3, tables, now), EGRESS_REPLY, 'the echo reply leaves')
  const lanReq = icmpEcho(LAN_HOST, PEER, 8, 4242, 2)
  t.equal(fw.egress(lanReq, 0, lanReq.length, 3, tables, now), EGRESS_DROP, "the LAN host's echo request with that id is dropped")
  const otherId = icmpEcho(LAN_HOST, PEER, 0, 4243, 1)
  t.equal(fw.egress(otherId, 0, otherId.length, 3, tables, now), EGRESS_DROP, 'a reply with another id is dropped')
})
