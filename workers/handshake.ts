/**
 * Piscina task module: the responder's expensive half of the WireGuard handshake, off the control
 * thread, so a flood of initiations cannot stall timers, status or the data-plane supervisor.
 * Pure functions of the task's inputs; all state (timestamps, keypairs) stays on control.
 *
 *  consume: decrypt an initiation (2 DH) -> the initiator's static key, timestamp and Noise state
 *  respond: build the response and session keys (2 DH + an ephemeral key); control writes the macs
 */
import { consumeInitiation, createResponse, localStatic, type PeerCrypto } from '../src/protocol/noise.js'
import type { ConsumeTask, RespondTask } from '../src/ipc/messages.js'

export type { ConsumeTask, RespondTask }
import { DH } from '../src/protocol/primitives.js'

export default function handshakeTask(task: ConsumeTask | RespondTask) {
  if (task.op === 'consume') {
    const local = localStatic(task.privateKey, task.publicKey)
    return consumeInitiation(
      local,
      task.msg,
      (pk) => {
        try {
          return DH(task.privateKey, pk)
        } catch {
          return undefined
        }
      },
      task.nowMs,
    )
  }
  const peer = {
    publicKey: task.peerPublicKey,
    presharedKey: task.presharedKey,
    handshake: task.state,
    mac1Key: new Uint8Array(32),
  } as unknown as PeerCrypto
  const { msg, keys } = createResponse(peer, task.localIndex, task.nowMs)
  return { msg, keys }
}
