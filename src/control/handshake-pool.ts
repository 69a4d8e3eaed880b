/** The responder's handshake crypto runs in this pool (workers/handshake.ts), never on the control thread. */
import { Piscina } from 'piscina'
import type { HandshakeTaskRunner } from './handshakes.js'

export interface HandshakePool {
  runTask: HandshakeTaskRunner
  destroy(): Promise<void>
}

export function startHandshakePool(privateKey: Uint8Array, publicKey: Uint8Array): HandshakePool {
  const pool = new Piscina({
    filename: new URL('../../workers/handshake.js', import.meta.url).href,
    minThreads: 1,
    maxThreads: 1,
    idleTimeout: Infinity,
  })
  // Warm the pool (module load, JIT) so the first peer's handshake is not the one that pays for it.
  void pool.run({ op: 'consume', msg: new Uint8Array(148), privateKey, publicKey, nowMs: 0 }).catch(() => undefined)
  return { runTask: ((task) => pool.run(task)) as HandshakeTaskRunner, destroy: () => pool.destroy() }
}
