import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { parseDuration } from '../../../hub/admin.js'
import { hubFlags, portalUrl, withHub } from '../../../hub/cli.js'

export default class HubTokenCreate extends BaseCommand {
  static override summary = 'Create an API token for the admin API and `--hub-api`; it is shown once (the hub keeps only its hash)'
  static override examples = [
    '$ sudo <%= config.bin %> hub token create "ci pipeline" --for 90d',
    '$ sudo <%= config.bin %> hub token create "dashboard" --viewer',
  ]
  static override enableJsonFlag = true
  static override args = { description: Args.string({ description: 'what the token is for (unique)', required: true }) }
  static override flags = {
    ...hubFlags,
    viewer: Flags.boolean({ description: 'it only reads (default: an admin token, which may change everything)' }),
    for: Flags.string({ description: 'valid for this long: 12h, 90d (default: until revoked)' }),
  }

  async run() {
    const { args, flags } = await this.parse(HubTokenCreate)
    const forMs = flags.for ? parseDuration(flags.for) : undefined
    const { t, url } = await withHub(flags, async (_a, ctx) => ({
      t: await ctx.tokens.createToken(args.description, { role: flags.viewer ? 'viewer' : 'admin', forMs }),
      url: ctx.remote ? ctx.remote.replace(/\/api\/v1$/, '') : ctx.dir ? portalUrl(ctx.dir) : null,
    }))
    if (!this.jsonEnabled()) {
      this.log(t.token)
      this.log('')
      this.log(
        `Shown once: the hub keeps only its hash. Token ${t.tokenId} (${t.role === 'viewer' ? 'viewer: reads only' : 'admin'}), ${t.expiresAt ? `expires ${t.expiresAt}` : 'valid until revoked'}.`,
      )
      this.log('Use it:')
      this.log(`  export ENCLAVE_HUB_TOKEN=${t.token}`)
      this.log(`  enclave hub system list --hub-api ${url ?? '<portal URL>'}`)
      this.log(`Revoke it: enclave hub token revoke ${t.tokenId}`)
    }
    return { token: t }
  }
}
