import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { decodeKey } from '../control/keys.js'
import { identityFromPublicKey } from '../control/identity.js'
import { loadProfile, writeProfile } from '../control/profile/profile.js'
import { intToIp } from '../common/ipv4.js'

export default class Add extends BaseCommand {
  static override description = 'Authorise a peer by its public key (edits Peers in the profile)'
  static override examples = ['<%= config.bin %> add 7cG0...= --endpoint 203.0.113.7:51820 -d "office exit node"']
  static override enableJsonFlag = true
  static override args = { publicKey: Args.string({ description: "the peer's base64 public key", required: true }) }
  static override flags = {
    endpoint: Flags.string({ description: 'where the peer listens, host:port' }),
    description: Flags.string({ char: 'd', description: 'a note shown in status' }),
    keepalive: Flags.integer({ description: 'persistent keepalive interval in seconds (0 = off)', min: 0, max: 65535 }),
    'virtual-address': Flags.string({ description: "the peer's virtual address if it overrides the derived one" }),
  }

  async run() {
    const { args, flags } = await this.parse(Add)
    const file = this.profileFile(flags)
    const profile = loadProfile(file)
    const key = decodeKey(args.publicKey)
    if (typeof key === 'string') throw new EnclaveError('EKEY', `public key: ${key}`)
    const identity = identityFromPublicKey(key)
    if (profile.peers.some((p) => p.identity === identity)) throw new EnclaveError('EEXIST', `peer ${identity} is already in ${file}`)
    const raw = structuredClone(profile.raw)
    const peers = Array.isArray(raw.Peers) ? (raw.Peers as unknown[]) : []
    const entry: Record<string, unknown> = { PublicKey: key.toString('base64'), Identity: identity }
    if (flags.description) entry.Description = flags.description
    if (flags.endpoint) entry.Endpoint = flags.endpoint
    if (flags.keepalive !== undefined) entry.PersistentKeepalive = flags.keepalive
    if (flags['virtual-address']) entry.VirtualAddress = flags['virtual-address']
    peers.push(entry)
    raw.Peers = peers
    const next = writeProfile(file, raw)
    const peer = next.peers.find((p) => p.identity === identity)!
    this.log(`Added peer ${identity}${flags.description ? ` (${flags.description})` : ''}, virtual address ${intToIp(peer.virtualAddress)}`)
    this.log('A running agent picks this up on `enclave reload`.')
    return { identity, virtualAddress: intToIp(peer.virtualAddress) }
  }
}
