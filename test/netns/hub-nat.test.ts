/**
 * Endpoint discovery through real kernel NAT (issue 20, src/hubproto/reflect.ts; routers from
 * src/lab/nat.ts): agents behind an "easy" router (one mapping, fixed port), a "hard" one (MASQUERADE
 * --random-fully: a mapping per destination) and on a public address each learn their NAT class from the
 * hub's two reflect ports; for the easy and public ones the hub makes the observed address the endpoint
 * peers are given.
 *
 *   [h1 10.1.0.2] ─ nat1 easy 198.51.100.11 ─┐
 *   [h2 10.2.0.2] ─ nat2 hard 198.51.100.12 ─┼─ inet0 ─ [hub 198.51.100.10]  [pub 198.51.100.20]
 */
import path from 'node:path'
import t from 'tap'
import { NatLab } from '../../src/lab/nat.js'
import { HubProc, Lab, type AgentInfo, haveCommand, rootSkipReason, statusJson, until } from '../helpers/netns.js'

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)

t.test('NAT discovery from the WireGuard port, behind real NAT', { skip }, async (t) => {
  const lab = new Lab('hubnat')
  let hubServer: HubProc | undefined
  t.teardown(async () => {
    hubServer?.kill()
    await lab.cleanup()
  })
  const nat = new NatLab(lab)
  const hub = await nat.publicHost('hub', '198.51.100.10')
  const pub = await nat.publicHost('pub', '198.51.100.20')
  const easy = await nat.site(1, 'easy')
  const h1 = await nat.siteHost(easy, 'h1')
  // The easy router maps h1's port 51820 to 40000: the address a TCP connection suggests (its source and
  // the listen port, 198.51.100.11:51820) is wrong, and only discovery finds the right one.
  await nat.rebind(easy, { port: 40000, flush: false })
  const hard = await nat.site(2, 'hard')
  const h2 = await nat.siteHost(hard, 'h2')

  hubServer = new HubProc(lab, hub.ns, path.join(lab.tmp, 'hub'))
  const json = (args: string[]) => (hubServer as HubProc).json(args)
  const hubKey: string = (await json(['init', '--listen', '198.51.100.10:8443'])).publicKey
  await hubServer.serve([])
  const key = (await json(['key', 'create', 'all', '--tags', 'laptops', '--auto-approve'])).key

  const nodes: Record<string, AgentInfo> = {}
  for (const [name, ns] of [
    ['h1', h1.ns],
    ['h2', h2.ns],
    ['pub', pub.ns],
  ] as const) {
    nodes[name] = lab.makeAgent({ name, ns })
    const r = await lab.cli(nodes[name], ['enrol', key, '--hub', 'http://198.51.100.10:8443', '--hub-key', hubKey])
    if (r.code !== 0) throw new Error(`enrol ${name} failed (${r.code}): ${r.stdout}${r.stderr}`)
    const p = lab.startAgent(nodes[name], ['-v', '3'], { ENCLAVE_STATE_DIR: path.join(nodes[name].dir, 'state') })
    await p.waitFor(/control socket ready/)
  }
  const natOf = async (n: AgentInfo) => {
    let h: any
    await until(
      `${n.name}'s NAT class`,
      async () => {
        h = (await statusJson(lab, n)).hub
        return h?.nat !== undefined
      },
      15_000,
    ).catch(() => {})
    return h ?? {}
  }
  const s1 = await natOf(nodes.h1)
  t.equal(s1.nat, 'easy', 'behind the easy router: easy')
  t.equal(s1.reflexive, `${easy.wanAddr}:40000`, "seen at the router's WAN address and the mapped port")
  const s2 = await natOf(nodes.h2)
  t.equal(s2.nat, 'hard', 'behind MASQUERADE --random-fully: hard')
  const sp = await natOf(nodes.pub)
  t.equal(sp.nat, 'none', 'on a public address: none')
  t.equal(sp.reflexive, '198.51.100.20:51820', 'seen at its own address')

  const endpointOf = async (identity: string) =>
    ((await json(['system', 'list'])).systems as Array<{ identity: string; endpoint: string | null }>).find((s) => s.identity === identity)
      ?.endpoint
  await until(
    'the easy agent endpoint on the hub',
    async () => (await endpointOf(nodes.h1.identity)) === `${easy.wanAddr}:40000`,
    10_000,
  ).catch(() => {})
  t.equal(await endpointOf(nodes.h1.identity), `${easy.wanAddr}:40000`, "the hub gives peers the easy agent's discovered endpoint")
  const doc = JSON.parse((await lab.cli(nodes.h2, ['doctor', '--json'])).stdout)
  t.ok(
    doc.checks.some((c: { name: string; detail: string }) => c.name === 'NAT' && /hard/.test(c.detail)),
    'doctor names the NAT class',
  )

  // The router rebinds (a new public port, its UDP entries flushed): the next round (every 25 s) finds it.
  await nat.rebind(easy, { port: 40001 })
  await until('the new mapping on the hub', async () => (await endpointOf(nodes.h1.identity)) === `${easy.wanAddr}:40001`, 40_000).catch(
    () => {},
  )
  t.equal(await endpointOf(nodes.h1.identity), `${easy.wanAddr}:40001`, 'after a rebinding the hub has the new endpoint within 40 s')
})
