import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubRouteAdd extends BaseCommand {
  static override summary = 'Add an approved route to an exit node (it provides it once enrolled with --allow-gateway)'
  static override examples = ['$ sudo <%= config.bin %> hub route add G982V 172.26.0.0/20']
  static override enableJsonFlag = true
  static override args = {
    identity: Args.string({ description: 'the exit node', required: true }),
    cidr: Args.string({ description: 'the route, e.g. 172.26.0.0/20', required: true }),
  }
  static override flags = { ...hubFlags }

  async run() {
    const { args, flags } = await this.parse(HubRouteAdd)
    const r = await withHub(flags, (a) => a.addRoute(args.identity, args.cidr))
    this.log(`${r.identity}: ${r.cidr} added (approved)`)
    return r
  }
}
