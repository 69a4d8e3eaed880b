import { BaseCommand, configDirFlag } from '../base-command.js'
import { loadProfile } from '../config/profile.js'
import { intToIp } from '../common/ipv4.js'

export default class Address extends BaseCommand {
  static override summary = "Print this system's virtual address in the overlay"
  static override examples = ['$ sudo <%= config.bin %> address']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag }

  async run(): Promise<{ virtualAddress: string }> {
    const { flags } = await this.parse(Address)
    const virtualAddress = intToIp(loadProfile(this.profileFile(flags)).virtualAddress)
    this.log(virtualAddress)
    return { virtualAddress }
  }
}
