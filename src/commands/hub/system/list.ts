import { Flags } from '@oclif/core'
import { BaseCommand } from '../../../base-command.js'
import { hubFlags, withHub } from '../../../hub/cli.js'

export default class HubSystemList extends BaseCommand {
  static override summary = 'List enrolled systems: identity, address, state, tags, routes'
  static override enableJsonFlag = true
  static override flags = { ...hubFlags, pending: Flags.boolean({ description: 'only systems awaiting approval' }) }

  async run() {
    const { flags } = await this.parse(HubSystemList)
    const systems = await withHub(flags, (a) => a.listSystems({ pending: flags.pending }))
    if (!this.jsonEnabled()) {
      if (!systems.length) this.log(flags.pending ? 'No system awaits approval' : 'No systems enrolled yet')
      for (const s of systems) {
        const routes = s.routes.map((r) => `${r.cidr}${r.approved ? '' : ' (awaiting approval)'}`).join(', ')
        this.log(
          `${s.identity}  ${s.virtualAddress}  ${s.state}  ${s.hostname}${s.tags.length ? `  tags ${s.tags.join(',')}` : ''}${routes ? `  routes ${routes}` : ''}${s.lastSeenAt ? `  last seen ${s.lastSeenAt}` : ''}`,
        )
      }
    }
    return { systems }
  }
}
