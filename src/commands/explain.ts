import { Args } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { callAgent } from '../control/api/client.js'
import type { StatusModel } from '../control/status/model.js'
import { parseIpv4 } from '../common/ipv4.js'
import { field } from '../control/status/format.js'
import { type Candidate, type Explanation, explain, osRouteTo } from '../control/explain.js'

export default class Explain extends BaseCommand {
  static override description = 'Explain where traffic to an address goes: OS route, overlay route, which exit node carries it and why'
  static override examples = ['<%= config.bin %> explain 172.26.0.250', '<%= config.bin %> explain 8.8.8.8 --json']
  static override enableJsonFlag = true
  static override args = { address: Args.string({ description: 'an IPv4 address', required: true }) }

  async run(): Promise<Explanation> {
    const { args } = await this.parse(Explain)
    const ip = parseIpv4(args.address)
    if (typeof ip === 'string') throw new EnclaveError('EINVAL', ip)
    const s = await callAgent<StatusModel>({ op: 'status' })
    const out = explain(args.address, ip, s, await osRouteTo(args.address))
    if (!this.jsonEnabled()) {
      const lines = [
        ...field('', 'Destination', out.destination),
        ...field('', 'OS route', out.osRoute),
        ...field('', 'Overlay route', out.overlayRoute ?? '(none)'),
      ]
      const who = (c: Candidate) =>
        `${c.identity}${c.description ? ` (${c.description})` : ''}: ${c.state}${c.endpoint ? `, endpoint ${c.endpoint}` : ''}${c.installed ? '' : `, not installed: ${c.reason}`}`
      if (out.carriedBy) lines.push(...field('', 'Carried by', who(out.carriedBy)))
      if (out.standby.length) lines.push(...field('', 'Standby', out.standby.map(who)))
      lines.push(...field('', 'Verdict', out.verdict))
      this.log(lines.join('\n'))
    }
    return out
  }
}
