import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { type Check, formatChecks, runDoctor } from '../ops/doctor.js'

export default class Doctor extends BaseCommand {
  static override summary = 'Run the exit-node troubleshooting checklist on this machine, with a fix for each failure'
  static override examples = ['$ sudo <%= config.bin %> doctor', '$ sudo <%= config.bin %> doctor --probe 172.26.0.250 --json']
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    probe: Flags.string({ description: 'a LAN host the exit node should reach (ICMP echo)' }),
  }

  async run(): Promise<{ checks: Check[]; ok: boolean }> {
    const { flags } = await this.parse(Doctor)
    const checks = await runDoctor(this.configDirectory(flags), flags.probe)
    const ok = !checks.some((c) => c.result === 'fail')
    if (!this.jsonEnabled()) this.log(formatChecks(checks))
    if (!ok) process.exitCode = 1
    return { checks, ok }
  }
}
