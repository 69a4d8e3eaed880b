import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubTokenList extends BaseCommand {
  static override summary = 'List API tokens (by their id; the tokens themselves are not stored)'
  static override enableJsonFlag = true
  static override flags = { ...hubFlags }

  async run() {
    const { flags } = await this.parse(HubTokenList)
    const tokens = await withHub(flags, (_a, ctx) => ctx.tokens.listTokens())
    if (!this.jsonEnabled()) {
      if (!tokens.length) this.log('No API tokens: create one with `enclave hub token create <description>`')
      for (const k of tokens)
        this.log(
          `${k.tokenId}  ${k.description}  ${k.role}  ${k.state}  created ${k.createdAt} by ${k.createdBy}${k.expiresAt ? `  expires ${k.expiresAt}` : ''}${k.lastUsedAt ? `  last used ${k.lastUsedAt}` : '  never used'}`,
        )
    }
    return { tokens }
  }
}
