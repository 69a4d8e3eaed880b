import { Flags } from '@oclif/core'
import { BaseCommand } from '../../base-command.js'
import { hubFlags, withHub } from '../../hub/cli.js'

export default class HubLog extends BaseCommand {
  static override summary = 'The audit log: who changed what on the hub, with the revision of each change'
  static override enableJsonFlag = true
  static override flags = { ...hubFlags, limit: Flags.integer({ description: 'how many of the latest entries', default: 100, min: 1 }) }

  async run() {
    const { flags } = await this.parse(HubLog)
    const entries = await withHub(flags, (a) => a.auditLog(flags.limit))
    if (!this.jsonEnabled()) for (const e of entries) this.log(`${e.at}  rev ${e.rev}  ${e.actor}  ${e.action}  ${e.target}`)
    return { entries }
  }
}
