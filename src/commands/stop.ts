import { BaseCommand, runDirFlag } from '../base-command.js'
import { runDir } from '../config/profile.js'
import { stopDaemon, systemctl, useSystemd } from '../ops/service.js'
import { cleanupAfterCrash } from '../ops/crash-leftovers.js'

export default class Stop extends BaseCommand {
  static override summary = 'Stop the agent service; it removes every route and rule it added'
  static override examples = ['$ sudo <%= config.bin %> stop']
  static override enableJsonFlag = true
  static override flags = { ...runDirFlag }

  async run(): Promise<{ stopped: boolean; pid?: number; foreground?: boolean; forced?: boolean; leftoversRemoved: number }> {
    await this.parse(Stop)
    let out: { stopped: boolean; pid?: number; foreground?: boolean; forced?: boolean }
    if (useSystemd()) {
      await systemctl('stop')
      this.log('Stopped (systemctl stop enclave)')
      out = { stopped: true }
    } else {
      const r = await stopDaemon(runDir())
      if (!r.pid) this.log('The agent was not running')
      else
        this.log(
          `Stopped the agent ${r.foreground ? 'running in the foreground ' : ''}(pid ${r.pid})${r.forced ? ' forcefully: it did not exit within 10 s' : ''}`,
        )
      out = { stopped: r.pid !== undefined, ...r }
    }
    const left = (await cleanupAfterCrash(this.configDirectory({}), runDir())) ?? 0
    if (left)
      this.log(`Removed ${left} fail-closed routes, policy rules and anti-spoofing rules left by an agent that did not stop cleanly`)
    return { ...out, leftoversRemoved: left }
  }
}
