import { Args } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { removePeer } from '../config/edit.js'
import { applyToAgent } from '../api/apply.js'

export default class Remove extends BaseCommand {
  static override summary = 'Remove a peer and its AvailableRoutes entry'
  static override description = 'Removes the peer from the profile and applies it to a running agent: its session ends.'
  static override examples = ['$ sudo <%= config.bin %> remove G982V']
  static override enableJsonFlag = true
  static override args = {
    identity: Args.string({ description: "the peer's identity (e.g. G982V), virtual address or public key", required: true }),
  }
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run() {
    const { args, flags } = await this.parse(Remove)
    const r = removePeer(this.profileFile(flags), args.identity)
    const applied = await applyToAgent(this.profileFile(flags))
    this.log(`Removed peer ${r.identity}${r.removedRoutes ? ' and its AvailableRoutes entry' : ''}`)
    return this.reportApplied(r, applied, [])
  }
}
