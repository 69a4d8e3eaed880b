import fs from 'node:fs'
import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { generatePrivateKey } from '../config/keys.js'
import { writeProfile } from '../config/profile.js'
import { intToIp } from '../common/ipv4.js'
import { field } from '../views/status-format.js'

export default class Init extends BaseCommand {
  static override summary = 'Create the profile with a fresh key pair'
  static override examples = ['$ sudo <%= config.bin %> init', '$ <%= config.bin %> init --config-dir ./site-a --port 51821']
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
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
        `${file}: a profile already exists; \`enclave rotate-key\` gives it a new key and keeps the rest (--force replaces the whole profile: peers, tags and policies are lost)`,
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
    const sudo = process.getuid?.() === 0 ? 'sudo ' : ''
    this.log(
      [
        ...field('', 'Local identity', out.identity),
        ...field('', 'Public key', out.publicKey),
        ...field('', 'Virtual address', out.virtualAddress),
        ...field('', 'Profile', file),
        '',
        'Next steps:',
        `  1. Give this public key to each peer; there: ${sudo}enclave add ${out.publicKey} -d "<this machine>"`,
        `  2. Add each peer here:                       ${sudo}enclave add <its public key> --endpoint <host:port>`,
        `  3. On an exit node, provide its LAN:         ${sudo}enclave exit-node provide 172.26.0.0/20`,
        `     On a client, use it:                      ${sudo}enclave route add <exit node identity> 172.26.0.0/20`,
        `  4. Start the agent:                          ${sudo}enclave start   (or: ${sudo}enclave run -v 2)`,
      ].join('\n'),
    )
    return out
  }
}
