import { Command } from '@oclif/core'
import { VERSION } from '../version.js'

export default class Version extends Command {
  static override summary = "Show the agent's version"
  static override examples = ['$ <%= config.bin %> version --json']
  static override enableJsonFlag = true

  async run() {
    const out = {
      version: VERSION,
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      protocol: 'WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s)',
    }
    this.log(`enclave ${out.version} (node ${out.node}, ${out.platform}; protocol ${out.protocol})`)
    return out
  }
}
