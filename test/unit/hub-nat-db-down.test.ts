/**
 * A hub on PostgreSQL (test/helpers/postgres.ts) while the database is down: an agent's NAT report (its
 * discovery found a new reflexive address, every 25 s it may) must not cost it its hub connection. The
 * README promises that sessions go on while PostgreSQL is unreachable; a connection closed then cannot
 * come back until the database does (enrolment needs it). Needs root (PostgreSQL runs as postgres).
 */
import dgram from 'node:dgram'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAdmin } from '../../src/hub/admin.js'
import { HubServer, initHub } from '../../src/hub/hub.js'
import { HubStore } from '../../src/hub/store.js'
import { reflectDatagram } from '../../src/hubproto/reflect.js'
import { createLogger } from '../../src/log/logger.js'
import { simAgent } from '../helpers/hub-agent.js'
import { postgresSkipReason, startPostgres } from '../helpers/postgres.js'

const skip = postgresSkipReason()
if (skip) t.plan(0, skip)

if (!skip)
  t.test('a NAT report while PostgreSQL is down keeps the connection', async (t) => {
    const server = await startPostgres('enclave-pg-natdown')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-natdown-${process.pid}-`))
    const log = createLogger(0, 'logfmt', { out: { write: () => undefined } })
    const url = await server.database('hub')
    const hubKey = (await initHub(path.join(dir, 'hub'), '127.0.0.1:0', { postgresUrl: url })).publicKey
    const hub = new HubServer({ dataDir: path.join(dir, 'hub'), listen: '127.0.0.1:0', portal: 'off', log, reflectPorts: [0, 0] })
    await hub.start()
    const store = await HubStore.open({ postgresUrl: url })
    const key = await new HubAdmin(store, 'test').createKey('laptops', { autoApprove: true, tags: ['laptops'] })
    await store.close()
    const sock = dgram.createSocket('udp4')
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
    const agent = await simAgent({ port: hub.port, hubKey }, { enrol: { key: key.key } })
    t.teardown(async () => {
      agent.close()
      sock.close()
      await hub.stop()
      await server.stop()
      fs.rmSync(dir, { recursive: true, force: true })
    })
    t.equal(agent.payload.t, 'welcome', 'enrolled')
    const reflect = agent.payload.reflect as { token: string; ports: number[] }
    // A reflect datagram from the agent's "WireGuard socket": the hub tells it the source it saw.
    sock.send(reflectDatagram(Buffer.from(reflect.token, 'hex'), 4), reflect.ports[0], '127.0.0.1')
    const seen = (await agent.next((m) => m.t === 'reflected')).m.addr as string
    t.equal(seen, `127.0.0.1:${sock.address().port}`, 'the hub saw the agent’s socket')

    await server.stopServer()
    let closed = false
    void agent.closed.then(() => {
      closed = true
    })
    agent.send({ t: 'nat', nat: 'easy', addr: seen, hosts: [] })
    await new Promise((r) => setTimeout(r, 1500))
    t.notOk(closed, 'the hub keeps the connection')
    const since = agent.received.length
    agent.send({ t: 'resync' })
    const map = await agent.next((m) => m.t === 'map', 3000, since).catch((e) => e as Error)
    t.notOk(map instanceof Error, 'and answers on it (a resync gets the map)')
    await server.startServer()
  })
