/**
 * The hub under load: N simulated agents (the real handshake and map protocol, no TUN) in this process
 * against `enclave hub serve` in a child process, on loopback (each agent from its own 127.x address,
 * as a fleet would come from many addresses). Measures:
 *  - enrolment of all N (auto-approve key), and the time to each agent's first map;
 *  - a policy change to the last acknowledgement: p50, p99, max over the agents it concerns;
 *  - the hub's memory per connected agent (RSS with N connected minus RSS with none, over N);
 *  - bytes per delta for an endpoint change (a system reconnecting from elsewhere) and to how many.
 * The fleet: 90 % laptops, 10 % servers; a policy lets laptops reach servers.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import WebSocket from 'ws'
import { BIN } from '../src/lab/lab.js'
import { HubAdmin } from '../src/hub/admin.js'
import { initHub } from '../src/hub/hub.js'
import { HubStore } from '../src/hub/store.js'
import { type HubDelta, type HubMap, type HubPeer, addDigest, mapHashWith, peersDigest } from '../src/hubproto/map.js'
import { initiate } from '../src/hubproto/noise-ik.js'
import {
  HUB_PATH,
  MessageReader,
  T_MSG1,
  T_MSG2,
  helloTimestamp,
  hubToAgentSchema,
  sealMessage,
  welcomeSchema,
} from '../src/hubproto/wire.js'
import { generateKeyPair } from '../src/protocol/primitives.js'

export interface HubLoadResult {
  case: 'hub-load'
  agents: number
  sites: number
  enrolS: number
  firstMapP99Ms: number
  policyToAckP50Ms: number
  policyToAckP99Ms: number
  policyToAckMaxMs: number
  policyRecipients: number
  rssPerAgentKiB: number
  endpointDeltaBytesMax: number
  endpointDeltaRecipients: number
  fullMapBytesMax: number
}

export class SimAgent {
  ws?: WebSocket
  map: HubMap | null = null
  rev = 0
  acks = new Map<number, number>()
  bytesIn: Array<{ t: string; bytes: number; at: number }> = []
  keys = generateKeyPair()
  private lastTs = 0n

  constructor(
    readonly i: number,
    readonly url: string,
    readonly hubKey: Buffer,
  ) {}

  /** The map's peers by key and their digest sum: a delta costs what it carries (as in a fleet, each agent does its own). */
  peers = new Map<string, HubPeer>()
  sum: Uint32Array = new Uint32Array(8)

  hash(): string {
    return mapHashWith(this.map as HubMap, this.sum)
  }

  /** applyDelta's rules, on the index (checked against applyDelta by the map hash the hub sends). */
  apply(d: HubDelta): void {
    const set = (p: HubPeer) => {
      const o = this.peers.get(p.PublicKey)
      if (o) addDigest(this.sum, o, -1)
      addDigest(this.sum, p, 1)
      this.peers.set(p.PublicKey, p)
    }
    for (const k of d.Remove) {
      const o = this.peers.get(k)
      if (o) addDigest(this.sum, o, -1)
      this.peers.delete(k)
    }
    for (const p of d.Upsert) set(p)
    if (d.Patch?.length) {
      const byId = new Map([...this.peers.values()].map((p) => [p.Identity, p]))
      for (const x of d.Patch) {
        const p = byId.get(x.Identity)
        if (!p) continue
        const { Endpoint: _old, ...rest } = p
        set(x.Endpoint ? { ...rest, Endpoint: x.Endpoint } : rest)
      }
    }
    const m = this.map as HubMap
    this.map = {
      Self: d.Self ?? m.Self,
      Peers: m.Peers,
      Policies: d.Policies ?? m.Policies,
      AvailableRoutes: d.AvailableRoutes ?? m.AvailableRoutes,
    }
  }

  get localAddress(): string {
    return `127.${1 + Math.floor(this.i / 60000)}.${Math.floor(this.i / 250) % 240}.${1 + (this.i % 250)}`
  }

  connect(enrolKey?: string, endpoint = `198.18.${Math.floor(this.i / 250)}.${1 + (this.i % 250)}:51820`): Promise<void> {
    const ts = helloTimestamp(Date.now(), this.lastTs)
    this.lastTs = BigInt(`0x${ts}`)
    const hello = {
      t: 'hello',
      v: 1,
      ts,
      hostname: `sim${this.i}`,
      listenPort: 51820,
      ...(enrolKey ? { enrol: { key: enrolKey } } : {}),
      ...(this.map ? { resume: { hash: this.hash() } } : {}),
      allowGateway: false,
      acceptDefaultRoute: false,
      advertise: [],
      endpoints: [endpoint],
    }
    const hs = initiate(this.keys, this.hubKey, Buffer.from(JSON.stringify(hello)))
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { localAddress: this.localAddress, maxPayload: 64 * 1024 * 1024 })
      this.ws = ws
      let reader: MessageReader | null = null
      let send: ((m: unknown) => void) | null = null
      ws.on('open', () => ws.send(Buffer.concat([Buffer.of(T_MSG1), hs.message1])))
      ws.on('error', reject)
      // Closed by the hub before a map came: fail with its reason instead of waiting forever.
      ws.on('close', (code, why) => reject(new Error(`closed by the hub before a map (${code} ${String(why)})`)))
      ws.on('message', (data: Buffer) => {
        if (!reader) {
          const got = data[0] === T_MSG2 ? hs.readMessage2(data.subarray(1)) : null
          if (!got) return reject(new Error('handshake failed'))
          const w = welcomeSchema.safeParse(JSON.parse(Buffer.from(got.payload).toString()))
          if (!w.success) return reject(new Error(`refused: ${Buffer.from(got.payload).toString()}`))
          reader = new MessageReader(got.transport.recv)
          const tx = got.transport.send
          send = (m) => {
            for (const f of sealMessage(tx, m)) ws.send(f)
          }
          return
        }
        const msg = reader.read(data)
        if (msg === undefined) return
        const m = hubToAgentSchema.parse(msg)
        this.bytesIn.push({ t: m.t, bytes: data.length, at: performance.now() })
        if (m.t === 'map') {
          this.map = m.map
          this.peers = new Map(m.map.Peers.map((p) => [p.PublicKey, p]))
          this.sum = peersDigest(m.map.Peers)
        } else if (m.t === 'delta' && this.map) this.apply(m.delta)
        if (m.t === 'map' || m.t === 'delta') {
          if (this.map && this.hash() !== m.hash) throw new Error('hash mismatch')
          this.rev = m.rev
          this.acks.set(m.rev, performance.now())
          send?.({ t: 'ack', rev: m.rev })
          resolve()
        }
      })
    })
  }
}

/** Resolves once a hub on 127.0.0.1:`port` answers its key request (at most tries x 50 ms). */
export async function waitForHub(port: number, tries = 200): Promise<void> {
  for (
    let i = 0;
    i < tries &&
    !(await fetch(`http://127.0.0.1:${port}/enclave/v1/key`).then(
      () => true,
      () => false,
    ));
    i++
  )
    await new Promise((r) => setTimeout(r, 50))
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) : 0
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : Number.NaN
}

/**
 * `sites` > 1 splits the fleet into that many sites of the same shape (each its own tags, keys and policy:
 * laptops-k to servers-k), as an organisation with offices or departments; the policy change is site 0's.
 */
export async function runHubLoad(agents: number, sites = 1): Promise<HubLoadResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-hubload-${process.pid}-`))
  let hub: ChildProcess | undefined
  const out: string[] = []
  try {
    const port = 20000 + (process.pid % 20000)
    const { publicKey } = await initHub(dir, `127.0.0.1:${port}`)
    hub = spawn(process.execPath, [BIN, 'hub', 'serve', '--data-dir', dir, '-v', process.env.BENCH_HUB_LOG ?? '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    hub.stdout?.on('data', (d) => out.push(String(d)))
    hub.stderr?.on('data', (d) => out.push(String(d)))
    await waitForHub(port)
    const pid = hub.pid as number
    const rss0 = rssKiB(pid)
    const store = await HubStore.open({ file: path.join(dir, 'hub.db') })
    const admin = new HubAdmin(store, 'bench')
    const perSite = Math.ceil(agents / sites)
    const serversPerSite = Math.max(1, Math.round(perSite / 10))
    const site = (i: number) => Math.floor(i / perSite)
    const isServer = (i: number) => i % perSite < serversPerSite
    const keys: Array<{ s: string; l: string }> = []
    const policy = (k: number, acls: Array<{ Protocol: string; Ports?: string }>) => ({
      SenderTags: [sites > 1 ? `laptops-${k}` : 'laptops'],
      ReceiverTags: [sites > 1 ? `servers-${k}` : 'servers'],
      Acls: acls,
    })
    const policyName = (k: number) => (sites > 1 ? `laptops to servers ${k}` : 'laptops to servers')
    for (let k = 0; k < sites; k++) {
      const sfx = sites > 1 ? `-${k}` : ''
      const kS = await admin.createKey(`servers${sfx}`, { autoApprove: true, tags: [`servers${sfx}`] })
      const kL = await admin.createKey(`laptops${sfx}`, { autoApprove: true, tags: [`laptops${sfx}`] })
      keys.push({ s: kS.key, l: kL.key })
      await admin.putPolicy(policyName(k), policy(k, [{ Protocol: 'Tcp', Ports: '22' }]), { create: true })
    }
    const url = `ws://127.0.0.1:${port}${HUB_PATH}`
    const fleet = Array.from({ length: agents }, (_, i) => new SimAgent(i, url, Buffer.from(publicKey, 'base64')))
    const t0 = performance.now()
    const firstMap: number[] = []
    for (let i = 0; i < agents; i += 50) {
      await Promise.all(
        fleet.slice(i, i + 50).map(async (a) => {
          const s = performance.now()
          // A 5-character identity collides now and then in a fleet this size: a new key, as a real system would.
          for (let tries = 0; ; tries++)
            try {
              await a.connect(isServer(a.i) ? keys[site(a.i)].s : keys[site(a.i)].l)
              break
            } catch (e) {
              if (tries > 3 || !String(e).includes('IDENTITY_TAKEN')) throw e
              a.keys = generateKeyPair()
            }
          firstMap.push(performance.now() - s)
        }),
      )
    }
    const enrolS = (performance.now() - t0) / 1000
    // Everyone settled: wait until the hub sent its last delta from the enrolment wave.
    await new Promise((r) => setTimeout(r, 1500))
    const rss1 = rssKiB(pid)
    const fullMapBytesMax = Math.max(...fleet.flatMap((a) => a.bytesIn.filter((b) => b.t === 'map').map((b) => b.bytes)))
    // A policy change: the servers enforce a new Acl set.
    for (const a of fleet) a.bytesIn.length = 0
    const before = fleet.map((a) => a.rev)
    const tc = performance.now()
    await admin.putPolicy(policyName(0), policy(0, [{ Protocol: 'Tcp', Ports: '22' }, { Protocol: 'Icmp' }]), {})
    const rev = await store.revision()
    const deadline = performance.now() + 30_000
    const concerned = () => fleet.filter((a) => a.acks.has(rev) || a.rev !== before[a.i])
    while (performance.now() < deadline && fleet.filter((a) => site(a.i) === 0 && isServer(a.i)).some((a) => !a.acks.has(rev)))
      await new Promise((r) => setTimeout(r, 5))
    await new Promise((r) => setTimeout(r, 300))
    const lat = concerned().map((a) => (a.acks.get(rev) ?? Number.POSITIVE_INFINITY) - tc)
    // An endpoint change: one server reconnects from another address.
    for (const a of fleet) a.bytesIn.length = 0
    const mover = fleet[0]
    mover.ws?.terminate()
    await new Promise((r) => setTimeout(r, 200))
    await mover.connect(undefined, '203.0.113.77:51820')
    await new Promise((r) => setTimeout(r, 1000))
    const deltas = fleet.filter((a) => a !== mover).flatMap((a) => a.bytesIn.filter((b) => b.t === 'delta'))
    for (const a of fleet) a.ws?.terminate()
    await store.close()
    return {
      case: 'hub-load',
      agents,
      sites,
      enrolS: +enrolS.toFixed(2),
      firstMapP99Ms: +pct(firstMap, 99).toFixed(1),
      policyToAckP50Ms: +pct(lat, 50).toFixed(1),
      policyToAckP99Ms: +pct(lat, 99).toFixed(1),
      policyToAckMaxMs: +Math.max(...lat).toFixed(1),
      policyRecipients: lat.length,
      rssPerAgentKiB: +((rss1 - rss0) / agents).toFixed(1),
      endpointDeltaBytesMax: deltas.length ? Math.max(...deltas.map((d) => d.bytes)) : 0,
      endpointDeltaRecipients: deltas.length,
      fullMapBytesMax,
    }
  } catch (e) {
    console.error(`the hub's last lines:\n${out.join('').slice(-3000)}`)
    throw e
  } finally {
    if (hub?.pid && hub.exitCode === null) hub.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const n = Number(process.argv[2] ?? 1000)
  runHubLoad(n, Number(process.argv[3] ?? 1)).then((r) => console.log(JSON.stringify(r)))
}
