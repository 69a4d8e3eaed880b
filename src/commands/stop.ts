import { BaseCommand, runDirFlag } from '../base-command.js'
import { runDir } from '../config/profile.js'
import { stopDaemon, systemctl, useSystemd } from '../ops/service.js'
import { cleanupAfterCrash } from '../ops/crash-leftovers.js'

export default class Stop extends BaseCommand {
  static override summary = 'Stop the agent service; it removes every route and rule it added'
  static override examples = ['$ sudo <%= config.bin %> stop']
  static override enableJsonFlag = true
  static override flags = { ...runDirFlag }

  async run(): Promise<{ stopped: boolean; pid?: number; foreground?: number; forced?: boolean; leftoversRemoved: number }> {
    await this.parse(Stop)
    let out: { stopped: boolean; pid?: number; foreground?: number; forced?: boolean }
    if (useSystemd()) {
      await systemctl('stop')
      this.log('Stopped (systemctl stop enclave)')
      out = { stopped: true }
    } else {
      const r = await stopDaemon(runDir())
      if (r.foreground !== undefined) {
        this.log(
          `The agent runs in the foreground (pid ${r.foreground}, \`enclave run\`), not as a service: stop it with Ctrl-C where it runs, or \`sudo kill ${r.foreground}\``,
        )
        process.exitCode = 1
      } else if (!r.pid) this.log('The agent was not running')
      else this.log(`Stopped the agent (pid ${r.pid})${r.forced ? ' forcefully: it did not exit within 10 s' : ''}`)
      out = { stopped: r.pid !== undefined, ...r }
    }
    const left = (await cleanupAfterCrash(this.configDirectory({}), runDir())) ?? 0
    if (left)
      this.log(`Removed ${left} fail-closed routes, policy rules and anti-spoofing rules left by an agent that did not stop cleanly`)
    return { ...out, leftoversRemoved: left }
  }
}
