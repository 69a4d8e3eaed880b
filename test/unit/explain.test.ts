/** `enclave explain` gives one verdict that accounts for the OS route and the receiver's policy. */
import t from 'tap'
import { explain, overallVerdict } from '../../src/ops/explain.js'
import type { StatusModel } from '../../src/views/status-model.js'

const status = {
  interface: 'enclave0',
  peers: [
    {
      identity: '29XM4',
      description: 'office',
      state: 'Up',
      endpoint: '203.0.113.7:51820',
      virtualAddress: '100.70.1.2',
      exitNodeFor: [{ route: '172.26.0.0/20', installed: true, active: true }],
    },
  ],
} as unknown as StatusModel // the model's peer fields explain reads; the rest is not needed here

const PRINTER = 0xac1a00fa
const toPrinter = explain('172.26.0.250', PRINTER, status, '172.26.0.250 dev enclave0 src 100.64.9.9 uid 0')

t.test('a route through an exit node whose policy refuses the flow: one verdict, the drop', async (t) => {
  t.match(toPrinter.verdict, /goes through 29XM4/, 'the route alone goes through the exit node')
  const v = overallVerdict(toPrinter, { receiver: '29XM4', verdict: 'drop: no policy allows' })
  t.match(v, /^dropped by 29XM4's policy \(no policy allows\)/)
  t.notMatch(v, /goes through/, 'no "goes through" next to a drop')
  t.equal(
    overallVerdict(toPrinter, { receiver: '29XM4', verdict: 'allow by Policies[0]' }),
    toPrinter.verdict,
    'an allowed flow keeps the route verdict',
  )
})

t.test('an address the OS cannot reach is not said to leave through the normal network', async (t) => {
  const e = explain('8.8.8.8', 0x08080808, status, 'RTNETLINK answers: Network is unreachable')
  t.match(e.verdict, /the OS has no route to it \(RTNETLINK answers: Network is unreachable\)/)
  t.notMatch(e.verdict, /leaves through your normal network/)
  const ok = explain('8.8.8.8', 0x08080808, status, '8.8.8.8 via 192.168.1.1 dev eth0 src 192.168.1.5 uid 0')
  t.match(ok.verdict, /leaves through your normal network/, 'with a default route it does leave')
})
