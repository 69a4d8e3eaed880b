/**
 * A relayed pair survives the replica that relays it (issue 22): two hub replicas on one real PostgreSQL
 * (src/lab/postgres.ts, a Unix socket: the hub's namespace reaches it through the file system), two agents
 * behind hard NATs (src/lab/nat.ts), so their only path is the hub's UDP relay. The replica whose process
 * holds the relay's port is killed (SIGKILL); the agents move to the other replica, ask for a path at once,
 * and pings flow again through that replica's relay within 10 s.
 *
 *   [h3] ─ nat3 hard ─┐
 *   [h4] ─ nat4 hard ─┴─ inet0 ─ [hub 198.51.100.10: replica 1 on :8443, replica 2 on :8453]
 */
import path from 'node:path'
import t from 'tap'
import { NatLab } from '../../src/lab/nat.js'
import { HubProc, Lab, type AgentInfo, haveCommand, rootSkipReason, statusJson, until } from '../helpers/netns.js'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false) || postgresSkipReason()
const HUB = '198.51.100.10'

t.test('a relayed pair moves to another replica’s relay when its replica dies', { skip }, async (t) => {
  const lab = new Lab('hubrepl')
  const pg = await startPostgres('enclave-pg-relay')
  const replicas: HubProc[] = []
  t.teardown(async () => {
    for (const r of replicas) r.kill()
    await lab.cleanup()
    await pg.stop()
  })
  const nat = new NatLab(lab)
  const hub = await nat.publicHost('hub', HUB)
  const s3 = await nat.site(3, 'hard')
  const s4 = await nat.site(4, 'hard')
  const h3 = await nat.siteHost(s3, 'h3')
  const h4 = await nat.siteHost(s4, 'h4')
  const url = await pg.database('hub')

  let hubPublicKey = ''
  for (const [i, port] of [8443, 8453].entries()) {
    const r = new HubProc(lab, hub.ns, path.join(lab.tmp, `hub${i}`))
    const args = ['init', '--listen', `${HUB}:${port}`, '--store', 'postgres', '--postgres-url', url]
    if (i) args.push('--join', '--kek-file', path.join(lab.tmp, 'hub0', 'hub.kek'))
    const made = await r.json(args)
    if (i === 0) hubPublicKey = made.publicKey
    else t.equal(made.publicKey, hubPublicKey, 'the second replica presents the same hub key')
    await r.serve(['-v', '4', '--portal', 'off'])
    replicas.push(r)
  }
  const key = (await replicas[0].json(['key', 'create', 'pair', '--tags', 'pair', '--auto-approve'])).key
  await replicas[1].json(['policy', 'create', 'pair', '--senders', 'pair', '--receivers', 'pair', '--acl', 'icmp'])

  const nodes: AgentInfo[] = []
  for (const [name, h] of [
    ['h3', h3],
    ['h4', h4],
  ] as const) {
    const n = lab.makeAgent({ name, ns: h.ns })
    const r = await lab.cli(n, ['enrol', key, '--hub', `http://${HUB}:8443,http://${HUB}:8453`, '--hub-key', hubPublicKey])
    if (r.code !== 0) throw new Error(`enrol ${name} failed (${r.code}): ${r.stdout}${r.stderr}`)
    nodes.push(n)
  }
  const procs: Array<{ log: string }> = []
  for (const n of nodes) {
    const p = lab.startAgent(n, ['-v', '4'], { ENCLAVE_STATE_DIR: path.join(n.dir, 'state') })
    procs.push(p)
    await p.waitFor(/control socket ready/)
  }
  for (const n of nodes) await until(`${n.name}'s NAT class`, async () => (await statusJson(lab, n)).hub?.nat !== undefined, 15_000)
  const [a, b] = nodes
  const peerOf = async (from: AgentInfo, to: AgentInfo) =>
    ((await statusJson(lab, from)).peers as Array<{ identity: string; path?: string; endpoint?: string }>).find(
      (p) => p.identity === to.identity,
    )
  const target = (await statusJson(lab, b)).virtualAddress as string

  // Continuous pings: the relay first carries them.
  const ping = lab.spawn(h3.ns, 'ping', ['-i', '0.1', '-W', '1', '-c', '1200', target])
  const out: string[] = []
  ping.stdout?.on('data', (d) => out.push(String(d)))
  t.teardown(() => {
    if (ping.exitCode === null) ping.kill('SIGINT')
  })
  await until(
    'h3 and h4 on the relay',
    async () => (await peerOf(a, b))?.path === 'relay-udp' && (await peerOf(b, a))?.path === 'relay-udp',
    15_000,
  )
  await until('pings through the relay', async () => /bytes from/.test(out.join('')), 10_000)
  const relayAt = (await peerOf(a, b))?.endpoint ?? ''
  const port = Number(relayAt.split(':')[1])
  t.equal(relayAt.split(':')[0], HUB, `h3's endpoint for h4 is the hub's relay (${relayAt})`)
  // The replica whose process holds that port relays the pair.
  const ss = (await lab.exec(hub.ns, 'ss', ['-Hulpn', `sport = :${port}`])).stdout
  const pid = Number(/pid=(\d+)/.exec(ss)?.[1])
  const victim = replicas.find((r) => r.proc?.pid === pid)
  t.ok(victim, `replica ${replicas.indexOf(victim as HubProc) + 1} (pid ${pid}) holds the relay port ${port}`)
  const seqBefore = () => {
    const seqs = [...out.join('').matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]))
    return seqs.length ? Math.max(...seqs) : 0
  }
  const lastSeq = seqBefore()
  const t0 = Date.now()
  victim?.kill()
  await until('pings answered again after the kill', async () => seqBefore() > lastSeq + 5, 15_000).catch((e) => {
    const since = (log: string) =>
      log
        .split('\n')
        .filter((l) => (l.match(/time=(\S+)/)?.[1] ?? '') >= new Date(t0 - 500).toISOString())
        .join('\n')
    t.comment(`h3:\n${since(procs[0].log).slice(-5000)}\nh4:\n${since(procs[1].log).slice(-5000)}`)
    t.comment(
      `surviving replica:\n${replicas
        .find((r) => r !== victim)
        ?.out.join('')
        .slice(-4000)}`,
    )
    throw e
  })
  // The first reply after the gap: its sequence number says when (pings go every 100 ms).
  const took = Date.now() - t0
  t.ok(took <= 10_000, `pings came back ${took} ms after the relaying replica was killed (bound: 10,000)`)
  const now = (await peerOf(a, b))?.endpoint ?? ''
  t.not(now, relayAt, `h3 now reaches h4 by another endpoint (${now})`)
  const other = replicas.find((r) => r !== victim) as HubProc
  const ss2 = (await lab.exec(hub.ns, 'ss', ['-Hulpn', `sport = :${Number(now.split(':')[1])}`])).stdout
  t.match(ss2, new RegExp(`pid=${other.proc?.pid}\\b`), 'the surviving replica relays them now')
})
