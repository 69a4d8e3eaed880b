/**
 * The control socket: a Unix socket in ENCLAVE_RUN_DIR, mode 0600 owned by root (0660 with the
 * profile's ControlGroup). One JSON request per line, one JSON reply per line.
 *
 * Access is checked twice. The kernel checks the socket file's mode at connect(2) (write permission
 * needed): the socket is bound inside a fresh 0700 directory, given its mode and group there, and
 * only then renamed into place, so it is never connectable by others, whatever the umask, and no
 * chmod or chown goes through a path someone else could swap for a symlink. Then, per request, the
 * server reads the client's credentials (SO_PEERCRED): requests that change state (reload, rekey,
 * loglevel, stop, connect, debug) need uid 0; reading (ping, status) needs uid 0 or membership of
 * ControlGroup. So a socket mode opened up by mistake still lets nobody else change anything.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { SOCKET_NAME } from '../api/client.js'
import { EnclaveError } from '../errors.js'
import { native } from '../native/io.js'
import { ensurePrivateDir } from '../platform/linux/files.js'
import type { AgentApi, AgentTestHooks } from './agent-api.js'

/** Connections one non-root user may hold open at once; more are closed as they arrive. */
export const MAX_CONNECTIONS_PER_USER = 16
/** A connection that has not sent its request line within this long is closed. */
export const REQUEST_TIMEOUT_MS = 5000

/** Requests anyone allowed to connect may make; every other op needs root. */
export const READ_ONLY_OPS: ReadonlySet<string> = new Set(['ping', 'status'])

export interface PeerCredentials {
  pid: number
  uid: number
  gid: number
}

/** The credentials of the process at the other end of an accepted Unix socket, if the kernel tells. */
export function peerCredentials(sock: net.Socket): PeerCredentials | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd
  if (typeof fd !== 'number' || fd < 0) return undefined
  const c = native.peerCred(fd)
  return c.pid > 0 && c.uid !== undefined && c.gid !== undefined ? { pid: c.pid, uid: c.uid, gid: c.gid } : undefined
}

/** True if the process `pid` has `gid` as its primary or a supplementary group (from /proc). */
function inGroup(cred: PeerCredentials, gid: number): boolean {
  if (cred.gid === gid) return true
  try {
    const line = fs
      .readFileSync(`/proc/${cred.pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Groups:'))
    return !!line && line.slice(7).trim().split(/\s+/).map(Number).includes(gid)
  } catch {
    return false
  }
}

/**
 * Whether a client may make request `op`: root may do anything; a member of the control group may
 * read; nobody else may do anything (even if the socket's mode were opened up).
 */
export function mayRequest(op: string, cred: PeerCredentials | undefined, groupGid: number | undefined): boolean {
  if (!cred) return false
  if (cred.uid === 0) return true
  return READ_ONLY_OPS.has(op) && groupGid !== undefined && inGroup(cred, groupGid)
}

export class ApiServer {
  readonly path: string
  private server?: net.Server
  private groupGid?: number
  private readonly perUser = new Map<number, number>()
  private readonly refusedLogged = new Set<number>()
  constructor(
    private agent: AgentApi,
    runDir: string,
    private group?: string,
    private hooks?: AgentTestHooks,
  ) {
    this.path = path.join(runDir, SOCKET_NAME)
  }

  private resolveGroup(group: string | undefined): number | undefined {
    if (!group) return undefined
    try {
      return Number(execFileSync('getent', ['group', group]).toString().split(':')[2])
    } catch {
      this.agent.log.warn({ group }, 'ControlGroup does not exist; the control socket stays root-only')
      return undefined
    }
  }

  /** ControlGroup changed (a reload): the socket's group, mode and who may ask follow at once. */
  setGroup(group: string | undefined): void {
    if (group === this.group) return
    const gid = this.resolveGroup(group)
    if (gid !== undefined) fs.chownSync(this.path, 0, gid)
    fs.chmodSync(this.path, gid !== undefined ? 0o660 : 0o600)
    if (gid === undefined) fs.chownSync(this.path, 0, 0)
    this.group = group
    this.groupGid = gid
    this.agent.log.info({ group: group ?? '(none)', mode: gid !== undefined ? '0660' : '0600' }, 'control socket: ControlGroup applied')
  }

  async listen(): Promise<void> {
    const dir = path.dirname(this.path)
    ensurePrivateDir(dir, 0o755)
    if (fs.existsSync(this.path)) {
      const alive = await new Promise<boolean>((r) => {
        const s = net.createConnection(this.path)
        s.on('connect', () => {
          s.destroy()
          r(true)
        })
        s.on('error', () => r(false))
      })
      if (alive) throw new EnclaveError('EALREADY', `another agent is already running with control socket ${this.path}`)
      fs.rmSync(this.path)
    }
    this.groupGid = this.resolveGroup(this.group)
    // Bind in a directory only we can enter, set mode and group there, then move it into place.
    const staging = fs.mkdtempSync(path.join(dir, '.sock-'))
    const tmp = path.join(staging, SOCKET_NAME)
    try {
      this.server = net.createServer((sock) => this.serve(sock))
      await new Promise<void>((resolve, reject) => {
        this.server!.once('error', reject)
        this.server!.listen(tmp, () => resolve())
      })
      fs.chmodSync(tmp, this.groupGid !== undefined ? 0o660 : 0o600)
      if (this.groupGid !== undefined) fs.chownSync(tmp, 0, this.groupGid)
      fs.renameSync(tmp, this.path)
    } finally {
      fs.rmSync(staging, { recursive: true, force: true })
    }
  }

  /**
   * One request per connection. A member of the control group could otherwise hold connections open
   * until the agent runs out of file descriptors (and then root's own `enclave status` fails): each
   * non-root user may hold MAX_CONNECTIONS_PER_USER, a request must arrive within REQUEST_TIMEOUT_MS,
   * and a client that does not close after the reply is closed after as long again. Root is never
   * refused; a connection whose credentials the kernel does not tell is closed at once.
   */
  private serve(sock: net.Socket): void {
    sock.on('error', () => undefined)
    const cred = peerCredentials(sock)
    if (!cred) {
      sock.destroy() // unknown credentials could never be allowed a request, and would escape the cap
      return
    }
    if (cred.uid !== 0) {
      const held = this.perUser.get(cred.uid) ?? 0
      if (held >= MAX_CONNECTIONS_PER_USER) {
        if (!this.refusedLogged.has(cred.uid)) {
          this.refusedLogged.add(cred.uid)
          this.agent.log.warn(
            { uid: cred.uid, held },
            'control socket: connection limit for this user reached; further connections are closed',
          )
        }
        sock.destroy()
        return
      }
      this.perUser.set(cred.uid, held + 1)
      sock.once('close', () => {
        const n = (this.perUser.get(cred.uid) ?? 1) - 1
        if (n > 0) this.perUser.set(cred.uid, n)
        else {
          this.perUser.delete(cred.uid)
          this.refusedLogged.delete(cred.uid)
        }
      })
    }
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => sock.destroy())
    let buf = ''
    let answered = false
    sock.on('data', async (d) => {
      if (answered) {
        sock.destroy() // one request per connection: anything after it ends the connection
        return
      }
      buf += d.toString('utf8')
      const nl = buf.indexOf('\n')
      if (nl < 0) {
        if (buf.length > 65536) sock.destroy()
        return
      }
      answered = true
      sock.setTimeout(0) // a reload may take longer than the request timeout
      const line = buf.slice(0, nl)
      buf = ''
      let reply: unknown
      try {
        const req = JSON.parse(line) as { op: string; [k: string]: unknown }
        if (!mayRequest(String(req.op), cred, this.groupGid))
          throw new EnclaveError(
            'EPERM',
            READ_ONLY_OPS.has(String(req.op)) ? `"${String(req.op)}" needs root or the control group` : `"${String(req.op)}" needs root`,
          )
        reply = { ok: true, result: await this.handle(req) }
      } catch (e) {
        const err = e as EnclaveError & { file?: string; problems?: unknown[] }
        reply = { ok: false, error: err.message, code: err.code, exit: err.exitCode, file: err.file, problems: err.problems }
      }
      sock.end(JSON.stringify(reply) + '\n')
      sock.setTimeout(REQUEST_TIMEOUT_MS, () => sock.destroy()) // a client that never closes its end
    })
  }

  private async handle(req: { op: string; [k: string]: unknown }): Promise<unknown> {
    switch (req.op) {
      case 'ping':
        return { pid: process.pid }
      case 'status':
        return this.agent.freshStatus()
      case 'reload':
        return this.agent.reload(typeof req.profile === 'string' ? req.profile : undefined)
      case 'connect':
        return { peer: this.agent.connect(String(req.peer ?? '')) }
      case 'rekey':
        return { peers: this.agent.rekeyAll() }
      case 'loglevel': {
        const level = Number(req.level)
        if (!Number.isInteger(level) || level < 0 || level > 5) throw new EnclaveError('EINVAL', 'log level must be 0..5')
        this.agent.setVerbosity(level)
        return { level }
      }
      case 'debug':
        if (!this.hooks) throw new EnclaveError('EPERM', 'test hooks are off (start the agent with ENCLAVE_TEST_HOOKS=1)')
        if (req.action === 'crash-worker') {
          this.hooks.crashWorker(Number(req.arg ?? 0))
          return { crashed: Number(req.arg ?? 0) }
        }
        throw new EnclaveError('EINVAL', `unknown debug action ${String(req.action)}`)
      case 'stop':
        setImmediate(() => void this.agent.stop('stop requested over the control socket'))
        return { stopping: true }
      default:
        throw new EnclaveError('EINVAL', `unknown request "${req.op}"`)
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()))
    fs.rmSync(this.path, { force: true })
  }
}
