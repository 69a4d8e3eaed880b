import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { type HubFlags, hubFlags, withHub } from '../../../hub/cli.js'

export default class HubTokenRevoke extends BaseCommand {
  static override summary = 'Revoke an API token (by its id, description or the whole token): the API refuses it from now on'
  static override examples = [
    '$ sudo <%= config.bin %> hub token revoke 3f9a0c12de',
    '$ sudo <%= config.bin %> hub token revoke ci pipeline',
  ]
  static override enableJsonFlag = true
  static override strict = false
  static override args = {
    token: Args.string({ description: 'token id, description (several words allowed) or whole token', required: true }),
  }
  static override flags = { ...hubFlags }

  async run() {
    const { argv, flags } = await this.parse(HubTokenRevoke)
    const which = (argv as string[]).join(' ')
    const t = await withHub(flags as HubFlags, (_a, ctx) => ctx.tokens.revokeToken(which))
    this.log(`Revoked API token ${t.tokenId} (${t.description})`)
    return { token: t }
  }
}
