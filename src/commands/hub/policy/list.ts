import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'
import { describePolicy } from '../../../hub/policy-flags.js'

export default class HubPolicyList extends BaseCommand {
  static override summary = 'List central policies'
  static override enableJsonFlag = true
  static override flags = { ...hubFlags }

  async run() {
    const { flags } = await this.parse(HubPolicyList)
    const policies = await withHub(flags, (a) => a.listPolicies())
    if (!this.jsonEnabled()) {
      if (!policies.length) this.log('No policies: systems see nobody until one connects them (`enclave hub policy create`)')
      for (const p of policies) this.log(describePolicy(p))
    }
    return { policies }
  }
}
