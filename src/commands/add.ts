import { Args, Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { addPeer, peersNoPolicyNames } from '../config/edit.js'
import { applyToAgent } from '../api/apply.js'
import { intToIp } from '../common/ipv4.js'

export default class Add extends BaseCommand {
  static override summary = 'Authorise a peer by its public key'
  static override description =
    'Adds the peer to Peers in the profile and applies it to a running agent. Both sides add each other: run `enclave pubkey` on the other machine to get its key.'
  static override examples = [
    '$ sudo <%= config.bin %> add 7cG0...= --endpoint 203.0.113.7:51820 -d "office exit node"',
    '$ sudo <%= config.bin %> add 7cG0...= --keepalive 25   # a peer behind NAT that we never dial',
    '$ sudo <%= config.bin %> add 7cG0...= -d phone --tag laptops   # with Policies: the tag they name',
  ]
  static override enableJsonFlag = true
  static override args = {
    publicKey: Args.string({ description: "the peer's base64 public key (`enclave pubkey` on that machine)", required: true }),
  }
  static override flags = {
    endpoint: Flags.string({ description: 'where the peer listens, host:port' }),
    description: Flags.string({ char: 'd', description: 'a note shown in status' }),
    keepalive: Flags.integer({ description: 'persistent keepalive interval in seconds (0 = off)', min: 0, max: 65535 }),
    'virtual-address': Flags.string({ description: "the peer's virtual address if it overrides the derived one" }),
    tag: Flags.string({ description: 'a tag the peer carries (repeat for several); Policies match peers by tag', multiple: true }),
    ...configDirFlag,
    ...runDirFlag,
  }

  async run() {
    const { args, flags } = await this.parse(Add)
    const { peer, profile } = addPeer(this.profileFile(flags), {
      publicKey: args.publicKey,
      endpoint: flags.endpoint,
      description: flags.description,
      keepalive: flags.keepalive,
      virtualAddress: flags['virtual-address'],
      tags: flags.tag,
    })
    const applied = await applyToAgent(this.profileFile(flags))
    this.log(
      `Added peer ${peer.identity}${flags.description ? ` (${flags.description})` : ''}, virtual address ${intToIp(peer.virtualAddress)}`,
    )
    const untagged = peersNoPolicyNames(profile).some((p) => p.identity === peer.identity)
    if (untagged) {
      const named = [...new Set((profile.policies ?? []).flatMap((p) => [...p.senderTags, ...p.receiverTags]))]
      this.logToStderr(
        `Warning: Policies exist and ${peer.identity} carries no tag any policy names, so its traffic is dropped: add one with \`enclave peer set ${peer.identity} --tag <tag>\` (tags the policies name: ${named.join(', ') || 'none'})`,
      )
    }
    return this.reportApplied(
      {
        identity: peer.identity,
        virtualAddress: intToIp(peer.virtualAddress),
        tags: peer.tags,
        ...(untagged ? { warning: 'no tag any policy names' } : {}),
      },
      applied,
      [],
    )
  }
}
