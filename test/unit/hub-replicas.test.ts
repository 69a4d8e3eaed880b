/**
 * Three hub replicas on one real PostgreSQL (test/helpers/postgres.ts: initdb as postgres in a temporary
 * directory, a Unix socket only), each a real `enclave hub serve` process on loopback, and whole agents
 * in this process (test/helpers/mesh.ts) that hold the three URLs:
 * - concurrent enrolments through different replicas never over-use a key or share an address;
 * - a policy change made through replica 1's admin API reaches the agents attached to the others;
 * - a killed replica's agents re-attach to another within 10 s, and traffic between them never stops;
 * - a killed leader is replaced, and the new leader's periodic work runs (the dead replica's row goes);
 * - PostgreSQL restarted: admin changes are refused with a clear error while it is down, and afterwards
 *   a change reaches every agent (the replicas re-LISTEN and catch up by revision).
 * Needs root (PostgreSQL runs as the postgres user).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { HubAuth } from '../../src/hub/auth.js'
import { initHub } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { enrol } from '../../src/ops/enrol.js'
import { Mesh, type MeshNode } from '../helpers/mesh.js'
import { mapHeld, simAgent } from '../helpers/hub-agent.js'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'
import { freePort } from '../../src/lab/ports.js'

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'run.js')
const skip = postgresSkipReason()
if (skip) t.plan(0, skip)

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<number> {
  const t0 = Date.now()
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return Date.now() - t0
}

interface Replica {
  n: number
  dir: string
  port: number
  portal: number
  url: string
  proc?: ChildProcess
  out: string[]
}

if (!skip) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-replicas-${process.pid}-`))
  const pg = await startPostgres('enclave-pg-replicas')
  const mesh = new Mesh('replicas')
  const replicas: Replica[] = []
  let store: HubStore
  let token = ''
  let hubKey = ''
  t.teardown(async () => {
    await mesh.close()
    for (const r of replicas) if (r.proc?.exitCode === null) r.proc.kill('SIGKILL')
    await store?.close()
    await pg.stop()
    fs.rmSync(tmp, { recursive: true, force: true })
  })

  const start = async (r: Replica) => {
    r.out.length = 0
    r.proc = spawn(
      process.execPath,
      [BIN, 'hub', 'serve', '--data-dir', r.dir, '--listen', `127.0.0.1:${r.port}`, '--portal', `127.0.0.1:${r.portal}`, '-v', '3'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    r.proc.stdout?.on('data', (d) => r.out.push(String(d)))
    r.proc.stderr?.on('data', (d) => r.out.push(String(d)))
    await until(`replica ${r.n} listens`, () => r.out.join('').includes('hub listening'), 20_000)
  }
  const leads = (r: Replica) => r.out.join('').includes('this hub replica leads') && r.proc?.exitCode === null
  const api = async (r: Replica, method: string, p: string, body?: unknown) => {
    const go = () =>
      fetch(`http://127.0.0.1:${r.portal}/api/v1${p}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
    // A kept-alive connection the server closed as it idled out (Node's 5 s) can fail the next request
    // before any byte of it is read: the client's race, not the replica's. Such a request is sent again once.
    const res = await go().catch((e) => {
      const code = (e as { cause?: { code?: string } }).cause?.code
      if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return go()
      throw e
    })
    return { status: res.status, body: (await res.json()) as Record<string, unknown> & { error?: { code: string; message: string } } }
  }

  t.before(async () => {
    const url = await pg.database('hub')
    for (let n = 1; n <= 3; n++) {
      const r: Replica = { n, dir: path.join(tmp, `r${n}`), port: await freePort(), portal: await freePort(), url: '', out: [] }
      r.url = `http://127.0.0.1:${r.port}`
      const kek = n === 1 ? undefined : fs.readFileSync(path.join(tmp, 'r1', 'hub.kek'), 'utf8')
      const init = await initHub(r.dir, `127.0.0.1:${r.port}`, { postgresUrl: url, join: n > 1, kek })
      // No reflect ports: agents on the memory network cannot send UDP to loopback, and a NAT class of
      // "blocked" would send their traffic over relay-tcp, which stays within one replica (README).
      const cfgFile = path.join(r.dir, 'hub.json')
      // Replicas taken for dead after 3 s (three 1 s heartbeats) rather than 10: the same code, a shorter test.
      fs.writeFileSync(
        cfgFile,
        JSON.stringify({
          ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')),
          ReflectPorts: [],
          Replicas: { HeartbeatMs: 1000, DeadAfterMs: 3000 },
        }),
      )
      if (n === 1) hubKey = init.publicKey
      else if (init.publicKey !== hubKey) throw new Error('a replica has another key')
      replicas.push(r)
    }
    for (const r of replicas) await start(r)
    store = await HubStore.open({ postgresUrl: url })
    token = (await new HubAuth(store).createToken('test', 'replica test')).token
  })

  const urls = replicas.map((r) => r.url)
  const join = async (n: MeshNode, key: string, first: number) => {
    const all = replicas.map((r) => r.url)
    const r = await enrol({
      file: n.profileFile,
      key,
      urls: [...all.slice(first), ...all.slice(0, first)],
      hubKey,
      allowGateway: false,
      acceptDefaultRoute: false,
      advertiseEndpoints: [mesh.endpoint(n)],
    })
    n.va = r.virtualAddress
    return r
  }
  void urls

  t.test("the hub key: sealed in the database, opened only with the first replica's hub.kek", async (t) => {
    const sealed = (await store.getMeta('hub_key')) ?? ''
    t.equal(Buffer.from(sealed, 'base64').length, 24 + 32 + 16, 'the database holds a nonce and a sealed 32-byte key')
    t.equal(await store.getMeta('hub_public_key'), hubKey, 'every replica presents the same public key')
    t.notOk(fs.existsSync(path.join(tmp, 'r2', 'hub.key')), 'no replica keeps the private key in a file')
    const wrong = Buffer.alloc(32, 7).toString('base64')
    await t.rejects(
      initHub(path.join(tmp, 'wrong'), '127.0.0.1:1', { postgresUrl: pg.url('hub'), join: true, kek: wrong }),
      /does not open with this key-encryption key/,
      'a replica with another hub.kek is refused',
    )
  })

  t.test('concurrent enrolments through three replicas: a 5-use key enrols exactly 5 systems, each its own address', async (t) => {
    const k = (await api(replicas[0], 'POST', '/keys', { description: 'five', uses: 5, autoApprove: true })).body.key as { key: string }
    const nodes = Array.from({ length: 9 }, (_, i) => mesh.node(`c${i}`))
    const results = await Promise.allSettled(nodes.map((n, i) => join(n, k.key, i % 3)))
    const ok = results.filter((r) => r.status === 'fulfilled')
    t.equal(ok.length, 5, 'five enrolled')
    t.ok(
      results
        .filter((r) => r.status === 'rejected')
        .every((r) => /exhausted|no uses|KEY_EXHAUSTED/i.test(String((r as PromiseRejectedResult).reason))),
      'the other four were refused for the key',
    )
    const rows = await store.db.selectFrom('systems').select(['virtual_address', 'identity']).execute()
    t.equal(new Set(rows.map((r) => r.virtual_address)).size, rows.length, 'every address distinct')
    const key = await store.db.selectFrom('enrolment_keys').selectAll().where('description', '=', 'five').executeTakeFirstOrThrow()
    t.equal(key.used_count, 5, 'the key counts 5 uses')
    t.equal(key.uses_remaining, 0)
    await api(replicas[0], 'POST', '/systems/remove', { identities: rows.map((r) => r.identity) })
  })

  t.test("an introduction across replicas: each side gets the other's candidates, and the far side the relay's address", async (t) => {
    const k = (await api(replicas[0], 'POST', '/keys', { description: 'intro', tags: 'intro', autoApprove: true })).body.key as {
      key: string
    }
    t.equal(
      (await api(replicas[0], 'POST', '/policies', { description: 'intro', senders: 'intro', receivers: 'intro', acl: ['any'] })).status,
      200,
    )
    const at = (r: Replica) => ({ port: r.port, hubKey })
    const a = await simAgent(at(replicas[0]), { enrol: { key: k.key }, endpoints: ['198.51.100.1:51820'] })
    const b = await simAgent(at(replicas[2]), { enrol: { key: k.key }, endpoints: ['198.51.100.2:51820'] })
    t.teardown(() => {
      a.close()
      b.close()
    })
    await until('a to hold b as a peer', () => mapHeld(a.received)?.Peers.length === 1, 5000)
    // Presence reaches the other replica with its next heartbeat (2 s): ask until the far side is known.
    const punched = b.next((m) => m.t === 'punch' && m.peer === a.identity, 10_000)
    const asking = setInterval(() => a.send({ t: 'path', peer: b.identity }), 300)
    try {
      const pb = (await punched).m
      t.same(pb.candidates, ['198.51.100.1:51820'], "the far agent gets the asking agent's endpoint")
      const ra = (await a.next((m) => m.t === 'relay' && m.peer === b.identity, 5000)).m
      const rb = (await b.next((m) => m.t === 'relay' && m.peer === a.identity, 5000)).m
      t.equal(ra.host, undefined, 'the asking agent uses its own replica for the relay')
      t.equal(rb.host, '127.0.0.1', "the far agent is told the relay's address (the asking replica's)")
      t.equal(rb.port !== ra.port, true, 'each side has its own relay port')
      const pa = (await a.next((m) => m.t === 'punch' && m.peer === b.identity, 5000)).m
      t.same(pa.candidates, ['198.51.100.2:51820'], "the asking agent gets the far agent's endpoint back")
    } finally {
      clearInterval(asking)
    }
    await api(replicas[0], 'POST', '/systems/remove', { identities: [a.identity, b.identity] })
  })

  t.test('six agents with three URLs: a change through replica 1 reaches all; a killed replica is survived', async (t) => {
    const k = (await api(replicas[1], 'POST', '/keys', { description: 'office', tags: 'office', autoApprove: true })).body.key as {
      key: string
    }
    t.equal(
      (await api(replicas[2], 'POST', '/policies', { description: 'office', senders: 'office', receivers: 'office', acl: ['any'] })).status,
      200,
    )
    const nodes = Array.from({ length: 6 }, (_, i) => mesh.node(`a${i}`))
    for (const [i, n] of nodes.entries()) await join(n, k.key, i % 3)
    for (const n of nodes) await mesh.start(n)
    await mesh.until(
      'every agent has five hub peers',
      () => nodes.every((n) => mesh.status(n).peers.filter((p) => p.source === 'hub').length === 5),
      20_000,
    )
    const where = () => nodes.map((n) => mesh.status(n).hub?.url)
    t.comment(`attached: ${where().join(', ')} (each agent starts at a random URL of its three)`)

    // A change through replica 1's API that concerns every agent: the sixth leaves the office tag, so the
    // other five drop it and it drops them, whichever replica each is attached to.
    const hubPeers = (n: MeshNode) => mesh.status(n).peers.filter((p) => p.source === 'hub').length
    const tag = await api(replicas[0], 'PUT', `/systems/${nodes[5].identity}/tags`, { tags: 'db' })
    t.equal(tag.status, 200, 'changed through replica 1')
    const reached = await until(
      'every agent to apply the change',
      () => nodes.slice(0, 5).every((n) => hubPeers(n) === 4) && hubPeers(nodes[5]) === 0,
      2000,
    )
    t.pass(`all six agents applied the change ${reached} ms after replica 1 answered (bound: 2,000)`)
    t.equal((await api(replicas[0], 'PUT', `/systems/${nodes[5].identity}/tags`, { tags: 'office' })).status, 200)
    await mesh.until('the sixth is back', () => nodes.every((n) => hubPeers(n) === 5), 5000)

    // Sessions between every pair before the kill (a peer's data plane follows its map a moment later).
    for (const n of nodes)
      for (const m of nodes)
        if (n !== m)
          await until(`${n.name} reaches ${m.name}`, async () => !!(await mesh.udp(n, m, { timeoutMs: 500 })), 10_000).catch((e) => {
            console.error(`${n.name}:\n${n.log.slice(-12).join('')}\n${m.name}:\n${m.log.slice(-12).join('')}`)
            console.error(JSON.stringify(mesh.peerStatus(n, m)), JSON.stringify(mesh.peerStatus(m, n)))
            throw e
          })
    // Kill the replica holding the most agents (SIGKILL: no goodbye to the database).
    const counts = replicas.map((r) => where().filter((u) => u === r.url).length)
    const victim = replicas[counts.indexOf(Math.max(...counts))]
    const moved = nodes.filter((n) => mesh.status(n).hub?.url === victim.url)
    const others = nodes.filter((n) => !moved.includes(n))
    victim.proc?.kill('SIGKILL')
    const t0 = Date.now()
    // Direct paths do not go through the hub: traffic between the moved agents and the rest flows at once.
    for (const n of moved) {
      const peer = others[0] ?? moved[(moved.indexOf(n) + 1) % moved.length]
      const got = await mesh.udp(n, peer)
      if (!got) console.error(`${n.name} -> ${peer.name}:\n${n.log.slice(-25).join('\n')}`)
      t.ok(got, `${n.name} still reaches ${peer.name} while its replica is down`)
    }
    await mesh.until(
      'the killed replica’s agents to re-attach elsewhere',
      () => moved.every((n) => mesh.status(n).hub?.state === 'up' && mesh.status(n).hub?.url !== victim.url),
      10_000,
    )
    t.pass(`${moved.length} agents re-attached ${Date.now() - t0} ms after the kill (bound: 10,000)`)
    t.equal(nodes.filter((n) => hubPeers(n) === 5).length, 6, 'no agent lost a peer')
    const other = replicas.find((r) => r !== victim) as Replica
    t.equal((await api(other, 'PUT', `/systems/${nodes[5].identity}/tags`, { tags: 'db' })).status, 200)
    await mesh.until('every agent to apply a change made after the move', () => nodes.slice(0, 5).every((n) => hubPeers(n) === 4), 5000)
    t.pass('a change after the move reached every agent')
    await api(other, 'PUT', `/systems/${nodes[5].identity}/tags`, { tags: 'office' })
    await mesh.until('the sixth is back', () => nodes.every((n) => hubPeers(n) === 5), 5000)
    await start(victim)

    t.test('kill the leader: another leads within 10 s and does the periodic work', async (t) => {
      await until('a leader', () => replicas.some(leads), 10_000)
      const leader = replicas.find(leads) as Replica
      const rows = async () => (await store.db.selectFrom('replicas').select('id').execute()).length
      // The first killed replica's row goes once the leader sees its heartbeat stop (10 s).
      await until('three replica rows', async () => (await rows()) === 3, 15_000)
      t.equal(await rows(), 3, 'three live replicas')
      leader.proc?.kill('SIGKILL')
      const t1 = Date.now()
      const took = await until('another leader', () => replicas.some((r) => r !== leader && leads(r)), 10_000)
      t.pass(`replica ${replicas.find((r) => r !== leader && leads(r))?.n} leads ${took} ms after the kill (bound: 10,000)`)
      await until("the new leader removes the dead replica's row", async () => (await rows()) === 2, 20_000)
      t.pass(`the dead replica was cleaned up by the new leader ${Date.now() - t1} ms after the kill`)
      await start(leader)
    })

    t.test('PostgreSQL restarted: changes refused while it is down, then every agent catches up', async (t) => {
      const live = replicas.filter((r) => r.proc?.exitCode === null)
      await pg.stopServer()
      const refused = await api(live[0], 'PUT', `/systems/${nodes[0].identity}/tags`, { tags: 'office,web' }).catch((e) => {
        console.error(`replica ${live[0].n} (exit ${live[0].proc?.exitCode}):\n${live[0].out.join('').slice(-3000)}`)
        throw e
      })
      t.equal(refused.status, 503, 'an admin change while PostgreSQL is down: 503')
      t.match(refused.body.error?.message ?? '', /database/i, `with a clear message (${refused.body.error?.message})`)
      t.ok(await mesh.udp(nodes[0], nodes[1]), 'agents keep talking while the database is down')
      await pg.startServer()
      await until(
        'the API to write again',
        async () => (await api(live[0], 'PUT', `/systems/${nodes[5].identity}/tags`, { tags: 'db' })).status === 200,
        15_000,
      )
      await mesh.until(
        'every agent to apply the change made after the restart',
        () => nodes.slice(0, 5).every((n) => hubPeers(n) === 4),
        10_000,
      )
      t.pass('every agent has the change made after PostgreSQL came back')
    })
  })
}
