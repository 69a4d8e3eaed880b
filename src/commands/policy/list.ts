import { BaseCommand, configDirFlag, runDirFlag } from '../../base-command.js'
import { AgentNotRunning, callAgent } from '../../api/client.js'
import { loadProfile } from '../../config/profile.js'
import { peersNoPolicyNames } from '../../config/edit.js'
import { offlineStatus } from '../../views/status-offline.js'
import type { PolicySection, StatusModel } from '../../views/status-model.js'

export default class PolicyList extends BaseCommand {
  static override summary = 'List the Policies: who may start traffic to whom, with their counters'
  static override description =
    'One line per policy (senders -> receivers: protocols and ports; destinations), whether this system enforces it, and its hits and drops since the agent started. Without a running agent, the profile alone (no counters).'
  static override examples = ['$ <%= config.bin %> policy list', '$ <%= config.bin %> policy list --json']
  static override enableJsonFlag = true
  static override flags = { ...configDirFlag, ...runDirFlag }

  async run(): Promise<{ policy: PolicySection | undefined; running: boolean; untaggedPeers: string[] }> {
    const { flags } = await this.parse(PolicyList)
    const profile = loadProfile(this.profileFile(flags))
    let s: StatusModel
    let running = true
    try {
      s = await callAgent<StatusModel>({ op: 'status' })
    } catch (e) {
      if (!(e instanceof AgentNotRunning)) throw e
      s = offlineStatus(profile)
      running = false
    }
    const pol = s.policy
    const untagged = peersNoPolicyNames(profile).map((p) => p.identity)
    if (!pol || pol.mode === 'none') this.log('No Policies: every configured peer may reach this system and the routes it provides.')
    else {
      this.log(`${pol.summary}; this system's tags: ${pol.tags.join(', ') || '(none)'}`)
      for (const p of pol.policies) {
        const where = p.enforcedHere ? 'enforced here' : 'enforced by the receivers'
        const counts = running ? `, ${p.hits} allowed, ${p.drops} dropped` : ''
        this.log(`  ${p.label}${p.enabled ? '' : ' (disabled)'}: ${p.rule} (${where}${counts})`)
      }
      if (running) this.log(`  no policy allows: ${pol.droppedNoPolicy} new flows dropped`)
      if (untagged.length) this.log(`Peers that carry no tag any policy names (all their traffic is dropped): ${untagged.join(', ')}`)
    }
    return { policy: pol, running, untaggedPeers: untagged }
  }
}
