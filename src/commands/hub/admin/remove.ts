import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { HubAuth } from '../../../hub/auth.js'
import { dataDirFlag, withLocalHub } from '../../../hub/cli.js'

export default class HubAdminRemove extends BaseCommand {
  static override summary = 'Remove a portal account (its sessions end at once)'
  static override examples = ['$ sudo <%= config.bin %> hub admin remove alice']
  static override enableJsonFlag = true
  static override args = { user: Args.string({ description: 'the user name', required: true }) }
  static override flags = { ...dataDirFlag }

  async run() {
    const { args, flags } = await this.parse(HubAdminRemove)
    const r = await withLocalHub(flags['data-dir'], (store, actor) => new HubAuth(store).removeAdmin(actor, args.user))
    this.log(`Removed account ${r.username}`)
    return r
  }
}
