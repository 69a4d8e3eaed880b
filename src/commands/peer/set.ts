import { Args, Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../../base-command.js'
import { peersNoPolicyNames, setPeer } from '../../config/edit.js'
import { loadProfile } from '../../config/profile.js'
import { applyToAgent } from '../../api/apply.js'
import { EnclaveError } from '../../errors.js'

export default class PeerSet extends BaseCommand {
  static override summary = "Change a peer's endpoint, tags, keepalive or description"
  static override description =
    "Edits the peer in the profile (validated, written atomically) and applies it to a running agent. --tag replaces the peer's tags (repeat it for several; --no-tags removes them)."
  static override examples = [
    '$ sudo <%= config.bin %> peer set G982V --endpoint office.example.net:51820',
    '$ sudo <%= config.bin %> peer set phone --tag laptops --tag admins',
    '$ sudo <%= config.bin %> peer set G982V --keepalive 25 --description "office exit node"',
  ]
  static override enableJsonFlag = true
  static override args = {
    peer: Args.string({ description: "the peer's identity, virtual address, public key or description", required: true }),
  }
  static override flags = {
    endpoint: Flags.string({ description: 'where the peer listens, host:port', exclusive: ['no-endpoint'] }),
    'no-endpoint': Flags.boolean({ description: 'remove the Endpoint (the peer has to connect first)' }),
    tag: Flags.string({
      description: 'a tag the peer carries (repeat for several; replaces its tags)',
      multiple: true,
      exclusive: ['no-tags'],
    }),
    'no-tags': Flags.boolean({ description: 'remove all its tags' }),
    keepalive: Flags.integer({ description: 'persistent keepalive interval in seconds (0 = off)', min: 0, max: 65535 }),
    description: Flags.string({ char: 'd', description: 'a note shown in status (empty: remove it)' }),
    ...configDirFlag,
    ...runDirFlag,
  }

  async run() {
    const { args, flags } = await this.parse(PeerSet)
    const settings = {
      endpoint: flags['no-endpoint'] ? null : flags.endpoint,
      tags: flags['no-tags'] ? [] : flags.tag,
      keepalive: flags.keepalive,
      description: flags.description === '' ? null : flags.description,
    }
    if (Object.values(settings).every((v) => v === undefined))
      throw new EnclaveError(
        'EUSAGE',
        'nothing to change: give --endpoint, --tag, --keepalive or --description (see `enclave peer set --help`)',
        2,
      )
    const file = this.profileFile(flags)
    const r = setPeer(file, args.peer, settings)
    if (!r.changed.length) {
      this.log(`${r.identity} already has these settings; nothing to do`)
      return { ...r, applied: false, reason: 'nothing changed' }
    }
    this.log(`Peer ${r.identity}: changed ${r.changed.join(', ')}`)
    if (peersNoPolicyNames(loadProfile(file)).some((p) => p.identity === r.identity))
      this.logToStderr(`Warning: Policies exist and ${r.identity} carries no tag any policy names, so its traffic is dropped`)
    return this.reportApplied(r, await applyToAgent(file), [])
  }
}
