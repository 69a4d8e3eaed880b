import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { loadProfile } from '../config/profile.js'
import { offlineStatus } from '../views/status-offline.js'
import { formatProfileWarnings, formatStatus } from '../views/status-format.js'
import type { StatusModel } from '../views/status-model.js'
import { AgentNotRunning, callAgent } from '../api/client.js'

export default class Status extends BaseCommand {
  static override summary = 'Show identity, virtual address, peers and exit-node routes (live when the agent runs)'
  static override description =
    'Without a running agent it shows the profile and exits 3, so that scripts can tell; --offline shows the profile and exits 0.'
  static override examples = [
    '$ <%= config.bin %> status',
    '$ <%= config.bin %> status --json',
    '$ <%= config.bin %> status --offline',
    '$ <%= config.bin %> status --watch 2',
  ]
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    offline: Flags.boolean({ description: 'show the profile only, without asking the running agent' }),
    watch: Flags.integer({ description: 'refresh every N seconds until Ctrl-C (with --json: one JSON object per line)', min: 1 }),
  }

  async run(): Promise<StatusModel | undefined> {
    const { flags } = await this.parse(Status)
    if (flags.watch === undefined) return this.once(flags)
    for (;;) {
      if (!this.jsonEnabled() && process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[2J')
      const s = await this.once(flags, true)
      if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify(s)}\n`)
      await new Promise((r) => setTimeout(r, flags.watch! * 1000))
    }
  }

  private async once(flags: { offline: boolean; 'config-dir'?: string }, watching = false): Promise<StatusModel> {
    const print = (s: StatusModel) => {
      if (!this.jsonEnabled()) this.log(formatStatus(s))
      return s
    }
    let unknown: string[] = []
    const profile = () => {
      const p = loadProfile(this.profileFile(flags))
      unknown = p.unknownKeys
      return p
    }
    const warn = () => {
      for (const w of formatProfileWarnings(unknown)) this.logToStderr(w)
    }
    if (!flags.offline) {
      try {
        const live = print(await callAgent<StatusModel>({ op: 'status' }))
        if (!watching) {
          try {
            profile()
          } catch {
            /* the live view stands; the profile may be unreadable without root */
          }
          warn()
        }
        return live
      } catch (e) {
        if (!(e instanceof AgentNotRunning)) throw e
        const s = print(offlineStatus(profile()))
        if (!watching) {
          warn()
          this.logToStderr(`${this.jsonEnabled() ? '' : '\n'}${e.message}`)
          process.exitCode = e.exitCode
        }
        return s
      }
    }
    const s = print(offlineStatus(profile()))
    if (!watching) warn()
    return s
  }
}
