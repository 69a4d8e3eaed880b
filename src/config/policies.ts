/**
 * The profile's `Policies` (who may start traffic to whom, on which ports, to which provided routes)
 * and every check on them. Keys follow the original product's policy model in the profile's
 * PascalCase: Description, IsEnabled, SenderTags, ReceiverTags, Acls[{Protocol, Ports, Description}];
 * gateway access uses GatewayRoutes (the original's gateways[].routes: this system is the gateway, so
 * no system id is needed) and GatewayAllowedIpRanges[{IpRange, Description}] (the original's
 * gatewayAllowedIpRanges, same shape).
 *
 * Every object schema here is a plain z.object().passthrough() (unknown keys survive a rewrite, and a
 * key checker can read .shape); checks across keys are in checkPolicies().
 *
 * Hook: schema.ts adds `Policies: policiesSchema.optional()`; profile.ts calls checkPolicies() after
 * ProvidesRoutes is parsed and keeps the result as `policies` (undefined = no Policies key =
 * compatibility mode, everything allowed).
 */
import { freeText } from './free-text.js'
import { z } from 'zod'
import { type Cidr, cidrContains, intToIp, parseCidr, parseIpv4 } from '../common/ipv4.js'

export const PROTOCOLS = ['Any', 'Tcp', 'Udp', 'Icmp'] as const
export type PolicyProtocol = (typeof PROTOCOLS)[number]
export const MAX_POLICIES = 4096

export const PORTS_FORM = 'a port "80" or a range "8000-8100" (1-65535)'
export const IP_RANGE_FORM = 'an IPv4 network a.b.c.d/len or one address a.b.c.d'

/** Same rule as the profile's Tags. */
export const tagSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_.:-]+$/, 'tags use letters, digits and _ . : -')

/** "80" or "8000-8100" -> [lo, hi]; otherwise the reason. */
export function parsePorts(s: unknown): [number, number] | string {
  if (typeof s !== 'string') return `must be a string: ${PORTS_FORM}`
  if (/\d\s*[,;]\s*\d|\d\s+\d/.test(s))
    return `"${s}": lists of ports are not supported; add one Acls entry per port or range (${PORTS_FORM})`
  const m = /^\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?$/.exec(s)
  if (!m) return `"${s}" is not ${PORTS_FORM}`
  const lo = Number(m[1])
  const hi = m[2] === undefined ? lo : Number(m[2])
  for (const p of [lo, hi]) {
    if (p === 0) return `"${s}": port 0 is not a port (${PORTS_FORM})`
    if (p > 65535) return `"${s}": port ${p} is above 65535`
  }
  if (hi < lo) return `"${s}": the range is reversed; did you mean "${hi}-${lo}"?`
  return [lo, hi]
}

/** A CIDR, or one address as /32. */
export function parseIpRange(s: unknown): Cidr | string {
  if (typeof s === 'string' && !s.includes('/')) {
    const a = parseIpv4(s)
    if (typeof a === 'string') return `"${s}" is not ${IP_RANGE_FORM}`
    return { addr: a, len: 32, text: `${intToIp(a)}/32` }
  }
  return parseCidr(s)
}

const protocol = z.string().superRefine((s, ctx) => {
  if ((PROTOCOLS as readonly string[]).includes(s)) return
  const near = PROTOCOLS.find((p) => p.toLowerCase() === s.toLowerCase())
  ctx.addIssue({
    code: 'custom',
    message: near ? `"${s}": write "${near}"` : `"${s}" is not a protocol; use ${PROTOCOLS.join(', ')}`,
  })
})

const ports = z.string().superRefine((s, ctx) => {
  const r = parsePorts(s)
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
})

const ipRange = z.string().superRefine((s, ctx) => {
  const r = parseIpRange(s)
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
})

const route = z.string().superRefine((s, ctx) => {
  const r = parseCidr(s)
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
})

const description = freeText(200)

export const aclSchema = z
  .object({
    Protocol: protocol,
    Ports: ports.optional(),
    Description: description.optional(),
  })
  .passthrough()

export const policySchema = z
  .object({
    Description: description.optional(),
    IsEnabled: z.boolean().optional(),
    SenderTags: z.array(tagSchema).min(1, 'must list at least one tag (an empty list matches no system)'),
    ReceiverTags: z.array(tagSchema).min(1, 'must list at least one tag (an empty list matches no system)'),
    Acls: z.array(aclSchema).min(1, 'must list at least one entry; { "Protocol": "Any" } allows every protocol and port'),
    GatewayRoutes: z.array(route).min(1, 'must not be empty; omit GatewayRoutes for a policy that grants this system only').optional(),
    GatewayAllowedIpRanges: z
      .array(z.object({ IpRange: ipRange, Description: description.optional() }).passthrough())
      .min(1, 'must not be empty; omit it to grant the whole gateway routes')
      .optional(),
  })
  .passthrough()

export const policiesSchema = z.array(policySchema).max(MAX_POLICIES)

export type RawPolicy = z.infer<typeof policySchema>

export interface AclConfig {
  protocol: PolicyProtocol
  /** Inclusive destination port range; 0-65535 when the entry has no Ports (and always for Any and Icmp). */
  portLo: number
  portHi: number
  description?: string
}

export interface PolicyConfig {
  index: number
  description?: string
  enabled: boolean
  senderTags: string[]
  receiverTags: string[]
  acls: AclConfig[]
  /** With neither gateway key the policy grants this system itself only; see gatewayRanges(). */
  gatewayRoutes?: Cidr[]
  gatewayAllowedIpRanges?: Cidr[]
  /** Whether ReceiverTags names one of this system's tags: only such policies are enforced here. */
  appliesHere: boolean
}

export interface PolicyProblem {
  path: string
  reason: string
}

/** The ranges a gateway policy grants: its allowed ranges if any, else its routes; undefined = this system only. */
export function gatewayRanges(p: PolicyConfig): Cidr[] | undefined {
  return p.gatewayAllowedIpRanges ?? p.gatewayRoutes
}

/**
 * Cross-field checks on schema-valid policies. Gateway keys are checked against ProvidesRoutes only
 * for policies that apply here (a receiver tag this system carries): a policy list shared by every
 * system names other receivers' routes too, and those are their profiles' business.
 */
export function checkPolicies(
  raw: RawPolicy[] | undefined,
  selfTags: string[],
  providesRoutes: Cidr[],
  problems: PolicyProblem[],
): PolicyConfig[] | undefined {
  if (raw === undefined) return undefined
  const mine = new Set(selfTags)
  const provided = providesRoutes.map((c) => c.text).join(', ')
  return raw.map((p, index) => {
    const where = `Policies[${index}]`
    const appliesHere = p.ReceiverTags.some((t) => mine.has(t))
    const gatewayRoutes = p.GatewayRoutes?.map((s) => parseCidr(s) as Cidr)
    const allowed = p.GatewayAllowedIpRanges?.map((r) => parseIpRange(r.IpRange) as Cidr)
    p.Acls.forEach((a, i) => {
      if (a.Ports !== undefined && a.Protocol !== 'Tcp' && a.Protocol !== 'Udp')
        problems.push({
          path: `${where}.Acls[${i}].Ports`,
          reason: `Ports apply only to Tcp and Udp; remove Ports from this ${a.Protocol} entry or set Protocol to Tcp or Udp`,
        })
    })
    if (appliesHere) {
      gatewayRoutes?.forEach((c, i) => {
        const path = `${where}.GatewayRoutes[${i}]`
        if (gatewayRoutes.findIndex((d) => d.text === c.text) < i) problems.push({ path, reason: `${c.text} is listed twice` })
        else if (!providesRoutes.some((d) => d.text === c.text)) {
          const inside = providesRoutes.find((d) => d.len <= c.len && cidrContains(d, c.addr))
          problems.push({
            path,
            reason: !providesRoutes.length
              ? `${c.text}: this system provides no routes (ExitNode.ProvidesRoutes is empty)`
              : inside
                ? `${c.text} is not among ExitNode.ProvidesRoutes (${provided}); name ${inside.text} here and put ${c.text} in GatewayAllowedIpRanges`
                : `${c.text} is not among ExitNode.ProvidesRoutes (${provided})`,
          })
        }
      })
      const within = gatewayRoutes ?? providesRoutes
      const withinName = gatewayRoutes ? `${where}.GatewayRoutes` : 'ExitNode.ProvidesRoutes'
      allowed?.forEach((c, i) => {
        if (!within.some((d) => d.len <= c.len && cidrContains(d, c.addr)))
          problems.push({
            path: `${where}.GatewayAllowedIpRanges[${i}].IpRange`,
            reason: within.length
              ? `${c.text} is outside ${withinName} (${within.map((d) => d.text).join(', ')})`
              : `${c.text}: this system provides no routes (ExitNode.ProvidesRoutes is empty)`,
          })
      })
    }
    return {
      index,
      description: p.Description,
      enabled: p.IsEnabled ?? true,
      senderTags: p.SenderTags,
      receiverTags: p.ReceiverTags,
      acls: p.Acls.map((a) => {
        const r = a.Ports === undefined ? [0, 65535] : (parsePorts(a.Ports) as [number, number])
        return { protocol: a.Protocol as PolicyProtocol, portLo: r[0], portHi: r[1], description: a.Description }
      }),
      gatewayRoutes,
      gatewayAllowedIpRanges: allowed,
      appliesHere,
    }
  })
}
