/**
 * Policy compiler: (this system's tags, address and provided routes, peers by slot with their tags,
 * the profile's policies) -> the integer tables of src/dataplane/policy.ts, plus labels for logs and
 * status. Pure: no I/O, deterministic, run at start and at every reload; the worker swaps the
 * result whole.
 *
 * Semantics (the reference's §A.9/§A.11): a new flow from peer P to destination D is allowed iff
 * some enabled policy has a sender tag P carries, a receiver tag this system carries, an ACL entry
 * matching protocol and destination port, and D is this system (policy without gateway keys) or lies
 * inside one of the policy's granted ranges (GatewayAllowedIpRanges, else GatewayRoutes). No
 * Policies key = compatibility mode: everything allowed. Policies present = everything else dropped.
 */
import { type Cidr, cidrContains, cidrsOverlap, intToIp } from '../common/ipv4.js'
import { type PolicyConfig, gatewayRanges } from '../config/policies.js'
import { buildRouteTable, type RouteEntry } from '../dataplane/route-table.js'
import type { PolicyTables } from '../ipc/messages.js'
import {
  ACL_ANY,
  DST_ROUTE,
  DST_SELF,
  POLICY_MODE_ENFORCE,
  type PolicyTable,
  compatPolicyTable,
  describeVerdict,
  evaluatePolicy,
} from '../dataplane/policy.js'

const IP_PROTO = { Any: ACL_ANY, Icmp: 1, Tcp: 6, Udp: 17 } as const

export interface PolicyPeer {
  /** The peer's slot in the data plane (the index the firewall passes to evaluatePolicy). */
  slot: number
  tags: readonly string[]
}

export interface PolicyInput {
  selfTags: readonly string[]
  /** This system's virtual address (host-order uint32). */
  selfAddress: number
  providesRoutes: readonly Cidr[]
  /**
   * This system's other addresses (its LAN addresses, host order). Those inside ProvidesRoutes are judged
   * as this system (policies without GatewayRoutes), never as gateway destinations.
   */
  localAddresses?: readonly number[]
  peers: readonly PolicyPeer[]
  /** undefined = no Policies key (compatibility mode). */
  policies: readonly PolicyConfig[] | undefined
}

export interface PolicyInfo {
  index: number
  /** `Policies[2] "laptops to printer"`: how logs and status name the policy. */
  label: string
  /** `laptops -> exit-node: Tcp 9100, Icmp; to 172.26.0.250/32`. */
  rule: string
  enabled: boolean
  /** Enabled and naming a receiver tag this system carries: enforced here. */
  active: boolean
  /** Peer slots this policy lets start flows here (empty when inactive). */
  senders: number[]
}

export interface CompiledPolicies {
  mode: 'compat' | 'enforce'
  table: PolicyTable
  /** labels[i] = policies[i].label; sent to workers with the table for -v 5 drop logs. */
  labels: string[]
  policies: PolicyInfo[]
}

export function compilePolicies(input: PolicyInput): CompiledPolicies {
  if (input.policies === undefined) return { mode: 'compat', table: compatPolicyTable(), labels: [], policies: [] }
  const pols = input.policies
  const n = pols.length
  const W = Math.max(1, Math.ceil(n / 32))
  const mine = new Set(input.selfTags)
  const active = pols.map((p) => p.enabled && p.receiverTags.some((t) => mine.has(t)))

  const slots = input.peers.reduce((m, p) => Math.max(m, p.slot + 1), 0)
  const peerMask = new Int32Array(slots * W)
  const senders: number[][] = pols.map(() => [])
  for (const peer of input.peers) {
    const tags = new Set(peer.tags)
    pols.forEach((p, i) => {
      if (!active[i] || !p.senderTags.some((t) => tags.has(t))) return
      peerMask[peer.slot * W + (i >> 5)] |= 1 << (i & 31)
      senders[i].push(peer.slot)
    })
  }

  // Destination classes: every distinct prefix; a class's policies are those granting any prefix that
  // contains it. CIDRs nest or are disjoint, so the trie's longest match decides the class exactly.
  const selfCidr: Cidr = { addr: input.selfAddress >>> 0, len: 32, text: `${intToIp(input.selfAddress)}/32` }
  const selfClasses = new Map<string, Cidr>([[selfCidr.text, selfCidr]])
  for (const a of input.localAddresses ?? []) {
    const c: Cidr = { addr: a >>> 0, len: 32, text: `${intToIp(a)}/32` }
    if (input.providesRoutes.some((r) => contains(r, c))) selfClasses.set(c.text, c)
  }
  const prefixes = new Map<string, Cidr>()
  for (const c of [...input.providesRoutes, ...pols.flatMap((p, i) => (active[i] ? (gatewayRanges(p) ?? []) : []))])
    if (!selfClasses.has(c.text) && input.providesRoutes.some((r) => contains(r, c))) prefixes.set(c.text, c)
  const nSelf = selfClasses.size
  const classes = [...selfClasses.values(), ...prefixes.values()]
  const dstMask = new Int32Array(classes.length * W)
  const dstKind = new Int32Array(classes.length)
  const entries: RouteEntry[] = []
  classes.forEach((c, k) => {
    dstKind[k] = k < nSelf ? DST_SELF : DST_ROUTE
    entries.push({ addr: c.addr, len: c.len, value: k })
    pols.forEach((p, i) => {
      if (!active[i]) return
      const ranges = gatewayRanges(p)
      const grants = k < nSelf ? ranges === undefined : ranges?.some((r) => contains(r, c))
      if (grants) dstMask[k * W + (i >> 5)] |= 1 << (i & 31)
    })
  })
  const trie = buildRouteTable(entries)

  const aclStart = new Int32Array(n + 1)
  const acls = pols.flatMap((p) => p.acls)
  const aclProto = new Int32Array(acls.length)
  const aclLo = new Int32Array(acls.length)
  const aclHi = new Int32Array(acls.length)
  let a = 0
  pols.forEach((p, i) => {
    aclStart[i] = a
    for (const acl of p.acls) {
      aclProto[a] = IP_PROTO[acl.protocol]
      aclLo[a] = acl.portLo
      aclHi[a] = acl.portHi
      a++
    }
  })
  aclStart[n] = a

  const infos = pols.map((p, i) => ({
    index: i,
    label: policyLabel(p),
    rule: policyRule(p),
    enabled: p.enabled,
    active: active[i],
    senders: senders[i],
  }))
  return {
    mode: 'enforce',
    table: {
      mode: POLICY_MODE_ENFORCE,
      words: W,
      slots,
      policies: n,
      peerMask,
      dstChild: trie.child,
      dstVal: trie.val,
      dstMask,
      dstKind,
      aclStart,
      aclProto,
      aclLo,
      aclHi,
    },
    labels: infos.map((x) => x.label),
    policies: infos,
  }
}

/** outer contains inner (equal counts). */
function contains(outer: Cidr, inner: Cidr): boolean {
  return outer.len <= inner.len && cidrContains(outer, inner.addr)
}

export function policyLabel(p: PolicyConfig): string {
  return p.description ? `Policies[${p.index}] "${p.description}"` : `Policies[${p.index}]`
}

export function policyRule(p: PolicyConfig): string {
  const acls = p.acls
    .map((a) =>
      (a.protocol === 'Tcp' || a.protocol === 'Udp') && !(a.portLo === 0 && a.portHi === 65535)
        ? `${a.protocol} ${a.portLo === a.portHi ? a.portLo : `${a.portLo}-${a.portHi}`}`
        : a.protocol,
    )
    .join(', ')
  const ranges = gatewayRanges(p)
  const to = ranges ? `; to ${ranges.map((c) => c.text).join(', ')}` : ''
  return `${p.senderTags.join(' ')} -> ${p.receiverTags.join(' ')}: ${acls}${to}${p.enabled ? '' : ' (disabled)'}`
}

/** Human mode line for start-up logs and status. */
export function policyModeLine(c: CompiledPolicies): string {
  if (c.mode === 'compat') return 'policy: none, all peers allowed'
  const on = c.policies.filter((p) => p.active).length
  return `policy: ${c.policies.length} policies, ${on} enforced here; everything else from peers is dropped`
}

/**
 * Doctor's warnings (one line each, JSON path first): a tag a policy names that neither this system
 * nor any peer carries, and, with Policies set, a provided route that no enabled policy here grants.
 */
export function policyWarnings(input: PolicyInput): string[] {
  const pols = input.policies
  if (pols === undefined) return []
  const out: string[] = []
  const known = new Set([...input.selfTags, ...input.peers.flatMap((p) => p.tags)])
  const warned = new Set<string>()
  for (const p of pols)
    for (const key of ['SenderTags', 'ReceiverTags'] as const)
      (key === 'SenderTags' ? p.senderTags : p.receiverTags).forEach((tag, i) => {
        if (known.has(tag) || warned.has(tag)) return
        warned.add(tag)
        out.push(`Policies[${p.index}].${key}[${i}]: tag "${tag}" is carried by no peer and not by this system`)
      })
  const mine = new Set(input.selfTags)
  const granted = pols.filter((p) => p.enabled && p.receiverTags.some((t) => mine.has(t))).flatMap((p) => gatewayRanges(p) ?? [])
  input.providesRoutes.forEach((r, i) => {
    if (!granted.some((g) => cidrsOverlap(g, r)))
      out.push(`ExitNode.ProvidesRoutes[${i}]: ${r.text} is granted by no enabled policy here; with Policies set, no peer can use it`)
  })
  return out
}

export interface PolicySystem {
  tags: readonly string[]
  address: number
  /** The receiver's provided routes (for a peer: its AvailableRoutes as this profile knows them). */
  routes: readonly Cidr[]
}

/**
 * For `enclave explain`: how `receiver` judges a new flow from a sender carrying `senderTags`, by the
 * policies of this profile (this system's local view). Inbound: receiver = this system. Outbound: the
 * receiver is the peer, which enforces with its own profile; this is what ours predicts.
 */
export function judgeFlow(
  policies: readonly PolicyConfig[] | undefined,
  receiver: PolicySystem,
  senderTags: readonly string[],
  proto: number,
  dst: number,
  port: number,
): { verdict: number; text: string } {
  const c = compilePolicies({
    selfTags: receiver.tags,
    selfAddress: receiver.address,
    providesRoutes: receiver.routes,
    peers: [{ slot: 0, tags: senderTags }],
    policies,
  })
  const verdict = evaluatePolicy(c.table, 0, proto, dst >>> 16, dst & 0xffff, port)
  return { verdict, text: describeVerdict(c.labels, verdict) }
}

/** What the workers get with the route tables: the table, its labels and fresh per-worker counters. */
export function policyTablesFor(c: CompiledPolicies, workers: number, gen: number): PolicyTables {
  return {
    policy: c.table,
    policyGen: gen,
    policyLabels: c.labels,
    policyCounters: new SharedArrayBuffer(Math.max(1, workers) * policyCounterStride(c.table.policies) * 8),
  }
}

/** Float64 counters per worker: hits[p], drops[p], then one "no policy allows". */
export function policyCounterStride(policies: number): number {
  return 2 * policies + 1
}

/** Sums the workers' counters: per policy hits and drops, and drops no policy came near. */
export function sumPolicyCounters(t: PolicyTables, workers: number): { hits: number[]; drops: number[]; noPolicy: number } {
  const n = t.policy.policies
  const stride = policyCounterStride(n)
  const f = new Float64Array(t.policyCounters)
  const hits = new Array<number>(n).fill(0)
  const drops = new Array<number>(n).fill(0)
  let noPolicy = 0
  for (let w = 0; w < workers && (w + 1) * stride <= f.length; w++) {
    for (let i = 0; i < n; i++) {
      hits[i] += f[w * stride + i]
      drops[i] += f[w * stride + n + i]
    }
    noPolicy += f[w * stride + 2 * n]
  }
  return { hits, drops, noPolicy }
}
