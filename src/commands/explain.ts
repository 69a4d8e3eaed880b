import { Args, Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { callAgent } from '../api/client.js'
import type { StatusModel } from '../views/status-model.js'
import { parseIpv4 } from '../common/ipv4.js'
import { field } from '../views/status-format.js'
import { type Candidate, type Explanation, explain, osRouteTo, overallVerdict } from '../ops/explain.js'
import { loadProfile } from '../config/profile.js'
import { EXPLAIN_PROTOCOLS, type ExplainProtocol, type PolicyExplanation, explainPolicy } from '../ops/explain-policy.js'

export default class Explain extends BaseCommand {
  static override summary = 'Explain where traffic to an address goes: OS route, overlay route, which exit node carries it and why'
  static override examples = [
    '$ <%= config.bin %> explain 172.26.0.250',
    '$ <%= config.bin %> explain 8.8.8.8 --json',
    '$ <%= config.bin %> explain 172.26.0.250 --proto tcp --port 9100',
    '$ <%= config.bin %> explain 100.64.1.2 --from 8VS5P --proto tcp --port 22',
  ]
  static override enableJsonFlag = true
  static override args = { address: Args.string({ description: 'an IPv4 address', required: true }) }
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    from: Flags.string({ description: 'judge traffic this peer (identity or description) would start to the address here' }),
    proto: Flags.string({
      description: 'protocol of the flow policies judge (default: tcp with --port, else icmp)',
      options: Object.keys(EXPLAIN_PROTOCOLS),
    }),
    port: Flags.integer({ description: 'destination port (Tcp, Udp)', min: 1, max: 65535 }),
  }

  async run(): Promise<Explanation & { routeVerdict: string; policy?: PolicyExplanation }> {
    const { args, flags } = await this.parse(Explain)
    const ip = parseIpv4(args.address)
    if (typeof ip === 'string') throw new EnclaveError('EUSAGE', `<address>: ${ip}`, 2)
    const s = await callAgent<StatusModel>({ op: 'status' })
    const route = explain(args.address, ip, s, await osRouteTo(args.address))
    const proto = (flags.proto ?? (flags.port ? 'tcp' : 'icmp')) as ExplainProtocol
    if (flags.port && proto !== 'tcp' && proto !== 'udp') throw new EnclaveError('EUSAGE', '--port needs --proto tcp or udp', 2)
    // Policies are read from the profile on disk (what the agent runs after its last start or reload).
    let profile: ReturnType<typeof loadProfile> | undefined
    let unreadable = ''
    try {
      profile = loadProfile(this.profileFile(flags))
    } catch (e) {
      unreadable = (e as Error).message.split('\n')[0]
    }
    if (profile && flags.from && !profile.peers.some((p) => p.identity === flags.from || p.description === flags.from))
      throw new EnclaveError('EUSAGE', `--from ${flags.from}: no peer with that identity or description in ${profile.file}`, 2)
    const carrier = route.carriedBy?.identity ?? route.standby[0]?.identity
    const policy = profile && explainPolicy(profile, ip, proto, flags.port ?? 0, carrier, flags.from)
    const out = { ...route, routeVerdict: route.verdict, verdict: overallVerdict(route, policy?.sends), policy }
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
      lines.push(...policyLines(out.policy, unreadable, flags.from !== undefined))
      this.log(lines.join('\n'))
    }
    return out
  }
}

function policyLines(pol: PolicyExplanation | undefined, unreadable: string, from: boolean): string[] {
  if (!pol) return field('', 'Policy', `cannot read the profile to judge policies: ${unreadable}`)
  const lines = field('', 'Policy flow', `${pol.flow}${pol.mode === 'none' ? ' (no Policies: all peers allowed)' : ''}`)
  if (pol.sends) lines.push(...field('', 'Sent from here', `judged by ${pol.sends.receiver}: ${pol.sends.verdict}`))
  if (pol.receives.length)
    lines.push(
      ...field(
        '',
        'Received here',
        pol.receives.map((r) => `from ${r.from}: ${r.verdict}`),
      ),
    )
  else if (from) lines.push(...field('', 'Received here', 'not this system nor a route it provides: the system that has it judges'))
  return lines
}
