import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubRouteApprove extends BaseCommand {
  static override summary = 'Approve a route an exit node advertises (its ProvidesRoutes): gateway policies may then grant it'
  static override examples = ['$ sudo <%= config.bin %> hub route approve G982V 172.26.0.0/20']
  static override enableJsonFlag = true
  static override args = {
    identity: Args.string({ description: 'the exit node', required: true }),
    cidr: Args.string({ description: 'the route, e.g. 172.26.0.0/20', required: true }),
  }
  static override flags = { ...hubFlags }

  async run() {
    const { args, flags } = await this.parse(HubRouteApprove)
    const r = await withHub(flags, (a) => a.approveRoute(args.identity, args.cidr))
    this.log(`${r.identity}: ${r.cidr} approved`)
    return r
  }
}
