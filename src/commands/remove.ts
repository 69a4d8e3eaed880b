import { Args } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { normaliseIdentity } from '../control/identity.js'
import { loadProfile, writeProfile } from '../control/profile/profile.js'

export default class Remove extends BaseCommand {
  static override description = 'Remove a peer (and its AvailableRoutes entry) from the profile'
  static override enableJsonFlag = true
  static override args = { identity: Args.string({ description: "the peer's identity, e.g. G982V", required: true }) }

  async run() {
    const { args, flags } = await this.parse(Remove)
    const file = this.profileFile(flags)
    const profile = loadProfile(file)
    const id = normaliseIdentity(args.identity)
    const peer = profile.peers.find((p) => p.identity === id)
    if (!peer) {
      throw new EnclaveError(
        'ENOENT',
        `no peer ${args.identity} in ${file} (peers: ${profile.peers.map((p) => p.identity).join(', ') || 'none'})`,
      )
    }
    const raw = structuredClone(profile.raw)
    ;(raw.Peers as unknown[]).splice(peer.index, 1)
    const en = raw.ExitNode as { AvailableRoutes?: Record<string, unknown> } | undefined
    let droppedRoutes = false
    if (en?.AvailableRoutes) {
      for (const k of Object.keys(en.AvailableRoutes)) {
        if (normaliseIdentity(k) === id) {
          delete en.AvailableRoutes[k]
          droppedRoutes = true
        }
      }
    }
    writeProfile(file, raw)
    this.log(`Removed peer ${id}${droppedRoutes ? ' and its AvailableRoutes entry' : ''}`)
    return { identity: id, removedRoutes: droppedRoutes }
  }
}
