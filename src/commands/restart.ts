import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { runDir } from '../config/profile.js'
import { startDaemon, stopDaemon, systemctl, useSystemd } from '../ops/service.js'

export default class Restart extends BaseCommand {
  static override summary = 'Restart the agent service (for changes `enclave reload` cannot apply)'
  static override examples = ['$ sudo <%= config.bin %> restart']
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    verbosity: Flags.integer({ char: 'v', description: 'log level for a daemon started without systemd', min: 0, max: 5, default: 1 }),
  }

  async run(): Promise<{ restarted: boolean; pid?: number; log?: string; systemd: boolean }> {
    const { flags } = await this.parse(Restart)
    if (useSystemd()) {
      await systemctl('restart')
      this.log('Restarted (systemctl restart enclave)')
      return { restarted: true, systemd: true }
    }
    await stopDaemon(runDir())
    const r = await startDaemon({ configDir: this.configDirectory(flags), runDir: runDir(), verbosity: flags.verbosity })
    this.log(`Restarted the agent (pid ${r.pid}); log: ${r.log}`)
    return { restarted: true, pid: r.pid, log: r.log, systemd: false }
  }
}
