import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'
import { printPairs } from '../../../hub/pairs.js'
import { policyBody, policyFlags } from '../../../hub/policy-flags.js'

export default class HubPolicyCreate extends BaseCommand {
  static override summary = 'Create a central policy: which tagged systems may start which traffic to which others, or through an exit node'
  static override examples = [
    '$ sudo <%= config.bin %> hub policy create "laptops to servers" --senders laptops --receivers servers --acl icmp --acl tcp:22',
    '$ sudo <%= config.bin %> hub policy create "printer" --senders laptops --gateway G982V:172.26.0.0/20 --allow-ip 172.26.0.250 --acl icmp --acl tcp:9100',
  ]
  static override enableJsonFlag = true
  static override args = { description: Args.string({ description: 'the policy name (unique)', required: true }) }
  static override flags = { ...hubFlags, ...policyFlags }

  async run() {
    const { args, flags } = await this.parse(HubPolicyCreate)
    const body = policyBody(flags)
    const r = await withHub(flags, (a) =>
      a.putPolicy(args.description, body, { create: true, enabled: !flags.disabled, dryRun: flags['dry-run'] }),
    )
    if (!this.jsonEnabled()) {
      this.log(`${r.dryRun ? 'Would create' : 'Created'} policy "${r.description}"`)
      printPairs((l) => this.log(l), r)
    }
    return r
  }
}
