import { BaseCommand } from '../../../base-command.js'
import { HubAuth } from '../../../hub/auth.js'
import { dataDirFlag, withLocalHub } from '../../../hub/cli.js'

export default class HubAdminList extends BaseCommand {
  static override summary = 'List portal accounts and their roles'
  static override enableJsonFlag = true
  static override flags = { ...dataDirFlag }

  async run() {
    const { flags } = await this.parse(HubAdminList)
    const admins = await withLocalHub(flags['data-dir'], (store) => new HubAuth(store).listAdmins())
    if (!this.jsonEnabled()) {
      if (!admins.length) this.log('No portal accounts: add one with `enclave hub admin add <user>`')
      for (const a of admins) this.log(`${a.username}  ${a.role}  created ${a.createdAt}`)
    }
    return { admins }
  }
}
