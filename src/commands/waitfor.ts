import { Args, Flags } from '@oclif/core'
import { BaseCommand, runDirFlag } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { callAgent } from '../api/client.js'
import { normaliseIdentity } from '../config/identity.js'
import type { StatusModel } from '../views/status-model.js'

export default class Waitfor extends BaseCommand {
  static override summary = 'Wait until the session with a peer is up (exit 0), or time out (exit 1): a health check'
  static override examples = ['$ <%= config.bin %> waitfor G982V -t 10', '$ <%= config.bin %> waitfor 100.64.69.156']
  static override args = { peer: Args.string({ description: 'identity or virtual address of the peer', required: true }) }
  static override flags = {
    ...runDirFlag,
    timeout: Flags.integer({ char: 't', description: 'seconds to wait (0 = check once)', default: 30, min: 0 }),
  }

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Waitfor)
    const want = args.peer.includes('.') ? args.peer : normaliseIdentity(args.peer)
    const deadline = Date.now() + flags.timeout * 1000
    let known = false
    // Asking the agent to start a handshake needs root; without it, wait for the session all the same.
    await callAgent({ op: 'connect', peer: want }).catch((e: EnclaveError) => {
      if (e.code !== 'EPERM') throw e
    })
    for (;;) {
      const s = await callAgent<StatusModel>({ op: 'status' })
      const p = s.peers.find((x) => x.identity === want || x.virtualAddress === want)
      known = !!p
      if (p?.state === 'Up') {
        this.log(`${p.identity} is up (${p.endpoint ?? 'no endpoint'})`)
        return
      }
      if (Date.now() >= deadline) break
      await new Promise((r) => setTimeout(r, 250))
    }
    throw new EnclaveError(
      'ETIMEDOUT',
      known ? `${args.peer} is not up after ${flags.timeout} s` : `${args.peer} is not a peer of this agent`,
      1,
    )
  }
}
