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
import t, { type Tap } from 'tap'
import { WebSocketServer } from 'ws'
import { HubLink } from '../../src/agent/hub-link.js'
import type { Profile } from '../../src/config/profile.js'
import { createLogger } from '../../src/log/logger.js'

/** A WebSocket "hub" that accepts connections and never completes the handshake; it answers pings if told to. */
async function fakeHub(t: Tap.Test, autoPong: boolean) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong })
  await new Promise((r) => wss.once('listening', r))
  const port = (wss.address() as { port: number }).port
  const seen = { connections: 0, closedByAgent: 0 }
  wss.on('connection', (ws) => {
    seen.connections++
    ws.on('close', () => seen.closedByAgent++)
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
  return { link, seen, lines }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('a hub connection whose pings go unanswered is dropped and made again', async (t) => {
  const { link, seen, lines } = await fakeHub(t, false)
  link.start()
  const end = Date.now() + 5000
  while (Date.now() < end && (seen.closedByAgent < 1 || seen.connections < 2)) await sleep(50)
  t.ok(seen.closedByAgent >= 1, `the link dropped the silent connection (${seen.closedByAgent} closed)`)
  t.ok(seen.connections >= 2, `and connected again (${seen.connections} connections)`)
  t.match(lines.join(''), /the hub answers no pings: reconnecting/, 'it says why')
  t.not(link.status().state, 'up', 'and never reported the silent hub as up')
})

/** Runs fn with this thread's wall clock stepped by stepMs (NTP, a VM resumed, `date -s`). */
async function withWallStep(stepMs: number, fn: () => Promise<void>): Promise<void> {
  const real = Date.now
  Date.now = () => real() + stepMs
  try {
    await fn()
  } finally {
    Date.now = real
  }
}

t.test('a step of the wall clock neither keeps a silent hub nor drops one that answers', async (t) => {
  await t.test('stepped back an hour: the silent connection is still dropped', async (t) => {
    const { link, seen, lines } = await fakeHub(t, false)
    link.start()
    // Stepped once the link watches the connection (its last pong is then on the old clock).
    const up = performance.now() + 5000
    while (performance.now() < up && seen.connections < 1) await sleep(5)
    t.equal(seen.connections, 1, 'connected')
    await withWallStep(-3_600_000, async () => {
      const end = performance.now() + 5000
      while (performance.now() < end && seen.closedByAgent < 1) await sleep(50)
    })
    t.ok(seen.closedByAgent >= 1, `dropped within 5 s (${seen.closedByAgent} closed; before, none for the hour)`)
    t.match(lines.join(''), /the hub answers no pings: reconnecting/)
  })
  await t.test('stepped forward an hour: a connection whose pings are answered stays', async (t) => {
    const { link, seen, lines } = await fakeHub(t, true)
    link.start()
    const end = performance.now() + 5000
    while (performance.now() < end && seen.connections < 1) await sleep(20)
    t.equal(seen.connections, 1, 'connected')
    // Six liveness periods with the clock stepped: before, the first check after the step dropped it.
    await withWallStep(3_600_000, () => sleep(600))
    t.equal(seen.closedByAgent, 0, 'not dropped')
    t.equal(seen.connections, 1, 'no reconnection')
    t.notMatch(lines.join(''), /answers no pings/, 'and no false alarm')
  })
})
