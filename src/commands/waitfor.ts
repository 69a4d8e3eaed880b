import { Args, Flags } from '@oclif/core'
import { BaseCommand, runDirFlag } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { callAgent } from '../api/client.js'
import { normaliseIdentity } from '../config/identity.js'
import type { PeerStatus, StatusModel } from '../views/status-model.js'

export default class Waitfor extends BaseCommand {
  static override summary = 'Wait until the session with a peer is up (exit 0), or time out (exit 1): a health check'
  static override description = 'A name that is no peer of the running agent is a usage error (exit 2), said at once.'
  static override examples = [
    '$ sudo <%= config.bin %> waitfor G982V -t 10',
    '$ sudo <%= config.bin %> waitfor office',
    '$ sudo <%= config.bin %> waitfor 100.64.69.156 --json',
  ]
  static override enableJsonFlag = true
  static override args = { peer: Args.string({ description: 'identity, virtual address or description of the peer', required: true }) }
  static override flags = {
    ...runDirFlag,
    timeout: Flags.integer({ char: 't', description: 'seconds to wait (0 = check once)', default: 30, min: 0 }),
  }

  async run(): Promise<{ identity: string; state: string; endpoint?: string }> {
    const { args, flags } = await this.parse(Waitfor)
    const deadline = Date.now() + flags.timeout * 1000
    const find = (s: StatusModel): PeerStatus | undefined => {
      const id = normaliseIdentity(args.peer)
      const exact = s.peers.find((x) => x.identity === id || x.virtualAddress === args.peer)
      if (exact) return exact
      const described = s.peers.filter((x) => x.description === args.peer)
      if (described.length > 1)
        throw new EnclaveError(
          'EAMBIGUOUS',
          `"${args.peer}" describes ${described.length} peers (${described.map((p) => p.identity).join(', ')})`,
          2,
        )
      return described[0]
    }
    const first = find(await callAgent<StatusModel>({ op: 'status' }))
    if (!first) {
      const s = await callAgent<StatusModel>({ op: 'status' })
      const list = s.peers.map((p) => (p.description ? `${p.identity} (${p.description})` : p.identity)).join(', ') || 'none'
      throw new EnclaveError('ENOENT', `${args.peer} is not a peer of the running agent (peers: ${list})`, 2)
    }
    // Asking the agent to start a handshake needs root; without it, wait for the session all the same.
    await callAgent({ op: 'connect', peer: first.identity }).catch((e: EnclaveError) => {
      if (e.code !== 'EPERM') throw e
    })
    for (;;) {
      const p = find(await callAgent<StatusModel>({ op: 'status' }))
      if (p?.state === 'Up' && p.noReplySeconds === undefined) {
        this.log(`${p.identity} is up (${p.endpoint ?? 'no endpoint'})`)
        return { identity: p.identity, state: p.state, endpoint: p.endpoint }
      }
      if (Date.now() >= deadline) break
      await new Promise((r) => setTimeout(r, 250))
    }
    throw new EnclaveError('ETIMEDOUT', `${first.identity} is not up after ${flags.timeout} s`, 1)
  }
}
