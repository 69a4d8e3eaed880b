/**
 * The control socket: a Unix socket in ENCLAVE_RUN_DIR, mode 0600 owned by root (0660 with the
 * profile's ControlGroup). One JSON request per line, one JSON reply per line. The kernel enforces
 * access through the socket file's mode; we also check the peer's credentials are root or in the group
 * by the file permission alone (connect(2) needs write permission on the socket).
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { SOCKET_NAME } from './client.js'
import { EnclaveError } from '../../errors.js'
import type { AgentApi } from './agent-api.js'

export class ApiServer {
  readonly path: string
  private server?: net.Server
  constructor(
    private agent: AgentApi,
    runDir: string,
    private group?: string,
  ) {
    this.path = path.join(runDir, SOCKET_NAME)
  }

  async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.path), { recursive: true, mode: 0o755 })
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
    this.server = net.createServer((sock) => this.serve(sock))
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject)
      this.server!.listen(this.path, () => resolve())
    })
    fs.chmodSync(this.path, this.group ? 0o660 : 0o600)
    if (this.group) {
      try {
        const gid = Number(execFileSync('getent', ['group', this.group]).toString().split(':')[2])
        fs.chownSync(this.path, 0, gid)
      } catch {
        this.agent.log.warn({ group: this.group }, 'ControlGroup does not exist; the control socket stays root-only')
        fs.chmodSync(this.path, 0o600)
      }
    }
  }

  private serve(sock: net.Socket): void {
    let buf = ''
    sock.on('error', () => undefined)
    sock.on('data', async (d) => {
      buf += d.toString('utf8')
      const nl = buf.indexOf('\n')
      if (nl < 0) {
        if (buf.length > 65536) sock.destroy()
        return
      }
      const line = buf.slice(0, nl)
      buf = ''
      let reply: unknown
      try {
        reply = { ok: true, result: await this.handle(JSON.parse(line) as { op: string; [k: string]: unknown }) }
      } catch (e) {
        reply = { ok: false, error: (e as Error).message, code: (e as EnclaveError).code }
      }
      sock.end(JSON.stringify(reply) + '\n')
    })
  }

  private async handle(req: { op: string; [k: string]: unknown }): Promise<unknown> {
    switch (req.op) {
      case 'ping':
        return { pid: process.pid }
      case 'status':
        return this.agent.status()
      case 'reload':
        return this.agent.reload()
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
        if (process.env.ENCLAVE_TEST_HOOKS !== '1')
          throw new EnclaveError('EPERM', 'test hooks are off (start the agent with ENCLAVE_TEST_HOOKS=1)')
        if (req.action === 'crash-worker') {
          this.agent.crashWorkerForTest(Number(req.arg ?? 0))
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
