/**
 * The profile's shape (zod) and every rule that a single field can check by itself.
 * Rules that relate fields to each other (identities match keys, AvailableRoutes keys are
 * known peers, no duplicates) live in profile.ts. Keys are PascalCase, as in the original
 * product. Unknown keys pass through untouched so that a rewrite keeps them.
 */
import { freeText } from './free-text.js'
import { LOG_LEVELS_TEXT, parseLogLevel } from '../common/log-levels.js'
import { z } from 'zod'
import { decodeKey } from './keys.js'
import { parseCidr, parseIpv4 } from '../common/ipv4.js'
import { inOverlay, isIdentity } from './identity.js'
import { policiesSchema } from './policies.js'

export const DEFAULT_LOCAL_PORT = 51820
export const DEFAULT_INTERFACE = 'enclave0'
export const DEFAULT_MTU = 1420

/** A secret key (PrivateKey, PresharedKey): the reason never quotes the value. */
const key = z.string().superRefine((s, ctx) => {
  const r = decodeKey(s)
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
})

/** Why `s` is not a public key, quoting it (public keys are not secret), with what to do for an identity. */
export function publicKeyProblem(s: string): string | undefined {
  const r = decodeKey(s)
  if (typeof r !== 'string') return undefined
  const hint = isIdentity(s.toUpperCase())
    ? `; "${s}" looks like an identity: peers are added by their public key (run \`enclave pubkey\` on that machine)`
    : ''
  return `"${s}" ${r}${hint}`
}

const publicKey = z.string().superRefine((s, ctx) => {
  const why = publicKeyProblem(s)
  if (why) ctx.addIssue({ code: 'custom', message: why })
})

const overlayAddress = z.string().superRefine((s, ctx) => {
  const r = parseIpv4(s)
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
  else if (!inOverlay(r)) ctx.addIssue({ code: 'custom', message: `"${s}" is outside the overlay network 100.64.0.0/10` })
  else if (r === 0x64400000 || r === 0x647fffff)
    ctx.addIssue({ code: 'custom', message: `"${s}" is the overlay's network or broadcast address` })
})

const cidr = z.string().superRefine((s, ctx) => {
  const r = parseCidr(s)
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
})

export const ENDPOINT_FORM = 'host:port, e.g. 203.0.113.7:51820 or vpn.example.com:51820'

/** Why `s` is not a usable peer endpoint, or undefined when it is one. */
export function endpointProblem(s: string): string | undefined {
  const m = /^(\[[^\]]+\]|[^:\s]+):(\d{1,5})$/.exec(s)
  if (!m) return `"${s}" is not ${ENDPOINT_FORM}`
  if (Number(m[2]) < 1 || Number(m[2]) > 65535) return `"${s}": port ${Number(m[2])} is out of range (1-65535)`
  if (m[1].startsWith('[')) return `"${s}": IPv6 endpoints are not supported yet; use an IPv4 address or a host name`
  return undefined
}

const endpoint = z.string().superRefine((s, ctx) => {
  const why = endpointProblem(s)
  if (why) ctx.addIssue({ code: 'custom', message: why })
})

/** Why `s` is not an IPv4 address:port to listen on (MetricsListen), or undefined. */
export function listenProblem(s: string): string | undefined {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(s)
  if (!m) return `"${s}" is not an IPv4 address and port, e.g. 127.0.0.1:9586`
  const ip = parseIpv4(m[1])
  if (typeof ip === 'string') return `"${s}": ${ip}`
  if (Number(m[2]) < 1 || Number(m[2]) > 65535) return `"${s}": port ${Number(m[2])} is out of range (1-65535)`
  return undefined
}

const identity = z.string().superRefine((s, ctx) => {
  if (!isIdentity(s))
    ctx.addIssue({ code: 'custom', message: `"${s}" is not an identity (5 characters of 0-9 and A-Z without I, L, O, U)` })
})

const tags = z.array(
  z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_.:-]+$/, 'tags use letters, digits and _ . : -'),
)

export const peerSchema = z
  .object({
    PublicKey: publicKey,
    Identity: identity.optional(),
    VirtualAddress: overlayAddress.optional(),
    Endpoint: endpoint.optional(),
    PersistentKeepalive: z.number().int().min(0).max(65535).optional(),
    PresharedKey: key.optional(),
    Description: freeText(200).optional(),
    Tags: tags.optional(),
  })
  .passthrough()

export const exitNodeSchema = z
  .object({
    ProvidesRoutes: z.array(cidr).optional(),
    AvailableRoutes: z.record(z.string(), z.array(cidr)).optional(),
    /** The agent enables ip_forward and manages its own SNAT rules (off by default: the guide's manual setup). */
    ManageNat: z.boolean().optional(),
    /** LAN-side source address for managed SNAT; default: the address of the interface that reaches each route. */
    SnatAddress: z
      .string()
      .superRefine((s, ctx) => {
        const r = parseIpv4(s)
        if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r })
      })
      .optional(),
    /** Install AvailableRoutes even where they overlap a connected subnet or an existing route. */
    ForceRoutes: z.boolean().optional(),
    /** With 0.0.0.0/0 through an exit node, let IPv6 use the local network (blocked by default: it would leave in clear). */
    AllowIpv6: z.boolean().optional(),
  })
  .passthrough()

/** The hub this system is enrolled with (written by `enclave enrol` after a successful enrolment). */
export const hubSchema = z
  .object({
    Urls: z
      .array(
        z.string().superRefine((s, ctx) => {
          if (!/^(https?|wss?):\/\/[^\s/]+(\/.*)?$/.test(s))
            ctx.addIssue({ code: 'custom', message: `"${s}" is not a hub URL such as http://192.0.2.10:8443` })
        }),
      )
      .min(1, 'must list at least one hub URL'),
    PublicKey: key,
    /** Local consent: the hub may make this system an exit node (ProvidesRoutes). */
    AllowGateway: z.boolean().optional(),
    /** Local consent: the hub may route 0.0.0.0/0 through an exit node. */
    AcceptDefaultRoute: z.boolean().optional(),
    /** Endpoints ("host:port") peers should use for this system, besides the address the hub sees. */
    AdvertiseEndpoints: z.array(endpoint).max(16).optional(),
  })
  .passthrough()

export const profileSchema = z
  .object({
    PrivateKey: key,
    VirtualAddress: overlayAddress.optional(),
    LocalPort: z.number().int().min(0).max(65535).optional(),
    Interface: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'an interface name is 1-15 characters of letters, digits, _ . -')
      .optional(),
    Mtu: z.number().int().min(576).max(9000).optional(),
    Peers: z.array(peerSchema).optional(),
    Tags: tags.optional(),
    ExitNode: exitNodeSchema.optional(),
    LogLevel: z
      .union([z.number(), z.string()])
      .superRefine((v, ctx) => {
        if (parseLogLevel(v) === undefined) ctx.addIssue({ code: 'custom', message: `must be 0-5 or a level name: ${LOG_LEVELS_TEXT}` })
      })
      .optional(),
    /** Unix group allowed to use the control socket besides root. */
    ControlGroup: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]*\$?$/, 'a Unix group name')
      .optional(),
    Workers: z.number().int().min(1).max(64).optional(),
    /** Opt-in Prometheus endpoint, e.g. "127.0.0.1:9586". */
    MetricsListen: z
      .string()
      .superRefine((s, ctx) => {
        const why = listenProblem(s)
        if (why) ctx.addIssue({ code: 'custom', message: why })
      })
      .optional(),
    Policies: policiesSchema.optional(),
    Hub: hubSchema.optional(),
  })
  .passthrough()

export type RawProfile = z.infer<typeof profileSchema>
export type RawPeer = z.infer<typeof peerSchema>

/** Turns zod's wording into ours: "must be a number (got string)". */
export const errorMap: z.ZodErrorMap = (issue, ctx) => {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.received === 'undefined') return { message: `is required (${issue.expected})` }
      return { message: `must be ${article(issue.expected)} (got ${issue.received})` }
    case 'too_small':
      return { message: issue.type === 'string' ? 'must not be empty' : `must be at least ${issue.minimum}` }
    case 'too_big':
      return { message: issue.type === 'string' ? `must be at most ${issue.maximum} characters` : `must be at most ${issue.maximum}` }
    default:
      return { message: ctx.defaultError }
  }
}

function article(t: string): string {
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`
}

/** ["ExitNode","AvailableRoutes","G982V",1] -> ExitNode.AvailableRoutes.G982V[1] */
export function formatPath(path: ReadonlyArray<string | number>): string {
  let out = ''
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`
    else out += out ? `.${p}` : p
  }
  return out
}
