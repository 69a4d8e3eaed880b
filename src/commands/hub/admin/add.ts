import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { HubAuth, checkPassword, checkUsername } from '../../../hub/auth.js'
import { dataDirFlag, portalUrl, withLocalHub } from '../../../hub/cli.js'
import { readNewPassword } from '../../../hub/secret-input.js'

export default class HubAdminAdd extends BaseCommand {
  static override summary = 'Add a portal account; its password is read from stdin (first line) or typed twice on a terminal'
  static override description = 'The password is never a flag (flags end up in shell history and `ps`). At least 10 characters.'
  static override examples = [
    '$ sudo <%= config.bin %> hub admin add alice',
    "$ echo 'correct horse battery' | sudo <%= config.bin %> hub admin add bob --viewer",
  ]
  static override enableJsonFlag = true
  static override args = { user: Args.string({ description: 'the user name', required: true }) }
  static override flags = { ...dataDirFlag, viewer: Flags.boolean({ description: 'the account only reads (default: admin)' }) }

  async run() {
    const { args, flags } = await this.parse(HubAdminAdd)
    const user = checkUsername(args.user)
    const password = checkPassword(await readNewPassword(user))
    const { r, url } = await withLocalHub(flags['data-dir'], async (store, actor, dir) => ({
      r: await new HubAuth(store).addAdmin(actor, user, password, flags.viewer ? 'viewer' : 'admin'),
      url: portalUrl(dir),
    }))
    this.log(
      `Added ${r.role === 'viewer' ? 'viewer' : 'admin'} account ${r.username}${url ? `: log in at ${url}/login` : ' (the portal is off in hub.json)'}`,
    )
    return r
  }
}
