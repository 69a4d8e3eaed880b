/**
 * The agent's hub connection notices a path that carries nothing of ours (issue 20's 0.0.0.0/0 case
 * showed it: the hub's packets still arrived, ours went into the tunnel, and status said "up"). The link
 * pings the hub and drops a connection whose pings go unanswered for `silenceMs`, then reconnects.
 * Here the "hub" is a WebSocket server that accepts connections and never answers a ping (nor the
 * handshake). Before: one connection that stayed open ("not ok - the link dropped the silent connection").
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import sodium from 'sodium-native'
import t from 'tap'
import { WebSocketServer } from 'ws'
import { HubLink } from '../../src/agent/hub-link.js'
import type { Profile } from '../../src/config/profile.js'
import { createLogger } from '../../src/log/logger.js'

t.test('a hub connection whose pings go unanswered is dropped and made again', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: false })
  await new Promise((r) => wss.once('listening', r))
  const port = (wss.address() as { port: number }).port
  let connections = 0
  let closedByAgent = 0
  wss.on('connection', (ws) => {
    connections++
    ws.on('close', () => closedByAgent++)
  })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-liveness-${process.pid}-`))
  const lines: string[] = []
  const pk = Buffer.alloc(32)
  const sk = Buffer.alloc(32)
  sodium.crypto_box_keypair(pk, sk)
  const profile = {
    privateKey: sk,
    publicKey: pk,
    localPort: 51820,
    exitNode: { providesRoutes: [] },
    hub: {
      urls: [`http://127.0.0.1:${port}`],
      publicKey: Buffer.alloc(32, 9),
      allowGateway: false,
      acceptDefaultRoute: false,
      advertiseEndpoints: [],
    },
  } as unknown as Profile
  const link = new HubLink({
    profile,
    cacheFile: path.join(dir, 'hub-map.json'),
    log: createLogger(3, 'logfmt', { out: { write: (l: string) => void lines.push(l) } }),
    apply: async () => true,
    maxBackoffMs: 100,
    silenceMs: 300,
  })
  t.teardown(async () => {
    link.stop()
    for (const c of wss.clients) c.terminate()
    await new Promise((r) => wss.close(r))
    fs.rmSync(dir, { recursive: true, force: true })
  })
  link.start()
  const end = Date.now() + 5000
  while (Date.now() < end && (closedByAgent < 1 || connections < 2)) await new Promise((r) => setTimeout(r, 50))
  t.ok(closedByAgent >= 1, `the link dropped the silent connection (${closedByAgent} closed)`)
  t.ok(connections >= 2, `and connected again (${connections} connections)`)
  t.match(lines.join(''), /the hub answers no pings: reconnecting/, 'it says why')
  t.not(link.status().state, 'up', 'and never reported the silent hub as up')
})
