import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { parseTags } from '../../../hub/admin.js'
import { hubFlags, withHub } from '../../../hub/cli.js'
import { printPairs } from '../../../hub/pairs.js'

export default class HubSystemUpdate extends BaseCommand {
  static override summary = "Change a system's tags (--dry-run prints the sender -> receiver pairs it would open or close)"
  static override examples = ['$ sudo <%= config.bin %> hub system update G982V --set-tags exit-node,office --dry-run']
  static override enableJsonFlag = true
  static override args = { identity: Args.string({ required: true }) }
  static override flags = {
    ...hubFlags,
    'set-tags': Flags.string({ description: 'the tags, comma-separated ("" for none)', required: true }),
    'dry-run': Flags.boolean({ description: 'only print what would change' }),
  }

  async run() {
    const { args, flags } = await this.parse(HubSystemUpdate)
    const r = await withHub(flags, (a) => a.setTags(args.identity, parseTags(flags['set-tags']), flags['dry-run']))
    if (!this.jsonEnabled()) {
      this.log(`${flags['dry-run'] ? 'Would set' : 'Set'} ${r.identity}'s tags to ${r.tags.join(', ') || '(none)'}`)
      printPairs((l) => this.log(l), r)
    }
    return { ...r, dryRun: flags['dry-run'] }
  }
}
