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
import { until } from '../helpers/until.js'

/** A WebSocket "hub" that accepts connections and never completes the handshake; it answers pings if told to. */
async function fakeHub(
  t: Tap.Test,
  autoPong: boolean,
  o: { closeAtOnce?: boolean; maxBackoffMs?: number; monotonicMs?: () => number } = {},
) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong })
  await new Promise((r) => wss.once('listening', r))
  const port = (wss.address() as { port: number }).port
  const seen = { connections: 0, closedByAgent: 0, messages: 0, at: [] as number[] }
  wss.on('connection', (ws) => {
    seen.connections++
    seen.at.push(performance.now())
    ws.on('message', () => seen.messages++)
    ws.on('close', () => seen.closedByAgent++)
    if (o.closeAtOnce) ws.terminate()
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
    maxBackoffMs: o.maxBackoffMs ?? 100,
    silenceMs: 300,
    ...(o.monotonicMs ? { monotonicMs: o.monotonicMs } : {}),
  })
  t.teardown(async () => {
    link.stop()
    for (const c of wss.clients) c.terminate()
    await new Promise((r) => wss.close(r))
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return { link, seen, lines }
}

t.test('a hub connection whose pings go unanswered is dropped and made again', async (t) => {
  const { link, seen, lines } = await fakeHub(t, false)
  link.start()
  await until(() => seen.closedByAgent >= 1 && seen.connections >= 2, 5000, 50)
  t.ok(seen.closedByAgent >= 1, `the link dropped the silent connection (${seen.closedByAgent} closed)`)
  t.ok(seen.connections >= 2, `and connected again (${seen.connections} connections)`)
  t.match(lines.join(''), /the hub answers no pings: reconnecting/, 'it says why')
  t.not(link.status().state, 'up', 'and never reported the silent hub as up')
})

/** Runs fn with this thread's wall clock stepped by stepMs (NTP, a VM resumed, `date -s`). */
async function withWallStep(stepMs: number, fn: () => Promise<unknown>): Promise<void> {
  const real = Date.now
  Date.now = () => real() + stepMs
  try {
    await fn()
  } finally {
    Date.now = real
  }
}

t.test('a wall clock stepped back an hour does not keep a silent hub', async (t) => {
  const { link, seen, lines } = await fakeHub(t, false)
  link.start()
  // Stepped once the link watches the connection: the agent's first handshake message is sent when it does.
  await until(() => seen.messages >= 1, 5000, 5)
  t.equal(seen.messages >= 1, true, 'the link is connected and watching')
  await withWallStep(-3_600_000, () => until(() => seen.closedByAgent >= 1, 5000, 50))
  t.ok(seen.closedByAgent >= 1, `dropped within 5 s (${seen.closedByAgent} closed; before, none for the hour)`)
  t.match(lines.join(''), /the hub answers no pings: reconnecting/)
})

t.test('a suspend (the wall clock moved on, the monotonic one did not) still drops a silent hub at once', async (t) => {
  let frozen = false
  let at = 0
  const { link, seen } = await fakeHub(t, false, {
    // A suspended machine: CLOCK_MONOTONIC does not count the sleep. Frozen here, the wall clock jumps.
    monotonicMs: () => (frozen ? at : performance.now()),
  })
  link.start()
  await until(() => seen.messages >= 1, 5000, 5)
  t.equal(seen.messages >= 1, true, 'the link is connected and watching')
  at = performance.now()
  frozen = true
  await withWallStep(3_600_000, () => until(() => seen.closedByAgent >= 1, 5000))
  t.ok(seen.closedByAgent >= 1, `dropped within 5 s (${seen.closedByAgent} closed)`)
})

t.test('attempts that never come up keep the backoff growing, also after the agent has run a while', async (t) => {
  // A hub that closes every connection at once (down behind a proxy, or refusing); the link an hour into
  // the agent's life. Before, every close restarted the backoff (a minute after the last connection came
  // up, or at once when none had): retries stayed within 1 s for ever, and a fleet would hammer a hub coming
  // back.
  const random = Math.random
  Math.random = () => 0.999 // each wait is its cap: 1 s, then 2 s, 4 s
  t.teardown(() => {
    Math.random = random
  })
  const { link, seen } = await fakeHub(t, true, {
    closeAtOnce: true,
    maxBackoffMs: 60_000,
    monotonicMs: () => performance.now() + 3_600_000,
  })
  link.start()
  await until(() => seen.connections >= 4, 6000)
  const gaps = seen.at.slice(1).map((a, i) => a - seen.at[i])
  t.ok(gaps.length >= 2, `the link tried again (${seen.connections} connections)`)
  t.ok(gaps[1] > 1.5 * gaps[0], `the second wait is longer than the first (${gaps.map((g) => Math.round(g)).join(' ms, ')} ms)`)
  t.ok(seen.connections <= 3, `at most 3 connections in 6 s (${seen.connections}; without the growth, one a second)`)
})
