/**
 * The hub's fan-out, two ways: a change of systems only (enrolment, tags, state, endpoint) goes entry by
 * entry to the systems that see the changed ones; anything else (a policy) compares every map in full.
 * Either way, after each change every connected agent must hold exactly the map a fresh model computes
 * for it, and the hash the hub sent must be that map's. Simulated agents (the bench's, on loopback) speak
 * the real protocol to a real HubServer in this process.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { SimAgent } from '../../bench/hub-load.js'
import { HubAdmin, loadModel } from '../../src/hub/admin.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { canonical, mapHash } from '../../src/hubproto/map.js'
import { createLogger } from '../../src/log/logger.js'
import { identityFromPublicKey } from '../../src/config/identity.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-hubfan-'))
const log = createLogger(0)
let hub: HubServer
let store: HubStore
let admin: HubAdmin

t.before(async () => {
  await initHub(dir, '127.0.0.1:0')
  hub = new HubServer({ dataDir: dir, listen: '127.0.0.1:0', portal: 'off', log })
  await hub.start()
  store = await HubStore.open({ file: path.join(dir, 'hub.db') })
  admin = new HubAdmin(store, 'test')
})
t.teardown(async () => {
  await hub.stop()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

/** The peers of a map as sorted canonical JSON, for comparison. */
const peersOf = (peers: Iterable<unknown>) => [...peers].map((p) => canonical(p)).sort()

t.test('after every kind of change, each agent holds exactly the map a fresh model gives it', async (t) => {
  const url = `ws://127.0.0.1:${hub.port}/enclave/v1/connect`
  const key = Buffer.from(hub.publicKey, 'base64')
  const kL = await admin.createKey('laptops', { autoApprove: true, tags: ['laptops'] })
  const kS = await admin.createKey('servers', { autoApprove: true, tags: ['servers'] })
  await admin.putPolicy('l->s', { SenderTags: ['laptops'], ReceiverTags: ['servers'], Acls: [{ Protocol: 'Icmp' }] }, { create: true })
  const fleet = Array.from({ length: 12 }, (_, i) => new SimAgent(i, url, key))
  for (const a of fleet) await a.connect(a.i < 4 ? kS.key : kL.key)
  const id = (a: SimAgent) => identityFromPublicKey(a.keys.publicKey)

  /** Waits until every connected agent acknowledged the store's revision, then compares. */
  const check = async (what: string, agents = fleet) => {
    const rev = await store.revision()
    // The hub has fanned this revision out (an agent it does not concern gets nothing), then the deltas land.
    const end = Date.now() + 10_000
    while (hub.revision < rev && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 300))
    const model = await loadModel(store.db)
    let same = 0
    for (const a of agents) {
      const s = model.byIdentity.get(id(a))
      if (!s) continue
      const want = model.mapFor(s.id)
      const ok =
        canonical(peersOf(a.peers.values())) === canonical(peersOf(want.Peers)) &&
        canonical(a.map?.Policies) === canonical(want.Policies) &&
        canonical(a.map?.Self) === canonical(want.Self) &&
        a.hash() === mapHash(want)
      if (ok) same++
      else t.fail(`${what}: agent ${a.i} (${id(a)}) holds another map than the model's`)
    }
    t.equal(same, agents.filter((a) => model.byIdentity.has(id(a))).length, `${what}: every agent holds the model's map`)
  }

  await check('after enrolment')
  await admin.setTags(id(fleet[5]), ['servers'])
  await check('a laptop retagged as a server')
  await admin.setState('disable', [id(fleet[6])])
  await check(
    'a laptop disabled',
    fleet.filter((a) => a !== fleet[6]),
  )
  await admin.setState('enable', [id(fleet[6])])
  fleet[6].ws?.terminate()
  await fleet[6].connect()
  await check('enabled and reconnected')
  fleet[7].ws?.terminate()
  await new Promise((r) => setTimeout(r, 100))
  await fleet[7].connect(undefined, '203.0.113.7:51820')
  await check('a laptop reconnected from another endpoint')
  await admin.putPolicy('l->s', { SenderTags: ['laptops'], ReceiverTags: ['servers'], Acls: [{ Protocol: 'Any' }] }, {})
  await check('a policy changed (the full comparison)')
  await admin.setState('remove', [id(fleet[8])])
  await check(
    'a laptop removed',
    fleet.filter((a) => a !== fleet[8]),
  )
  for (const a of fleet) a.ws?.terminate()
})
