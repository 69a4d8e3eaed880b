import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'
import { printPairs } from '../../../hub/pairs.js'
import { policyBody, policyFlags } from '../../../hub/policy-flags.js'

export default class HubPolicyUpdate extends BaseCommand {
  static override summary = 'Replace a policy (give all of --senders, --receivers or --gateway, --acl), or only --enable / --disable it'
  static override examples = [
    '$ sudo <%= config.bin %> hub policy update "laptops to servers" --senders laptops --receivers servers --acl icmp --dry-run',
  ]
  static override enableJsonFlag = true
  static override args = { description: Args.string({ required: true }) }
  static override flags = { ...hubFlags, ...policyFlags, enable: Flags.boolean({ description: 'enable it', exclusive: ['disabled'] }) }

  async run() {
    const { args, flags } = await this.parse(HubPolicyUpdate)
    const body = flags.senders || flags.acl || flags.receivers || flags.gateway ? policyBody(flags) : null
    const enabled = flags.enable ? true : flags.disabled ? false : undefined
    const r = await withHub(flags, (a) => a.putPolicy(args.description, body, { enabled, dryRun: flags['dry-run'] }))
    if (!this.jsonEnabled()) {
      this.log(`${r.dryRun ? 'Would update' : 'Updated'} policy "${r.description}"`)
      printPairs((l) => this.log(l), r)
    }
    return r
  }
}
