/** The responder's handshake crypto runs in this pool (workers/handshake.ts), never on the control thread. */
import { Piscina } from 'piscina'
import type { HandshakeTaskRunner } from './peers/handshakes.js'
import { sourceExecArgv, workerFile } from '../common/worker-file.js'

export interface HandshakePool {
  runTask: HandshakeTaskRunner
  destroy(): Promise<void>
}

export function startHandshakePool(privateKey: Uint8Array, publicKey: Uint8Array): HandshakePool {
  const file = workerFile('handshake')
  const pool = new Piscina({
    filename: file.href,
    ...(file.pathname.endsWith('.ts') ? { execArgv: [...sourceExecArgv(), '--import=tsx'] } : {}),
    minThreads: 1,
    maxThreads: 1,
    idleTimeout: Infinity,
  })
  // Warm the pool (module load, JIT) so the first peer's handshake is not the one that pays for it.
  void pool.run({ op: 'consume', msg: new Uint8Array(148), privateKey, publicKey, nowMs: 0 }).catch(() => undefined)
  return { runTask: ((task) => pool.run(task)) as HandshakeTaskRunner, destroy: () => pool.destroy() }
}
