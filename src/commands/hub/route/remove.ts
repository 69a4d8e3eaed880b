import { Args } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubRouteRemove extends BaseCommand {
  static override summary = 'Remove a route from an exit node'
  static override examples = ['$ sudo <%= config.bin %> hub route remove G982V 172.26.0.0/20']
  static override enableJsonFlag = true
  static override args = {
    identity: Args.string({ description: 'the exit node', required: true }),
    cidr: Args.string({ description: 'the route, e.g. 172.26.0.0/20', required: true }),
  }
  static override flags = { ...hubFlags }

  async run() {
    const { args, flags } = await this.parse(HubRouteRemove)
    const r = await withHub(flags, (a) => a.removeRoute(args.identity, args.cidr))
    this.log(`${r.identity}: ${r.cidr} removed`)
    return r
  }
}
