import { Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubRouteList extends BaseCommand {
  static override summary = 'List exit-node routes: advertised by agents (awaiting approval) or approved'
  static override enableJsonFlag = true
  static override flags = { ...hubFlags, pending: Flags.boolean({ description: 'only routes awaiting approval' }) }

  async run() {
    const { flags } = await this.parse(HubRouteList)
    const routes = await withHub(flags, (a) => a.listRoutes({ pending: flags.pending }))
    if (!this.jsonEnabled()) {
      if (!routes.length) this.log(flags.pending ? 'No route awaits approval' : 'No routes')
      for (const r of routes)
        this.log(
          `${r.identity}  ${r.cidr}  ${r.approved ? 'approved' : 'awaiting approval'}  (${r.source === 'agent' ? 'advertised' : 'added by an admin'})`,
        )
    }
    return { routes }
  }
}
