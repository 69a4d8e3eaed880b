/**
 * Three hub replicas on one PostgreSQL under load (issue 22): `agents` simulated agents (the real
 * handshake and map protocol, src/../bench/hub-load.ts's SimAgent) spread over three `enclave hub serve`
 * processes on loopback, with a real PostgreSQL (src/lab/postgres.ts: a Unix socket only). Measures:
 *  - enrolment of all of them through the three replicas;
 *  - a policy change, written once, to the acknowledgement of every agent it concerns, on whichever
 *    replica each is attached: p50, p99, max (target: p99 <= 2 s with 3 x 3,000 agents);
 *  - one replica killed (SIGKILL): its agents move to the next URL after a random wait under 1 s, as the
 *    agent's first reconnect does, and resume; kill to re-attached: p50, p99, max (target: p99 <= 10 s),
 *    and how many resumed without a full map.
 * The fleet is in sites of 300 (30 servers, 270 laptops; laptops-k reach servers-k), as hub-load's.
 * Needs root (PostgreSQL runs as the postgres user).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { HubAdmin } from '../src/hub/admin.js'
import { initHub } from '../src/hub/hub.js'
import { HubStore } from '../src/hub/store.js'
import { HUB_PATH } from '../src/hubproto/wire.js'
import { BIN } from '../src/lab/lab.js'
import { postgresSkipReason, startPostgres } from '../src/lab/postgres.js'
import { generateKeyPair } from '../src/protocol/primitives.js'
import { SimAgent, waitForHub } from './hub-load.js'
import { freePort } from '../src/lab/ports.js'

export interface HubReplicasResult {
  case: 'hub-replicas'
  replicas: number
  agents: number
  enrolS: number
  policyRecipients: number
  policyRecipientReplicas: number
  policyToAckP50Ms: number
  policyToAckP99Ms: number
  policyToAckMaxMs: number
  killedAgents: number
  reattachP50Ms: number
  reattachP99Ms: number
  reattachMaxMs: number
  resumedWithoutFullMap: number
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : Number.NaN
}

export async function runHubReplicas(agents = 9000, perSite = 300): Promise<HubReplicasResult | { case: 'hub-replicas'; skipped: string }> {
  const skip = postgresSkipReason()
  if (skip) return { case: 'hub-replicas', skipped: skip }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hubreplicas-${process.pid}-`))
  const pg = await startPostgres('enclave-pg-bench')
  const procs: ChildProcess[] = []
  const out: string[] = []
  let store: HubStore | undefined
  const fleet: SimAgent[] = []
  try {
    const url = await pg.database('hub')
    const ports: number[] = []
    let hubKey = ''
    for (let n = 0; n < 3; n++) {
      const port = await freePort()
      ports.push(port)
      const d = path.join(dir, `r${n}`)
      const kek = n ? fs.readFileSync(path.join(dir, 'r0', 'hub.kek'), 'utf8') : undefined
      const r = await initHub(d, `127.0.0.1:${port}`, { postgresUrl: url, join: n > 0, kek })
      // The simulated agents send no reflect datagrams; the portal is not under test.
      const cfgFile = path.join(d, 'hub.json')
      fs.writeFileSync(
        cfgFile,
        JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), ReflectPorts: [], Portal: { Listen: 'off' } }),
      )
      hubKey = r.publicKey
    }
    for (let n = 0; n < 3; n++) {
      const p = spawn(
        process.execPath,
        [BIN, 'hub', 'serve', '--data-dir', path.join(dir, `r${n}`), '-v', process.env.BENCH_HUB_LOG ?? '0'],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      )
      p.stdout?.on('data', (d) => out.push(String(d)))
      p.stderr?.on('data', (d) => out.push(String(d)))
      procs.push(p)
    }
    for (const port of ports) await waitForHub(port, 400)
    store = await HubStore.open({ postgresUrl: url })
    const admin = new HubAdmin(store, 'bench')
    const sites = Math.ceil(agents / perSite)
    const serversPerSite = Math.max(1, Math.round(perSite / 10))
    const site = (i: number) => Math.floor(i / perSite)
    const isServer = (i: number) => i % perSite < serversPerSite
    const keys: Array<{ s: string; l: string }> = []
    const policy = (k: number, acls: Array<{ Protocol: string; Ports?: string }>) => ({
      SenderTags: [`laptops-${k}`],
      ReceiverTags: [`servers-${k}`],
      Acls: acls,
    })
    for (let k = 0; k < sites; k++) {
      const kS = await admin.createKey(`servers-${k}`, { autoApprove: true, tags: [`servers-${k}`] })
      const kL = await admin.createKey(`laptops-${k}`, { autoApprove: true, tags: [`laptops-${k}`] })
      keys.push({ s: kS.key, l: kL.key })
      await admin.putPolicy(`site ${k}`, policy(k, [{ Protocol: 'Tcp', Ports: '22' }]), { create: true })
    }
    const urls = ports.map((p) => `ws://127.0.0.1:${p}${HUB_PATH}`)
    const hub = Buffer.from(hubKey, 'base64')
    // Agent i starts on replica i % 3, as a fleet spread by its random first URL.
    for (let i = 0; i < agents; i++) fleet.push(new SimAgent(i, urls[i % 3], hub))
    const t0 = performance.now()
    for (let i = 0; i < agents; i += 60) {
      await Promise.all(
        fleet.slice(i, i + 60).map(async (a) => {
          for (let tries = 0; ; tries++)
            try {
              await a.connect(isServer(a.i) ? keys[site(a.i)].s : keys[site(a.i)].l)
              break
            } catch (e) {
              if (tries > 3 || !String(e).includes('IDENTITY_TAKEN')) throw e
              a.keys = generateKeyPair()
            }
        }),
      )
    }
    const enrolS = (performance.now() - t0) / 1000
    await new Promise((r) => setTimeout(r, 2000))

    // A policy change, written once: site 0's servers (on all three replicas) enforce a new Acl set.
    const target = fleet.filter((a) => site(a.i) === 0 && isServer(a.i))
    const tc = performance.now()
    await admin.putPolicy('site 0', policy(0, [{ Protocol: 'Tcp', Ports: '22' }, { Protocol: 'Icmp' }]), {})
    const rev = await store.revision()
    const deadline = performance.now() + 30_000
    while (performance.now() < deadline && target.some((a) => !a.acks.has(rev))) await new Promise((r) => setTimeout(r, 5))
    const lat = target.map((a) => (a.acks.get(rev) ?? Number.POSITIVE_INFINITY) - tc)
    const recipientReplicas = new Set(target.map((a) => a.url)).size

    // Kill replica 1: its agents move on after a random wait under 1 s and resume with their map's hash.
    const victim = urls[1]
    const moved = fleet.filter((a) => a.url === victim)
    const reattached: number[] = []
    let resumed = 0
    const tk = performance.now()
    procs[1].kill('SIGKILL')
    await Promise.all(
      moved.map(async (a) => {
        await new Promise((r) => setTimeout(r, Math.random() * 1000))
        const next = new SimAgent(a.i, urls[2], hub)
        next.keys = a.keys
        next.map = a.map
        next.peers = a.peers
        next.sum = a.sum
        for (let tries = 0; tries < 20; tries++)
          try {
            await next.connect()
            break
          } catch {
            await new Promise((r) => setTimeout(r, 200 + Math.random() * 300))
          }
        reattached.push(performance.now() - tk)
        if (!next.bytesIn.some((b) => b.t === 'map')) resumed++
        fleet[a.i] = next
      }),
    )
    return {
      case: 'hub-replicas',
      replicas: 3,
      agents,
      enrolS: +enrolS.toFixed(1),
      policyRecipients: lat.length,
      policyRecipientReplicas: recipientReplicas,
      policyToAckP50Ms: +pct(lat, 50).toFixed(1),
      policyToAckP99Ms: +pct(lat, 99).toFixed(1),
      policyToAckMaxMs: +Math.max(...lat).toFixed(1),
      killedAgents: moved.length,
      reattachP50Ms: +pct(reattached, 50).toFixed(0),
      reattachP99Ms: +pct(reattached, 99).toFixed(0),
      reattachMaxMs: +Math.max(...reattached).toFixed(0),
      resumedWithoutFullMap: resumed,
    }
  } catch (e) {
    console.error(`the replicas' last lines:\n${out.join('').slice(-3000)}`)
    throw e
  } finally {
    for (const a of fleet) a.ws?.terminate()
    for (const p of procs) if (p.pid && p.exitCode === null) p.kill('SIGKILL')
    await store?.close()
    await pg.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  runHubReplicas(Number(process.argv[2] ?? 9000)).then((r) => console.log(JSON.stringify(r)))
}
