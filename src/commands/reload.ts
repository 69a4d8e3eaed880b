import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { callAgent } from '../api/client.js'
import type { ReloadReport } from '../api/apply.js'

export default class Reload extends BaseCommand {
  static override summary = 'Re-read the profile in the running agent; unchanged sessions stay up (SIGHUP does the same)'
  static override description =
    'Returns once every data-plane worker runs with the new profile, and says what did not take: an exit-node route that was not installed (exit 1, with the reason), a setting that needs a restart.'
  static override examples = ['$ sudo <%= config.bin %> reload', '$ sudo systemctl reload enclave   # the same, through systemd (SIGHUP)']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run() {
    const { flags } = await this.parse(Reload)
    // With --config-dir, the agent checks that it runs that profile (it refuses to reload another one).
    const r = await callAgent<ReloadReport>({ op: 'reload', ...(flags['config-dir'] ? { profile: this.profileFile(flags) } : {}) })
    this.log(`Profile ${r.profile} reloaded: ${r.added.length} peer(s) added, ${r.removed.length} removed, ${r.changed.length} changed`)
    for (const k of ['added', 'removed', 'changed'] as const) if (r[k].length) this.log(`  ${k}: ${r[k].join(', ')}`)
    return this.reportApplied(
      {},
      {
        applied: r.workersApplied,
        reason: r.workersApplied ? undefined : 'the data plane did not confirm the new tables in time',
        report: r,
      },
      undefined, // every route
    )
  }
}
