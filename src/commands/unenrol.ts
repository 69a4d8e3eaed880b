import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { applyToAgent } from '../api/apply.js'
import { stateDir } from '../config/profile.js'
import { unenrol } from '../ops/enrol.js'

export default class Unenrol extends BaseCommand {
  static override summary = "Leave the hub: remove the Hub block and the cached map; the agent keeps only the profile's own peers"
  static override description = 'Ask the hub admin to remove the system there too (`enclave hub system remove <identity>`).'
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run() {
    const { flags } = await this.parse(Unenrol)
    const r = unenrol(this.profileFile(flags), stateDir())
    if (!r.removed) {
      this.log('This system is not enrolled with a hub')
      return r
    }
    const applied = await applyToAgent(this.profileFile(flags))
    this.log('Unenrolled: hub peers, policies and routes are gone from this system')
    return this.reportApplied(r, applied, [])
  }
}
