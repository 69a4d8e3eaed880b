/**
 * The CLI's side of the control socket: one newline-terminated JSON request, one JSON reply.
 * The socket lives in ENCLAVE_RUN_DIR (default /run/enclave), mode 0600 (or 0660 with ControlGroup).
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { EnclaveError, type ProfileProblem, ProfileError } from '../errors.js'
import { runDir } from '../config/profile.js'

export const SOCKET_NAME = 'enclave.sock'

export function socketPath(dir = runDir()): string {
  return path.join(dir, SOCKET_NAME)
}

export interface ApiRequest {
  op: 'status' | 'stop' | 'reload' | 'loglevel' | 'ping' | 'rekey' | 'debug' | 'connect'
  [k: string]: unknown
}

export class AgentNotRunning extends EnclaveError {
  constructor(sock: string, detail: string) {
    super('ENOTRUNNING', `agent is not running (${detail} at ${sock}); start it with \`sudo enclave start\` or \`sudo enclave run\``, 3)
  }
}

/** ", or join group X" when the socket is group-accessible (ControlGroup in the profile). */
function socketGroupHint(sock: string): string {
  try {
    const st = fs.statSync(sock)
    if ((st.mode & 0o060) === 0 || st.gid === 0) return ''
    const line = fs
      .readFileSync('/etc/group', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(st.gid))
    return ` or join group ${line ? line.split(':')[0] : st.gid}`
  } catch {
    return ''
  }
}

export async function callAgent<T = unknown>(req: ApiRequest, sock = socketPath(), timeoutMs = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const s = net.createConnection(sock)
    let buf = ''
    const timer = setTimeout(() => {
      s.destroy()
      reject(new EnclaveError('ETIMEDOUT', `the agent did not answer within ${timeoutMs} ms (socket ${sock})`))
    }, timeoutMs)
    s.on('connect', () => s.write(JSON.stringify(req) + '\n'))
    s.on('data', (d) => {
      buf += d.toString('utf8')
      const nl = buf.indexOf('\n')
      if (nl < 0) return
      clearTimeout(timer)
      s.end()
      try {
        const msg = JSON.parse(buf.slice(0, nl)) as {
          ok: boolean
          result?: T
          error?: string
          code?: string
          exit?: number
          file?: string
          problems?: ProfileProblem[]
        }
        if (msg.ok) resolve(msg.result as T)
        else if (msg.code === 'EPROFILE' && msg.file && Array.isArray(msg.problems))
          reject(new ProfileError(msg.file, msg.problems, msg.exit ?? 2)) // the same exit code and problems as a local check
        else
          reject(
            new EnclaveError(
              msg.code ?? 'EAGENT',
              msg.error ?? 'the agent refused the request',
              msg.code === 'EPERM' ? 4 : (msg.exit ?? 1),
            ),
          )
      } catch (e) {
        reject(new EnclaveError('EPROTO', `bad reply from the agent: ${(e as Error).message}`))
      }
    })
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (e.code === 'ENOENT') reject(new AgentNotRunning(sock, 'no socket'))
      else if (e.code === 'ECONNREFUSED') reject(new AgentNotRunning(sock, 'stale socket, nobody listening'))
      else if (e.code === 'EACCES' || e.code === 'EPERM') {
        reject(new EnclaveError('EACCES', `permission denied on ${sock}: run as root${socketGroupHint(sock)}`, 4))
      } else reject(new EnclaveError(e.code ?? 'EIO', `cannot reach the agent at ${sock}: ${e.message}`))
    })
  })
}
