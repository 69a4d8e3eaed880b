import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { runDir } from '../config/profile.js'
import { startDaemon, systemctl, useSystemd } from '../ops/service.js'

export default class Start extends BaseCommand {
  static override summary = 'Start the agent as a service (systemd unit if installed, else a daemon with a pid file)'
  static override examples = ['$ sudo <%= config.bin %> start', '$ sudo <%= config.bin %> start -v 2 --config-dir /srv/site-a']
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    verbosity: Flags.integer({ char: 'v', description: 'log level for a daemon started without systemd', min: 0, max: 5, default: 1 }),
  }

  async run(): Promise<{ started: boolean; pid?: number; log?: string; systemd: boolean }> {
    const { flags } = await this.parse(Start)
    if (useSystemd()) {
      await systemctl('start')
      this.log('Started (systemctl start enclave)')
      return { started: true, systemd: true }
    }
    const r = await startDaemon({ configDir: this.configDirectory(flags), runDir: runDir(), verbosity: flags.verbosity })
    this.log(`Started the agent (pid ${r.pid}); log: ${r.log}`)
    return { started: true, pid: r.pid, log: r.log, systemd: false }
  }
}
