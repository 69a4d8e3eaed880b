import fs from 'node:fs'
import { BaseCommand, configDirFlag } from '../base-command.js'
import { generatePrivateKey } from '../config/keys.js'
import { loadProfile, writeProfile } from '../config/profile.js'
import { intToIp } from '../common/ipv4.js'
import { field } from '../views/status-format.js'

export default class RotateKey extends BaseCommand {
  static override summary = "Replace this system's key pair, keeping the rest of the profile"
  static override description =
    'Writes a backup of the profile next to it (mode 0600), gives the profile a new private key and keeps everything else (peers, tags, policies, routes, ControlGroup). The public key, the identity and (unless VirtualAddress is set) the virtual address change: the command prints what every peer must run. A running agent keeps the old key until it is restarted.'
  static override examples = ['$ sudo <%= config.bin %> rotate-key', '$ sudo <%= config.bin %> rotate-key --json']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag }

  async run() {
    const { flags } = await this.parse(RotateKey)
    const file = this.profileFile(flags)
    const old = loadProfile(file)
    const stamp = new Date().toISOString().replace(/[:.]/g, '-')
    const backup = `${file}.${stamp}.bak`
    fs.copyFileSync(file, backup, fs.constants.COPYFILE_EXCL)
    fs.chmodSync(backup, 0o600)
    const raw = structuredClone(old.raw)
    raw.PrivateKey = generatePrivateKey().toString('base64')
    const next = writeProfile(file, raw)
    const key = next.publicKey.toString('base64')
    const routes = next.exitNode.providesRoutes.map((c) => c.text)
    const tags = next.tags.map((t) => ` --tag ${t}`).join('')
    const lines = [
      ...field('', 'Old identity', `${old.identity} (${old.publicKey.toString('base64')})`),
      ...field('', 'New identity', next.identity),
      ...field('', 'New public key', key),
      ...field(
        '',
        'Virtual address',
        `${intToIp(next.virtualAddress)}${next.virtualAddress === old.virtualAddress ? ' (unchanged)' : ` (was ${intToIp(old.virtualAddress)})`}`,
      ),
      ...field('', 'Backup', backup),
      '',
      'On every peer of this system, replace the old key with the new one:',
      `  sudo enclave remove ${old.identity}`,
      `  sudo enclave add ${key} -d "<this machine>"${tags} [--endpoint <this machine's host:port>]`,
      ...routes.map((r) => `  sudo enclave route add ${next.identity} ${r}   # on peers that use this exit node`),
      'Stock WireGuard peers: put the new public key in their [Peer] section.',
      'Then restart the agent here: sudo enclave restart',
    ]
    this.log(lines.join('\n'))
    return { oldIdentity: old.identity, identity: next.identity, publicKey: key, virtualAddress: intToIp(next.virtualAddress), backup }
  }
}
