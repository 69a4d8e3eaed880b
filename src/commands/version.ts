import { BaseCommand } from '../base-command.js'
import { VERSION } from '../version.js'

export default class Version extends BaseCommand {
  static override summary = "Show the agent's version"
  static override examples = ['$ <%= config.bin %> version --json']
  static override enableJsonFlag = true

  async run() {
    const out = {
      release: VERSION, // `version` is the JSON shape's, as in every --json document
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      protocol: 'WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s)',
    }
    this.log(`enclave ${out.release} (node ${out.node}, ${out.platform}; protocol ${out.protocol})`)
    return out
  }
}
