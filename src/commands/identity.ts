import { BaseCommand, configDirFlag } from '../base-command.js'
import { loadProfile } from '../config/profile.js'

export default class Identity extends BaseCommand {
  static override summary = "Print this system's identity (the name peers use in AvailableRoutes, waitfor and route add)"
  static override examples = ['$ sudo <%= config.bin %> identity']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag }

  async run(): Promise<{ identity: string }> {
    const { flags } = await this.parse(Identity)
    const identity = loadProfile(this.profileFile(flags)).identity
    this.log(identity)
    return { identity }
  }
}
