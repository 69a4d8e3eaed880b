import { Args } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../../base-command.js'
import { setAvailableRoute } from '../../config/edit.js'
import { applyToAgent } from '../../api/apply.js'

export default class RouteAdd extends BaseCommand {
  static override summary = 'Use a route through an exit node (ExitNode.AvailableRoutes)'
  static override description =
    'Edits the profile and applies it to a running agent, which installs the OS route. The exit node is a peer already added with `enclave add`; list several exit nodes for the same route for failover (the first added is preferred).'
  static override examples = ['$ sudo <%= config.bin %> route add G982V 172.26.0.0/20']
  static override enableJsonFlag = true
  static override args = {
    identity: Args.string({ description: "the exit node's identity (e.g. G982V), virtual address or public key", required: true }),
    cidr: Args.string({ description: 'an IPv4 network, e.g. 172.26.0.0/20', required: true }),
  }
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run() {
    const { args, flags } = await this.parse(RouteAdd)
    const r = setAvailableRoute(this.profileFile(flags), args.identity, args.cidr, true)
    const applied = r.changed ? await applyToAgent(this.profileFile(flags)) : { applied: false, reason: 'nothing changed' }
    if (!r.changed) this.log(`${r.route} through ${r.identity} is already configured; nothing to do`)
    else {
      this.log(`Route ${r.route} now goes through ${r.identity}`)
    }
    return r.changed ? this.reportApplied(r, applied, [{ route: r.route, via: r.identity }]) : { ...r, ...applied }
  }
}
