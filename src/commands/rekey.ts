import { BaseCommand, runDirFlag } from '../base-command.js'
import { callAgent } from '../api/client.js'

export default class Rekey extends BaseCommand {
  static override summary = 'Start a new handshake with every connected peer now (keys rotate without dropping traffic)'
  static override examples = ['$ sudo <%= config.bin %> rekey']
  static override enableJsonFlag = true
  static override flags = { ...runDirFlag }

  async run() {
    await this.parse(Rekey)
    const r = await callAgent<{ peers: string[] }>({ op: 'rekey' })
    this.log(r.peers.length ? `Rekeying with ${r.peers.join(', ')}` : 'No peer has a session to rekey')
    return r
  }
}
