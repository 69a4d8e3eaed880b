import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { loadProfile } from '../control/profile/profile.js'
import { offlineStatus } from '../control/status/offline.js'
import { formatStatus } from '../control/status/format.js'
import type { StatusModel } from '../control/status/model.js'
import { AgentNotRunning, callAgent } from '../control/api/client.js'

export default class Status extends BaseCommand {
  static override description = 'Show identity, virtual address, peers and exit-node routes (live when the agent runs)'
  static override examples = ['<%= config.bin %> status', '<%= config.bin %> status --json', '<%= config.bin %> status --offline']
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    offline: Flags.boolean({ description: 'show the profile only, without asking the running agent' }),
  }

  async run(): Promise<StatusModel> {
    const { flags } = await this.parse(Status)
    if (!flags.offline) {
      try {
        const live = await callAgent<StatusModel>({ op: 'status' })
        if (!this.jsonEnabled()) this.log(formatStatus(live))
        return live
      } catch (e) {
        if (!(e instanceof AgentNotRunning)) throw e
        const s = offlineStatus(loadProfile(this.profileFile(flags)))
        if (!this.jsonEnabled()) this.log(formatStatus(s))
        this.logToStderr(`${this.jsonEnabled() ? '' : '\n'}${e.message}`)
        process.exitCode = e.exitCode
        return s
      }
    }
    const s = offlineStatus(loadProfile(this.profileFile(flags)))
    if (!this.jsonEnabled()) this.log(formatStatus(s))
    return s
  }
}
