import { Args } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../../base-command.js'
import { setProvidedRoute } from '../../config/edit.js'
import { applyToAgent } from '../../api/apply.js'

export default class ExitNodeUnprovide extends BaseCommand {
  static override summary = 'Stop providing a route (ExitNode.ProvidesRoutes)'
  static override description =
    'Edits the profile and applies it to a running agent. Forwarding needs ip_forward and SNAT on this machine: set ExitNode.ManageNat, or follow the warning the agent logs; `enclave doctor` checks both.'
  static override examples = ['$ sudo <%= config.bin %> exit-node unprovide 172.26.0.0/20']
  static override enableJsonFlag = true
  static override args = { cidr: Args.string({ description: 'an IPv4 network, e.g. 172.26.0.0/20', required: true }) }
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run() {
    const { args, flags } = await this.parse(ExitNodeUnprovide)
    const r = setProvidedRoute(this.profileFile(flags), args.cidr, false)
    const applied = r.changed ? await applyToAgent(this.profileFile(flags)) : { applied: false, reason: 'nothing changed' }
    if (!r.changed) this.log(`${r.route} is not provided; nothing to do`)
    else {
      this.log(`No longer providing ${r.route}`)
    }
    return r.changed ? this.reportApplied(r, applied, []) : { ...r, ...applied }
  }
}
