import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { parseDuration, parseTags } from '../../../hub/admin.js'
import { hubFlags, withHub } from '../../../hub/cli.js'
import { EnclaveError } from '../../../errors.js'

export default class HubKeyCreate extends BaseCommand {
  static override summary = 'Create an enrolment key; it is shown once (the hub keeps only its hash)'
  static override examples = [
    '$ sudo <%= config.bin %> hub key create "office laptops" --tags laptops',
    '$ sudo <%= config.bin %> hub key create "exit nodes" --tags exit-node --auto-approve --uses 2 --for 1d',
  ]
  static override enableJsonFlag = true
  static override args = { description: Args.string({ description: 'what the key is for (unique)', required: true }) }
  static override flags = {
    ...hubFlags,
    'auto-approve': Flags.boolean({ description: 'systems enrolled with it are approved at once (default: they wait for approval)' }),
    uses: Flags.integer({ description: 'how many systems may enrol with it (default: unlimited)', min: 1 }),
    tags: Flags.string({ description: 'tags given to systems enrolled with it, comma-separated' }),
    for: Flags.string({ description: 'valid for this long: 30m, 12h, 7d (default: until revoked)' }),
    ephemeral: Flags.boolean({ description: 'for short-lived systems: approved at once' }),
  }

  async run() {
    const { args, flags } = await this.parse(HubKeyCreate)
    if (flags.ephemeral && flags['auto-approve'])
      throw new EnclaveError('EUSAGE', '--ephemeral keys approve automatically; drop --auto-approve', 2)
    const tags = parseTags(flags.tags)
    const forMs = flags.for ? parseDuration(flags.for) : undefined
    const k = await withHub(flags, (a) =>
      a.createKey(args.description, { autoApprove: flags['auto-approve'], uses: flags.uses, tags, forMs, ephemeral: flags.ephemeral }),
    )
    if (!this.jsonEnabled()) {
      this.log(k.key)
      this.log('')
      this.log(
        `Shown once: the hub keeps only its hash. ${k.autoApprove ? 'Systems enrolled with it are approved at once.' : 'Systems enrolled with it wait for `enclave hub system approve`.'}`,
      )
      if (k.tags.length) this.log(`Tags: ${k.tags.join(', ')}`)
    }
    return k
  }
}
