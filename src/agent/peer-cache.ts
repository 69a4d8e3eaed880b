/**
 * Recently active peers' endpoints, remembered across a restart (point 16): after an exit node
 * restarts, its clients keep sending on a session it no longer knows, and without an Endpoint of
 * theirs it cannot reach them until they time out (about 15 s). With this file it initiates to them
 * at start, and they are back within a handshake.
 *
 * The file (RUN_DIR/peers.json) is only a hint: the endpoint is where we send an initiation; the
 * handshake authenticates the peer as always. It is written atomically (a temporary file opened
 * with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, then renamed over), refreshed while the agent runs and
 * at stop, and read with O_NOFOLLOW: it must be a regular file owned by us, writable by nobody else.
 * A bad file is ignored with one warning line; it never stops the agent.
 *
 * Who can tamper with it (issue 18, 10d): only root. The agent's first step at start is the run
 * directory's lock (InstanceLock), which refuses a directory that is not ours or is writable by group or
 * others, so nobody else can create, replace or hard-link a file in it; and a peers.json that is not
 * ours or is group/world-writable is ignored here (checked on the opened descriptor, so no swap between
 * check and read). Root can edit the profile itself, and what the file can do is small anyway: give a
 * peer without a known endpoint an address for its first initiation, which the handshake authenticates
 * as every other (a wrong address gets an initiation it cannot answer; the peer's own packets correct it).
 */
import fs from 'node:fs'
import path from 'node:path'
import { intToIp, parseIpv4 } from '../common/ipv4.js'
import type { Endpoint, PeerMemory } from './peers/peer-memory.js'
import type { PeerRuntime } from './peers/peer-table.js'

export const PEER_CACHE_FILE = 'peers.json'
/** Peers heard from within this long are remembered (and only such entries are used at start). */
export const PEER_CACHE_RECENT_MS = 5 * 60_000
/** How often the running agent checks whether the file needs rewriting. */
export const PEER_CACHE_CHECK_MS = 1000
/** The file is rewritten when the set of peers or endpoints changes, and at least this often. */
export const PEER_CACHE_REFRESH_MS = 60_000

export interface CachedPeer {
  /** The peer's public key, base64. */
  publicKey: string
  endpoint: Endpoint
  /** Wall-clock ms when we last heard from it. */
  seenMs: number
}

export interface CacheLoad {
  peers: Map<string, CachedPeer>
  /** One line naming the file, the JSON path and the reason, when the file was ignored. */
  warning?: string
}

const KEY_RE = /^[A-Za-z0-9+/]{43}=$/

/** Parses the file's text; throws `<path>: <reason>` for the first bad field. */
export function parsePeerCache(text: string): CachedPeer[] {
  let j: unknown
  try {
    j = JSON.parse(text)
  } catch (e) {
    throw new Error(`$: not JSON (${(e as Error).message})`)
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('$: expected an object')
  const o = j as Record<string, unknown>
  if (o.version !== 1) throw new Error('$.version: expected 1')
  if (!Array.isArray(o.peers)) throw new Error('$.peers: expected an array')
  return o.peers.map((p: unknown, i) => {
    const at = `$.peers[${i}]`
    if (typeof p !== 'object' || p === null) throw new Error(`${at}: expected an object`)
    const e = p as Record<string, unknown>
    if (typeof e.publicKey !== 'string' || !KEY_RE.test(e.publicKey)) throw new Error(`${at}.publicKey: expected a base64 key`)
    const m = typeof e.endpoint === 'string' ? /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(e.endpoint) : null
    const ip = m ? parseIpv4(m[1]) : 'bad'
    const port = m ? Number(m[2]) : 0
    if (typeof ip === 'string' || port < 1 || port > 65535) throw new Error(`${at}.endpoint: expected "a.b.c.d:port"`)
    if (typeof e.seenMs !== 'number' || !Number.isFinite(e.seenMs) || e.seenMs < 0) throw new Error(`${at}.seenMs: expected a time in ms`)
    return { publicKey: e.publicKey, endpoint: { ip, port }, seenMs: e.seenMs }
  })
}

export function formatPeerCache(peers: readonly CachedPeer[]): string {
  const list = peers.map((p) => ({ publicKey: p.publicKey, endpoint: `${intToIp(p.endpoint.ip)}:${p.endpoint.port}`, seenMs: p.seenMs }))
  return `${JSON.stringify({ version: 1, peers: list }, null, 1)}\n`
}

/** Reads the cache in `dir`: entries seen within PEER_CACHE_RECENT_MS of `now`, by public key. */
export function loadPeerCache(dir: string, now: number): CacheLoad {
  const file = path.join(dir, PEER_CACHE_FILE)
  const peers = new Map<string, CachedPeer>()
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return { peers }
    return { peers, warning: `${file}: ignored: ${code === 'ELOOP' ? 'it is a symbolic link' : (e as Error).message}` }
  }
  try {
    const st = fs.fstatSync(fd)
    const uid = process.getuid?.() ?? st.uid
    if (!st.isFile()) return { peers, warning: `${file}: ignored: not a regular file` }
    if (st.uid !== uid || (st.mode & 0o022) !== 0)
      return { peers, warning: `${file}: ignored: must be owned by uid ${uid} and writable by nobody else` }
    if (st.size > 1 << 20) return { peers, warning: `${file}: ignored: larger than 1 MiB` }
    let list: CachedPeer[]
    try {
      list = parsePeerCache(fs.readFileSync(fd, 'utf8'))
    } catch (e) {
      return { peers, warning: `${file}: ignored: ${(e as Error).message}` }
    }
    for (const p of list) if (now - p.seenMs <= PEER_CACHE_RECENT_MS && p.seenMs <= now + 60_000) peers.set(p.publicKey, p)
    return { peers }
  } finally {
    fs.closeSync(fd)
  }
}

/** Writes the cache atomically: never through a symbolic link, never readable by others. */
export function savePeerCache(dir: string, peers: readonly CachedPeer[]): void {
  const file = path.join(dir, PEER_CACHE_FILE)
  const tmp = path.join(dir, `.${PEER_CACHE_FILE}.${process.pid}.tmp`)
  fs.rmSync(tmp, { force: true }) // a leftover of an earlier process with our pid (unlink never follows links)
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600)
  try {
    fs.writeSync(fd, formatPeerCache(peers))
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file) // replaces a link at `file` itself, never its target
}

/**
 * The running agent's side: `snapshot()` lists the peers heard from recently; `tick` rewrites the
 * file when that list's keys or endpoints changed, or every PEER_CACHE_REFRESH_MS.
 */
export class PeerCache {
  private lastCheckMs = 0
  private lastWriteMs = 0
  private lastShape = ''
  private failed = false

  constructor(
    private readonly dir: string,
    private readonly snapshot: (now: number) => CachedPeer[],
    private readonly warn: (msg: string, err: string) => void,
  ) {}

  tick(now: number): void {
    if (now - this.lastCheckMs < PEER_CACHE_CHECK_MS) return
    this.lastCheckMs = now
    const peers = this.snapshot(now)
    const shape = peers.map((p) => `${p.publicKey}@${p.endpoint.ip}:${p.endpoint.port}`).join(',')
    if (shape === this.lastShape && now - this.lastWriteMs < PEER_CACHE_REFRESH_MS) return
    this.write(peers, now, shape)
  }

  /** At stop: the final state. */
  flush(now: number): void {
    const peers = this.snapshot(now)
    this.write(peers, now, '')
  }

  private write(peers: CachedPeer[], now: number, shape: string): void {
    try {
      savePeerCache(this.dir, peers)
      this.lastShape = shape
      this.lastWriteMs = now
      this.failed = false
    } catch (e) {
      if (!this.failed) this.warn('cannot write the peer cache; restarts will reconnect more slowly', (e as Error).message)
      this.failed = true
      this.lastWriteMs = now
    }
  }
}

/** The peers heard from within PEER_CACHE_RECENT_MS, with the endpoint they were heard at (what the cache keeps). */
export function recentPeers(peers: Iterable<PeerRuntime>, memory: PeerMemory, now: number): CachedPeer[] {
  const out: CachedPeer[] = []
  for (const peer of peers) {
    const seenMs = memory.times(peer.slot).lastRxAny
    const endpoint = memory.endpoint(peer.slot)
    if (seenMs > 0 && now - seenMs <= PEER_CACHE_RECENT_MS && endpoint)
      out.push({ publicKey: Buffer.from(peer.cfg.publicKey).toString('base64'), endpoint, seenMs })
  }
  return out
}

/**
 * At start: peers that were active before a restart get their cached endpoint (unless one is known)
 * and a handshake at once, so they do not wait for their own rekey timeout.
 */
export function resumeRecentPeers(
  dir: string,
  peers: Iterable<PeerRuntime>,
  memory: PeerMemory,
  initiate: (peer: PeerRuntime, why: string) => void,
  warn: (msg: string) => void,
  now = Date.now(),
): void {
  const loaded = loadPeerCache(dir, now)
  if (loaded.warning) warn(loaded.warning)
  for (const peer of peers) {
    const c = loaded.peers.get(Buffer.from(peer.cfg.publicKey).toString('base64'))
    if (!c) continue
    if (!memory.endpoint(peer.slot)) memory.setEndpoint(peer.slot, c.endpoint)
    initiate(peer, 'peer was active before the restart')
  }
}
