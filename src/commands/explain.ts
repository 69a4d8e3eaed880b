import { Args } from '@oclif/core'
import { BaseCommand, runDirFlag } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { callAgent } from '../control/api/client.js'
import type { StatusModel } from '../control/status/model.js'
import { type Cidr, cidrContains, parseCidr, parseIpv4 } from '../control/profile/cidr.js'
import { field } from '../control/status/format.js'
import { run } from '../platform/linux/exec.js'

interface Candidate {
  identity: string
  description?: string
  state: string
  endpoint?: string
  route: string
  active: boolean
  installed: boolean
  reason?: string
}

export interface Explanation {
  destination: string
  osRoute: string
  entersOverlay: boolean
  overlayRoute?: string
  carriedBy?: Candidate
  standby: Candidate[]
  verdict: string
}

export default class Explain extends BaseCommand {
  static override summary = 'Explain where traffic to an address goes: OS route, overlay route, which exit node carries it and why'
  static override examples = ['$ <%= config.bin %> explain 172.26.0.250', '$ <%= config.bin %> explain 8.8.8.8 --json']
  static override enableJsonFlag = true
  static override args = { address: Args.string({ description: 'an IPv4 address', required: true }) }
  static override flags = { ...runDirFlag }

  async run(): Promise<Explanation> {
    const { args } = await this.parse(Explain)
    const ip = parseIpv4(args.address)
    if (typeof ip === 'string') throw new EnclaveError('EUSAGE', `<address>: ${ip}`, 2)
    const s = await callAgent<StatusModel>({ op: 'status' })
    const os = await run('ip', ['route', 'get', args.address])
    const osRoute = (os.stdout.split('\n')[0] ?? '').trim() || os.stderr.trim()
    const entersOverlay = new RegExp(`\\bdev ${s.interface}\\b`).test(osRoute)
    // Longest overlay prefix: a peer's own virtual address, then exit-node routes.
    const all: Array<Candidate & { cidr: Cidr }> = []
    for (const p of s.peers) {
      const base = { identity: p.identity, description: p.description, state: p.state, endpoint: p.endpoint }
      all.push({
        ...base,
        route: `${p.virtualAddress}/32`,
        active: true,
        installed: true,
        cidr: parseCidr(`${p.virtualAddress}/32`) as Cidr,
      })
      for (const r of p.exitNodeFor)
        all.push({ ...base, route: r.route, active: r.active, installed: r.installed, reason: r.reason, cidr: parseCidr(r.route) as Cidr })
    }
    const matching = all.filter((c) => cidrContains(c.cidr, ip)).sort((a, b) => b.cidr.len - a.cidr.len)
    const best = matching.filter((c) => c.cidr.len === matching[0]?.cidr.len)
    const strip = ({ cidr: _c, ...rest }: Candidate & { cidr: Cidr }): Candidate => rest
    const carried = best.find((c) => c.active)
    const out: Explanation = {
      destination: args.address,
      osRoute,
      entersOverlay,
      overlayRoute: best[0]?.route,
      carriedBy: carried ? strip(carried) : undefined,
      standby: best.filter((c) => c !== carried).map(strip),
      verdict: '',
    }
    if (!best.length)
      out.verdict = entersOverlay
        ? 'the OS sends it into the overlay, but no peer routes it: it is dropped (no_route)'
        : 'not an overlay destination: it leaves through your normal network'
    else if (!entersOverlay)
      out.verdict = `not sent into the overlay: ${best[0].reason ?? 'the OS routes it elsewhere (a more specific local route wins)'}`
    else if (carried && carried.state !== 'Up')
      out.verdict = `goes to ${carried.identity}, whose session is ${carried.state}: packets wait for the handshake`
    else if (carried)
      out.verdict = `goes through ${carried.identity}${carried.description ? ` (${carried.description})` : ''} over the encrypted overlay`
    else out.verdict = 'no exit node for this route is available'
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
