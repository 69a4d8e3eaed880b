import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'
import { printPairs } from '../../../hub/pairs.js'

export default class HubPolicyDelete extends BaseCommand {
  static override summary = 'Delete a policy'
  static override enableJsonFlag = true
  static override args = { description: Args.string({ required: true }) }
  static override flags = { ...hubFlags, 'dry-run': Flags.boolean({ description: 'only print what it would close' }) }

  async run() {
    const { args, flags } = await this.parse(HubPolicyDelete)
    const r = await withHub(flags, (a) => a.deletePolicy(args.description, flags['dry-run']))
    if (!this.jsonEnabled()) {
      this.log(`${r.dryRun ? 'Would delete' : 'Deleted'} policy "${r.description}"`)
      printPairs((l) => this.log(l), r)
    }
    return r
  }
}
