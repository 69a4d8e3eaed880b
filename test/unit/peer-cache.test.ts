import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  PEER_CACHE_FILE,
  PEER_CACHE_RECENT_MS,
  PeerCache,
  formatPeerCache,
  loadPeerCache,
  parsePeerCache,
  resumeRecentPeers,
  savePeerCache,
} from '../../src/agent/peer-cache.js'
import type { Endpoint, PeerMemory } from '../../src/agent/peers/peer-memory.js'
import type { PeerRuntime } from '../../src/agent/peers/peer-table.js'

const KEY = Buffer.alloc(32, 7).toString('base64')
const KEY2 = Buffer.alloc(32, 9).toString('base64')

t.test('round trip, and only recent entries are loaded', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const now = 10_000_000
  savePeerCache(dir, [
    { publicKey: KEY, endpoint: { ip: 0xc6120001, port: 51820 }, seenMs: now - 1000 },
    { publicKey: KEY2, endpoint: { ip: 0xc6120002, port: 1 }, seenMs: now - PEER_CACHE_RECENT_MS - 1 },
  ])
  const file = path.join(dir, PEER_CACHE_FILE)
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'mode 0600')
  t.match(fs.readFileSync(file, 'utf8'), /"endpoint": "198\.18\.0\.1:51820"/)
  const l = loadPeerCache(dir, now)
  t.equal(l.warning, undefined)
  t.same([...l.peers.keys()], [KEY], 'the stale entry is dropped')
  t.same(l.peers.get(KEY)!.endpoint, { ip: 0xc6120001, port: 51820 })
  t.same(loadPeerCache(path.join(dir, 'nothing'), now), { peers: new Map() }, 'no file: nothing, no warning')
})

t.test('bad content: one line naming the file, the JSON path and the reason', async (t) => {
  t.throws(() => parsePeerCache('{'), /^\$: not JSON/)
  t.throws(() => parsePeerCache('{"version":2,"peers":[]}'), /^\$\.version: expected 1/)
  t.throws(
    () => parsePeerCache('{"version":1,"peers":[{"publicKey":"x","endpoint":"1.2.3.4:5","seenMs":1}]}'),
    /^\$\.peers\[0\]\.publicKey/,
  )
  const bad = formatPeerCache([{ publicKey: KEY, endpoint: { ip: 1, port: 5 }, seenMs: 1 }]).replace('0.0.0.1:5', '1.2.3.4:99999')
  t.throws(() => parsePeerCache(bad), /^\$\.peers\[0\]\.endpoint: expected "a\.b\.c\.d:port"/)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, PEER_CACHE_FILE)
  fs.writeFileSync(file, bad, { mode: 0o600 })
  const l = loadPeerCache(dir, 0)
  t.equal(l.peers.size, 0)
  t.equal(l.warning, `${file}: ignored: $.peers[0].endpoint: expected "a.b.c.d:port"`)
})

t.test('links, foreign or writable files are refused; writes never follow links', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, PEER_CACHE_FILE)
  const target = path.join(dir, 'target')
  fs.writeFileSync(target, formatPeerCache([{ publicKey: KEY, endpoint: { ip: 1, port: 5 }, seenMs: 1 }]), { mode: 0o600 })
  fs.symlinkSync(target, file)
  t.match(loadPeerCache(dir, 1).warning, /ignored: it is a symbolic link/)
  savePeerCache(dir, [])
  t.notOk(fs.lstatSync(file).isSymbolicLink(), 'the link was replaced')
  t.match(fs.readFileSync(target, 'utf8'), /"publicKey"/, 'its target is untouched')
  fs.chmodSync(file, 0o666)
  t.match(loadPeerCache(dir, 1).warning, /writable by nobody else/)
})

t.test('PeerCache rewrites on change, at most once per check interval, and at flush', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  let list = [{ publicKey: KEY, endpoint: { ip: 1, port: 5 }, seenMs: 100 }]
  let snaps = 0
  const warnings: string[] = []
  const c = new PeerCache(
    dir,
    () => {
      snaps++
      return list
    },
    (m) => warnings.push(m),
  )
  c.tick(10_000)
  t.equal(loadPeerCache(dir, 100).peers.size, 1, 'first tick writes')
  c.tick(10_500)
  t.equal(snaps, 1, 'not checked again within the interval')
  list = []
  c.tick(11_000)
  t.equal(loadPeerCache(dir, 100).peers.size, 0, 'a change is written')
  list = [{ publicKey: KEY, endpoint: { ip: 1, port: 6 }, seenMs: 100 }]
  c.flush(11_100)
  t.equal(loadPeerCache(dir, 100).peers.get(KEY)!.endpoint.port, 6, 'flush writes')
  fs.rmSync(dir, { recursive: true })
  c.flush(12_000)
  c.flush(13_000)
  t.equal(warnings.length, 1, 'a failing write warns once')
})

t.test('a tampered peers.json (issue 18, 10d): only a file that only root could write redirects an initiation', async (t) => {
  // The run directory is checked first at start (InstanceLock: ours, not writable by group or others), so
  // only root can create or replace peers.json; a file someone else could have written is ignored.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, PEER_CACHE_FILE)
  const now = 10_000_000
  const FORGED = { ip: 0xcb007107, port: 4444 } // 203.0.113.7:4444
  const resume = (configured?: Endpoint) => {
    const endpoints = new Map<number, Endpoint>()
    if (configured) endpoints.set(0, configured)
    const memory = { endpoint: (slot: number) => endpoints.get(slot), setEndpoint: (slot: number, e: Endpoint) => endpoints.set(slot, e) }
    const peer = { slot: 0, cfg: { publicKey: Buffer.from(KEY, 'base64') } } as unknown as PeerRuntime
    const initiated: string[] = []
    const warnings: string[] = []
    resumeRecentPeers(
      dir,
      [peer],
      memory as unknown as PeerMemory,
      (_p, why) => initiated.push(why),
      (m) => warnings.push(m),
      now,
    )
    return { endpoint: endpoints.get(0), initiated, warnings }
  }
  savePeerCache(dir, [{ publicKey: KEY, endpoint: FORGED, seenMs: now - 1000 }])
  const ok = resume()
  t.same(ok.endpoint, FORGED, "a file only we could write: the peer without an Endpoint gets the cache's")
  t.equal(ok.initiated.length, 1, 'and one initiation')
  t.same(resume({ ip: 0xc6120001, port: 51820 }).endpoint, { ip: 0xc6120001, port: 51820 }, 'a known endpoint is never replaced')
  for (const [mode, who] of [
    [0o620, 'group-writable'],
    [0o602, 'world-writable'],
  ] as const) {
    fs.chmodSync(file, mode)
    const r = resume()
    t.equal(r.endpoint, undefined, `${who}: no endpoint from it`)
    t.same(r.initiated, [], `${who}: no initiation`)
    t.same(
      r.warnings,
      [`${file}: ignored: must be owned by uid ${process.getuid?.()} and writable by nobody else`],
      `${who}: one warning naming the file`,
    )
  }
  fs.chmodSync(file, 0o600)
  if (process.getuid?.() === 0) {
    fs.chownSync(file, 65534, 65534)
    const r = resume()
    t.equal(r.endpoint, undefined, "another user's file: no endpoint from it")
    t.match(r.warnings, [/ignored: must be owned by uid 0/], "another user's file: one warning")
  } else t.comment('not root: the foreign-owner case is not tried')
})
