import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubKeyRevoke extends BaseCommand {
  static override summary = 'Revoke an enrolment key (by its first group or description): no new enrolments; enrolled systems stay'
  static override enableJsonFlag = true
  static override args = { key: Args.string({ description: 'key id (first five characters), whole key or description', required: true }) }
  static override flags = { ...hubFlags }

  async run() {
    const { args, flags } = await this.parse(HubKeyRevoke)
    const k = await withHub(flags, (a) => a.revokeKey(args.key))
    this.log(`Revoked ${k.keyId}-… (${k.description})`)
    return k
  }
}
