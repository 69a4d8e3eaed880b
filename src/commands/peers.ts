import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { loadProfile } from '../config/profile.js'
import { offlineStatus } from '../views/status-offline.js'
import { formatPeerLines } from '../views/status-format.js'
import type { PeerStatus, StatusModel } from '../views/status-model.js'
import { AgentNotRunning, callAgent } from '../api/client.js'

export default class Peers extends BaseCommand {
  static override summary = 'List peers, one line each: identity, description, state, endpoint, last handshake, transfer, routes'
  static override description = 'Live when the agent runs; otherwise from the profile (exit 0 either way).'
  static override examples = ['$ sudo <%= config.bin %> peers', '$ sudo <%= config.bin %> peers --json']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run(): Promise<{ running: boolean; peers: PeerStatus[] }> {
    const { flags } = await this.parse(Peers)
    let s: StatusModel
    try {
      s = await callAgent<StatusModel>({ op: 'status' })
    } catch (e) {
      if (!(e instanceof AgentNotRunning)) throw e
      s = offlineStatus(loadProfile(this.profileFile(flags)))
    }
    if (!this.jsonEnabled()) this.log(s.peers.length ? formatPeerLines(s) : 'No peers: add one with `enclave add <public key>`')
    return { running: s.running, peers: s.peers }
  }
}
