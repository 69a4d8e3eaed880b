import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubKeyList extends BaseCommand {
  static override summary = 'List enrolment keys (by their first group; the keys themselves are not stored)'
  static override enableJsonFlag = true
  static override flags = { ...hubFlags }

  async run() {
    const { flags } = await this.parse(HubKeyList)
    const keys = await withHub(flags, (a) => a.listKeys())
    if (!this.jsonEnabled()) {
      if (!keys.length) this.log('No enrolment keys: create one with `enclave hub key create <description>`')
      for (const k of keys)
        this.log(
          `${k.keyId}-…  ${k.description}  ${k.state}  ${k.autoApprove ? 'auto-approve' : 'approval'}  uses ${k.usedCount}/${k.usesRemaining === null ? '∞' : k.usedCount + k.usesRemaining}${k.tags.length ? `  tags ${k.tags.join(',')}` : ''}${k.expiresAt ? `  expires ${k.expiresAt}` : ''}`,
        )
    }
    return { keys }
  }
}
