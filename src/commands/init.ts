import fs from 'node:fs'
import { Flags } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { generatePrivateKey } from '../control/keys.js'
import { writeProfile } from '../control/profile/profile.js'
import { intToIp } from '../common/ipv4.js'

export default class Init extends BaseCommand {
  static override description = 'Create the profile with a fresh key pair'
  static override examples = ['sudo <%= config.bin %> init', '<%= config.bin %> init --config-dir ./site-a --port 51821']
  static override enableJsonFlag = true
  static override flags = {
    force: Flags.boolean({ description: 'overwrite an existing profile (its private key is lost)' }),
    port: Flags.integer({ description: 'UDP port to listen on (0 = random)', min: 0, max: 65535 }),
    interface: Flags.string({ description: 'TUN interface name' }),
  }

  async run() {
    const { flags } = await this.parse(Init)
    const file = this.profileFile(flags)
    if (fs.existsSync(file) && !flags.force) {
      throw new EnclaveError(
        'EEXIST',
        `${file}: a profile already exists; use --force to replace it (its private key and identity will be lost)`,
      )
    }
    const raw: Record<string, unknown> = { PrivateKey: generatePrivateKey().toString('base64') }
    if (flags.port !== undefined) raw.LocalPort = flags.port
    if (flags.interface) raw.Interface = flags.interface
    raw.Peers = []
    raw.ExitNode = {}
    const p = writeProfile(file, raw)
    const out = {
      identity: p.identity,
      publicKey: p.publicKey.toString('base64'),
      virtualAddress: intToIp(p.virtualAddress),
      profile: file,
    }
    this.log(`Local identity: ${out.identity}`)
    this.log(`Public key:     ${out.publicKey}`)
    this.log(`Virtual address: ${out.virtualAddress}`)
    this.log(`Profile:        ${file}`)
    return out
  }
}
