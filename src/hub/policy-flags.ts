import { Flags } from '@oclif/core'
import { normaliseIdentity } from '../config/identity.js'
import { parseAcl, parseRoute, parseTags, usage } from './admin.js'
import type { PolicyBody } from './model.js'

export const policyFlags = {
  senders: Flags.string({ description: 'tags of the systems that may start traffic, comma-separated' }),
  receivers: Flags.string({ description: 'tags of the systems it may reach, comma-separated' }),
  gateway: Flags.string({ description: 'an exit node and route instead of receivers: G982V:172.26.0.0/20 (comma-separated for several)' }),
  acl: Flags.string({ description: 'icmp, any, tcp:22, udp:53, tcp:8000-8100 (repeat the flag for several)', multiple: true }),
  'allow-ip': Flags.string({ description: 'with --gateway: only these addresses or ranges of the route (comma-separated)' }),
  disabled: Flags.boolean({ description: 'create it disabled' }),
  'dry-run': Flags.boolean({ description: 'only print the sender -> receiver pairs it would open or close' }),
}

/** The policy's body from the flags (profile Policies shape, with the gateway named by identity). */
export function policyBody(f: { senders?: string; receivers?: string; gateway?: string; acl?: string[]; 'allow-ip'?: string }): PolicyBody {
  const SenderTags = parseTags(f.senders)
  if (!SenderTags.length) throw usage('--senders: name at least one tag')
  const Acls = (f.acl ?? []).map(parseAcl)
  if (!Acls.length) throw usage('--acl: give at least one, e.g. --acl icmp --acl tcp:22')
  if (f.gateway && f.receivers) throw usage('--receivers and --gateway exclude each other')
  if (f.gateway) {
    const parts = f.gateway.split(',').map((g) => {
      const m = /^([^:]+):(.+)$/.exec(g.trim())
      if (!m) throw usage(`--gateway "${g}": use <identity>:<cidr>, e.g. G982V:172.26.0.0/20`)
      return { id: normaliseIdentity(m[1]), route: parseRoute(m[2]) }
    })
    const ids = new Set(parts.map((p) => p.id))
    if (ids.size > 1) throw usage('--gateway: one exit node per policy (create one policy per exit node)')
    const allowed = f['allow-ip']
      ? f['allow-ip'].split(',').map((r) => ({ IpRange: r.includes('/') ? parseRoute(r) : parseRoute(`${r}/32`) }))
      : undefined
    return {
      SenderTags,
      Gateway: { Identity: parts[0].id, Routes: parts.map((p) => p.route) },
      Acls,
      ...(allowed ? { GatewayAllowedIpRanges: allowed } : {}),
    }
  }
  const ReceiverTags = parseTags(f.receivers)
  if (!ReceiverTags.length) throw usage('give --receivers <tags> or --gateway <identity>:<cidr>')
  return { SenderTags, ReceiverTags, Acls }
}

export function describePolicy(p: { description: string; enabled: boolean; body: PolicyBody }): string {
  const b = p.body
  const to = b.Gateway ? `${b.Gateway.Identity}:${b.Gateway.Routes.join(',')}` : (b.ReceiverTags ?? []).join(',')
  const acl = b.Acls.map((a) => (a.Ports ? `${a.Protocol.toLowerCase()}:${a.Ports}` : a.Protocol.toLowerCase())).join(' ')
  return `${p.description}: ${b.SenderTags.join(',')} -> ${to}  ${acl}${p.enabled ? '' : '  (disabled)'}`
}
