import { BaseCommand, runDirFlag } from '../base-command.js'
import { callAgent } from '../api/client.js'

export default class Reload extends BaseCommand {
  static override summary = 'Re-read the profile in the running agent; unchanged sessions stay up (SIGHUP does the same)'
  static override examples = ['$ sudo <%= config.bin %> reload', '$ sudo systemctl reload enclave   # the same, through systemd (SIGHUP)']
  static override enableJsonFlag = true
  static override flags = { ...runDirFlag }

  async run() {
    await this.parse(Reload)
    const r = await callAgent<{ added: string[]; removed: string[]; changed: string[] }>({ op: 'reload' })
    this.log(`Profile reloaded: ${r.added.length} peer(s) added, ${r.removed.length} removed, ${r.changed.length} changed`)
    for (const [k, v] of Object.entries(r)) if (v.length) this.log(`  ${k}: ${v.join(', ')}`)
    return r
  }
}
