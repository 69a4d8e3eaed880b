import { BaseCommand, configDirFlag } from '../base-command.js'
import { loadProfile } from '../config/profile.js'

export default class Pubkey extends BaseCommand {
  static override summary = "Print this system's public key (give it to each peer's `enclave add`)"
  static override examples = ['$ sudo <%= config.bin %> pubkey', '$ ssh exit-node sudo enclave add "$(sudo enclave pubkey)" -d laptop']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag }

  async run(): Promise<{ publicKey: string }> {
    const { flags } = await this.parse(Pubkey)
    const publicKey = loadProfile(this.profileFile(flags)).publicKey.toString('base64')
    this.log(publicKey)
    return { publicKey }
  }
}
