import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { notFound } from '../../../hub/admin.js'
import { HubAuth, checkPassword } from '../../../hub/auth.js'
import { dataDirFlag, withLocalHub } from '../../../hub/cli.js'
import { readNewPassword } from '../../../hub/secret-input.js'

export default class HubAdminPasswd extends BaseCommand {
  static override summary = "Set a portal account's password (stdin's first line, or typed twice); its sessions end"
  static override examples = ['$ sudo <%= config.bin %> hub admin passwd alice']
  static override enableJsonFlag = true
  static override args = { user: Args.string({ description: 'the user name', required: true }) }
  static override flags = { ...dataDirFlag }

  async run() {
    const { args, flags } = await this.parse(HubAdminPasswd)
    // The account must exist before anyone types a password for it.
    const exists = await withLocalHub(flags['data-dir'], async (store) =>
      (await new HubAuth(store).listAdmins()).some((a) => a.username === args.user.trim()),
    )
    if (!exists) throw notFound(`no account "${args.user}" (see \`enclave hub admin list\`)`)
    const password = checkPassword(await readNewPassword(args.user.trim()))
    const r = await withLocalHub(flags['data-dir'], (store, actor) => new HubAuth(store).setPassword(actor, args.user, password))
    this.log(`Changed the password of ${r.username}; its portal sessions ended`)
    return r
  }
}
