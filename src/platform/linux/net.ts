/**
 * Interface, route, rule, sysctl and NAT management through iproute2 and iptables.
 * Everything the agent adds is tagged so that it removes exactly its own:
 *  - routes: `proto 211` (ROUTE_PROTO) on our TUN device;
 *  - fail-closed routes: `unreachable <prefix> proto 211 metric <fwmark>` beside each TUN route
 *    (the metric names the agent: several agents with distinct LocalPorts can coexist);
 *  - policy rules for 0.0.0.0/0: priorities RULE_PRIO_* with our fwmark/table;
 *  - NAT rules, anti-spoofing rules (raw PREROUTING) and the reply-only rule (mangle FORWARD): an iptables
 *    comment `enclave:<interface>`.
 */
import fs from 'node:fs'
import { mustRun, run } from './exec.js'
import { type Cidr, cidrContains, intToIp, parseCidr, parseIpv4 } from '../../common/ipv4.js'

export const ROUTE_PROTO = '211'

export async function configureInterface(dev: string, address: number, mtu: number): Promise<void> {
  // The overlay is IPv4: without this the kernel gives the TUN a link-local IPv6 address and sends router
  // solicitations and MLD reports into it, which idle agents counted as not_ipv4 drops.
  try {
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`, '1')
  } catch {
    /* no IPv6 in this kernel: nothing to turn off */
  }
  await mustRun('ip', ['addr', 'add', `${intToIp(address)}/10`, 'dev', dev])
  await mustRun('ip', ['link', 'set', 'dev', dev, 'mtu', String(mtu), 'txqueuelen', '1000', 'up'])
}

export interface OsRoute {
  dst: string
  dev?: string
  protocol?: string
  scope?: string
  table?: string
  prefsrc?: string
  gateway?: string
  type?: string
  metric?: number
}

export async function listRoutes(table = 'main'): Promise<OsRoute[]> {
  const r = await run('ip', ['-j', 'route', 'show', 'table', table])
  if (r.code !== 0) return []
  try {
    return (JSON.parse(r.stdout || '[]') as OsRoute[]).map((x) => ({
      ...x,
      dst: x.dst === 'default' ? '0.0.0.0/0' : x.dst.includes('/') ? x.dst : `${x.dst}/32`,
    }))
  } catch {
    return []
  }
}

export async function addRoute(cidr: Cidr, dev: string, table?: string): Promise<void> {
  const args = ['route', 'replace', cidr.text, 'dev', dev, 'proto', ROUTE_PROTO]
  if (table) args.push('table', table)
  await mustRun('ip', args)
}

export async function delRoute(cidr: Cidr, dev: string, table?: string): Promise<void> {
  const args = ['route', 'del', cidr.text, 'dev', dev, 'proto', ROUTE_PROTO]
  if (table) args.push('table', table)
  await run('ip', args)
}

/**
 * The fail-closed twin of a TUN route: same prefix, same table, type unreachable, at a metric worse
 * than the TUN route's (0). While the TUN route exists it wins; when the agent dies without cleaning
 * up (kill -9, crash) the TUN device and its routes vanish and this one remains, so traffic meant for
 * the tunnel is refused instead of leaving through the underlay.
 */
export async function addUnreachableRoute(cidr: Cidr, metric: number, table?: string): Promise<void> {
  const args = ['route', 'replace', 'unreachable', cidr.text, 'proto', ROUTE_PROTO, 'metric', String(metric)]
  if (table) args.push('table', table)
  await mustRun('ip', args)
}

/** Returns whether a route was removed. */
export async function delUnreachableRoute(cidr: Cidr, metric: number, table?: string): Promise<boolean> {
  const args = ['route', 'del', 'unreachable', cidr.text, 'proto', ROUTE_PROTO, 'metric', String(metric)]
  if (table) args.push('table', table)
  return (await run('ip', args)).code === 0
}

/** Our fail-closed routes (tagged with `metric`) in `table`, as prefixes. */
export async function listUnreachableRoutes(metric: number, table = 'main'): Promise<Cidr[]> {
  const r = await run('ip', ['-j', 'route', 'show', 'table', table, 'proto', ROUTE_PROTO, 'type', 'unreachable'])
  if (r.code !== 0) return []
  let list: OsRoute[]
  try {
    list = JSON.parse(r.stdout || '[]') as OsRoute[]
  } catch {
    return []
  }
  const out: Cidr[] = []
  for (const x of list) {
    if (x.metric !== metric) continue
    const c = parseCidr(x.dst === 'default' ? '0.0.0.0/0' : x.dst.includes('/') ? x.dst : `${x.dst}/32`)
    if (typeof c !== 'string') out.push(c)
  }
  return out
}

/** Is `r` one of our own fail-closed routes (not a route of the user's to check for conflicts)? */
export function isOurUnreachable(r: OsRoute, metric: number): boolean {
  return r.type === 'unreachable' && r.protocol === ROUTE_PROTO && r.metric === metric
}

/**
 * With 0.0.0.0/0 through an exit node, IPv6 would still leave through the local network in clear: an
 * `unreachable default` IPv6 route (ours: proto 211, a metric of our own, better than a router's default)
 * keeps it in, while the agent runs and after it dies. Returns false when the kernel has no IPv6.
 */
export async function addIpv6Block(metric: number): Promise<boolean> {
  return (await run('ip', ['-6', 'route', 'replace', 'unreachable', 'default', 'proto', ROUTE_PROTO, 'metric', String(metric)])).code === 0
}

export async function delIpv6Block(metric: number): Promise<boolean> {
  return (await run('ip', ['-6', 'route', 'del', 'unreachable', 'default', 'proto', ROUTE_PROTO, 'metric', String(metric)])).code === 0
}

/** The metric of an agent's IPv6 block (from its fwmark, so that agents with distinct LocalPorts differ). */
export function ipv6BlockMetric(fwmark: number): number {
  return 1 + (fwmark % 1000)
}

export const RULE_PRIO_BYPASS = 32759
export const RULE_PRIO_SUPPRESS = 32760
export const RULE_PRIO_TABLE = 32761

/**
 * wg-quick's scheme: everything not marked by us goes to our table; main keeps its specific routes.
 * `bypass`: addresses that keep the main table whole, default route included (the hub: its connection
 * is a TCP socket we cannot mark, and going through the exit node it would come from an address the exit
 * node refuses).
 */
export async function addDefaultRouteRules(fwmark: number, bypass: readonly number[] = []): Promise<void> {
  await removeDefaultRouteRules(fwmark)
  await mustRun('ip', ['rule', 'add', 'not', 'fwmark', String(fwmark), 'table', String(fwmark), 'priority', String(RULE_PRIO_TABLE)])
  await mustRun('ip', ['rule', 'add', 'table', 'main', 'suppress_prefixlength', '0', 'priority', String(RULE_PRIO_SUPPRESS)])
  for (const a of bypass)
    await mustRun('ip', ['rule', 'add', 'to', `${intToIp(a)}/32`, 'table', 'main', 'priority', String(RULE_PRIO_BYPASS)])
}

/** Removes our policy rules (also duplicates a crashed run left); returns how many it removed. */
export async function removeDefaultRouteRules(fwmark: number): Promise<number> {
  let n = 0
  for (let i = 0; i < 4; i++) {
    const a = await run('ip', ['rule', 'del', 'priority', String(RULE_PRIO_TABLE), 'table', String(fwmark)])
    const b = await run('ip', ['rule', 'del', 'priority', String(RULE_PRIO_SUPPRESS), 'table', 'main'])
    n += (a.code === 0 ? 1 : 0) + (b.code === 0 ? 1 : 0)
    if (a.code !== 0 && b.code !== 0) break
  }
  // The bypass rules: one per hub address (a few); the loop ends at the first that is not there.
  for (let i = 0; i < 64; i++) {
    const c = await run('ip', ['rule', 'del', 'priority', String(RULE_PRIO_BYPASS), 'table', 'main'])
    if (c.code !== 0) break
    n++
  }
  return n
}

export function ipForwardEnabled(): boolean {
  try {
    return fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() === '1'
  } catch {
    return false
  }
}

export function enableIpForward(): void {
  fs.writeFileSync('/proc/sys/net/ipv4/ip_forward', '1')
}

export function disableIpForward(): void {
  fs.writeFileSync('/proc/sys/net/ipv4/ip_forward', '0')
}

/** This machine's IPv4 addresses on every interface (`ip -4 addr`), host order; [] when it cannot tell. */
export async function localAddresses(): Promise<number[]> {
  const r = await run('ip', ['-j', '-4', 'addr', 'show'])
  if (r.code !== 0) return []
  try {
    const j = JSON.parse(r.stdout) as Array<{ addr_info?: Array<{ family?: string; local?: string }> }>
    const out: number[] = []
    for (const link of j)
      for (const a of link.addr_info ?? []) {
        const v = a.family === 'inet' ? parseIpv4(a.local) : undefined
        if (typeof v === 'number') out.push(v >>> 0)
      }
    return out
  } catch {
    return []
  }
}

/** The source address this machine uses towards `cidr` (its LAN address for an exit node). */
export async function lanAddressFor(cidr: Cidr): Promise<string | undefined> {
  const probe = cidr.len >= 31 ? cidr.addr : cidr.addr + 1
  const r = await run('ip', ['-j', 'route', 'get', intToIp(probe)])
  if (r.code !== 0) return undefined
  try {
    const j = JSON.parse(r.stdout) as Array<{ prefsrc?: string }>
    return j[0]?.prefsrc
  } catch {
    return undefined
  }
}

export interface NatRule {
  source?: string
  /** `! -s`: the rule matches every source but `source`. */
  sourceNegated?: boolean
  destination?: string
  /** The output interface (`-o`; a trailing `+` matches every name it starts). */
  out?: string
  /** `! -o`: every output interface but `out`. */
  outNegated?: boolean
  target: string
  to?: string
  comment?: string
  pkts: number
  bytes: number
  spec: string
}

/** Reads nat POSTROUTING with counters (`iptables -t nat -L POSTROUTING -n -v -x` as structured rules). */
export async function natRules(): Promise<NatRule[] | undefined> {
  const r = await run('iptables', ['-w', '-t', 'nat', '-S', 'POSTROUTING'])
  if (r.code !== 0) return undefined
  const c = await run('iptables', ['-w', '-t', 'nat', '-L', 'POSTROUTING', '-n', '-v', '-x'])
  const counts = c.stdout
    .split('\n')
    .slice(2)
    .filter((l) => l.trim())
    .map((l) => l.trim().split(/\s+/))
  const rules: NatRule[] = []
  let i = 0
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('-A POSTROUTING')) continue
    const get = (flag: string) => {
      const m = new RegExp(`${flag} (\\S+)`).exec(line)
      return m ? m[1] : undefined
    }
    const comment = /--comment "?([^"\s]+)"?/.exec(line)?.[1]
    rules.push({
      ...natMatch(line),
      source: get('-s'),
      destination: get('-d'),
      target: get('-j') ?? '',
      to: get('--to-source') ?? get('--to'),
      comment,
      pkts: Number(counts[i]?.[0] ?? 0),
      bytes: Number(counts[i]?.[1] ?? 0),
      spec: line.replace(/^-A POSTROUTING /, ''),
    })
    i++
  }
  return rules
}

/** The output-interface and negated-source matches of a rule's `iptables -S` spec. */
export function natMatch(spec: string): Pick<NatRule, 'out' | 'outNegated' | 'sourceNegated'> {
  const o = /(?:^|\s)(!\s+)?-o (\S+)/.exec(spec)
  return {
    out: o?.[2],
    outNegated: o ? o[1] !== undefined : undefined,
    sourceNegated: /(?:^|\s)!\s+-s\s/.test(spec) || undefined,
  }
}

/** Does an interface match of iptables (`-o eth0`, `-o veth+`) name `dev`? */
function ifaceMatches(pattern: string, dev: string): boolean {
  return pattern.endsWith('+') ? dev.startsWith(pattern.slice(0, -1)) : pattern === dev
}

/**
 * Could `rule` give a forwarded LAN host's packet into the TUN `tun` this node's virtual address `self`
 * as source? MASQUERADE (which takes the TUN's address) or SNAT to a range holding `self`, that applies
 * to packets out of the TUN (no `-o`, `-o <tun>`, `! -o <other>`) and to sources outside the overlay (a
 * rule for overlay sources only, as the guide's, rewrites peers' packets, never the LAN's).
 */
export function natRewritesLanToSelf(rule: NatRule, tun: string, self: number): boolean {
  if (rule.target === 'SNAT') {
    const range = (rule.to ?? '').split(':')[0].split('-')
    const lo = parseIpv4(range[0])
    const hi = parseIpv4(range[1] ?? range[0])
    if (typeof lo === 'number' && typeof hi === 'number' && !(lo >>> 0 <= self >>> 0 && self >>> 0 <= hi >>> 0)) return false
  } else if (rule.target !== 'MASQUERADE') return false
  if (rule.out !== undefined && ifaceMatches(rule.out, tun) === rule.outNegated) return false
  if (rule.source && !rule.sourceNegated) {
    const s = parseCidr(rule.source.includes('/') ? rule.source : `${rule.source}/32`)
    if (typeof s !== 'string' && s.len >= 10 && cidrContains(OVERLAY, s.addr)) return false
  }
  return true
}

const OVERLAY = parseCidr('100.64.0.0/10') as Cidr

/** Does some SNAT/MASQUERADE rule translate overlay sources going to `cidr`? */
export function natCovers(rules: NatRule[], cidr: Cidr): NatRule | undefined {
  return rules.find((r) => {
    if (r.target !== 'SNAT' && r.target !== 'MASQUERADE') return false
    if (r.source) {
      const s = parseCidr(r.source.includes('/') ? r.source : `${r.source}/32`)
      if (typeof s === 'string' || !(s.len <= 10 && cidrContains(s, 0x64400000))) return false
    }
    if (r.destination) {
      const d = parseCidr(r.destination.includes('/') ? r.destination : `${r.destination}/32`)
      if (typeof d === 'string' || !(d.len <= cidr.len && cidrContains(d, cidr.addr))) return false
    }
    return true
  })
}

export function natRuleArgs(cidr: Cidr, to: string, tag: string): string[] {
  return ['-s', '100.64.0.0/10', '-d', cidr.text, '-j', 'SNAT', '--to-source', to, '-m', 'comment', '--comment', tag]
}

export async function addNatRule(args: string[]): Promise<void> {
  await mustRun('iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', ...args])
}

/** Deletes every POSTROUTING rule carrying our comment tag (our own rules, also after a crash). */
export async function removeTaggedNatRules(tag: string): Promise<number> {
  const rules = (await natRules()) ?? []
  let n = 0
  for (const r of rules) {
    if (r.comment !== tag) continue
    const args = r.spec.match(/"[^"]*"|\S+/g)!.map((a) => a.replace(/^"|"$/g, ''))
    const res = await run('iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...args])
    if (res.code === 0) n++
  }
  return n
}

/**
 * Anti-spoofing, in the raw table's PREROUTING (before conntrack, routing and the kernel's own answers):
 *  1. a packet with an overlay source (100.64.0.0/10) that arrives on any interface but our TUN, and whose
 *     source would not be routed back through that interface (rpfilter), is dropped: otherwise a LAN host
 *     forging a peer's virtual address makes this node's kernel answer the peer through the tunnel (echo
 *     replies, ICMP errors) with our own virtual address as source, which the data plane passes as our
 *     own traffic. rpfilter, not a bare `-s`, so that an uplink in carrier-grade NAT space (a more specific
 *     100.64.x.y/n on that interface) and loopback traffic to our own address keep working;
 *  2. a packet for our own virtual address that arrives on any interface but our TUN, from a non-local
 *     source, is dropped (as wg-quick does): whatever source a LAN host forges (an AvailableRoutes range,
 *     0.0.0.0/0), its packets to our virtual address cannot make us answer into the tunnel.
 * The ICMP errors a forwarded packet triggers towards a forged non-overlay source are the data plane's
 * (firewall.ts: errors from our own address must quote a packet of that peer's).
 */
export function antiSpoofRuleArgs(tun: string, selfAddr: string, tag: string, rpfilter = true): string[][] {
  const c = ['-m', 'comment', '--comment', tag, '-j', 'DROP']
  const overlay = rpfilter ? ['-m', 'rpfilter', '--invert'] : ['-m', 'addrtype', '!', '--src-type', 'LOCAL']
  return [
    ['!', '-i', tun, '-s', '100.64.0.0/10', ...overlay, ...c],
    ['!', '-i', tun, '-d', `${selfAddr}/32`, '-m', 'addrtype', '!', '--src-type', 'LOCAL', ...c],
  ]
}

/** The exact command a user without our iptables runs for rule `args` (for warnings and doctor). */
export function antiSpoofCommand(args: string[]): string {
  return `sudo iptables -t raw -I PREROUTING ${args.map((a) => (a.includes(':') ? `"${a}"` : a)).join(' ')}`
}

/** `iptables -t raw -S PREROUTING` lines (without `-A PREROUTING `), or undefined without iptables. */
export async function rawPreroutingRules(): Promise<string[] | undefined> {
  const r = await run('iptables', ['-w', '-t', 'raw', '-S', 'PREROUTING'])
  if (r.code !== 0) return undefined
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('-A PREROUTING '))
    .map((l) => l.slice('-A PREROUTING '.length))
}

/** Is one of `rules` our overlay anti-spoofing rule for `tun`, tagged `tag`? */
export function hasAntiSpoofRule(rules: string[], tun: string, tag: string): boolean {
  return rules.some((l) => l.includes('-s 100.64.0.0/10') && l.includes(`! -i ${tun}`) && l.includes(tag) && l.includes('-j DROP'))
}

export async function insertRawRule(args: string[]): Promise<void> {
  await mustRun('iptables', ['-w', '-t', 'raw', '-I', 'PREROUTING', ...args])
}

/** Deletes every raw PREROUTING rule carrying our comment tag (also after a crash); returns how many. */
export async function removeTaggedRawRules(tag: string): Promise<number> {
  let n = 0
  for (const spec of (await rawPreroutingRules()) ?? []) {
    if (/--comment "?([^"\s]+)"?/.exec(spec)?.[1] !== tag) continue
    const args = spec.match(/"[^"]*"|\S+/g)!.map((a) => a.replace(/^"|"$/g, ''))
    if ((await run('iptables', ['-w', '-t', 'raw', '-D', 'PREROUTING', ...args])).code === 0) n++
  }
  return n
}

/**
 * Reply-only in the kernel, before NAT: a connection forwarded into our TUN (a LAN host's, a container's)
 * is dropped at its first packet. Without it, a LAN NAT rule that also matches packets out of the TUN
 * (`-s <LAN> -j MASQUERADE` with no `-o`, Docker's default rule) gives a LAN host's packet this node's
 * virtual address as source, and the workers pass it as the node's own traffic. Replies to flows peers
 * started (ESTABLISHED, RELATED) still pass, and the node's own traffic goes through OUTPUT, not FORWARD.
 * In mangle FORWARD, which runs before filter FORWARD: firewall managers that rewrite the filter table
 * (Docker re-inserts its ACCEPT rules at the top when it restarts, ufw, firewalld) cannot put an ACCEPT
 * ahead of it.
 */
export function replyOnlyForwardArgs(tun: string, tag: string): string[] {
  return ['-o', tun, '-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', tag, '-j', 'DROP']
}

/** The exact command a user without our iptables runs for the reply-only rule (for warnings and doctor). */
export function replyOnlyForwardCommand(args: string[]): string {
  return `sudo iptables -t mangle -I FORWARD ${args.map((a) => (a.includes(':') ? `"${a}"` : a)).join(' ')}`
}

/** `iptables -t mangle -S FORWARD` lines (without `-A FORWARD `), or undefined without iptables. */
export async function mangleForwardRules(): Promise<string[] | undefined> {
  const r = await run('iptables', ['-w', '-t', 'mangle', '-S', 'FORWARD'])
  if (r.code !== 0) return undefined
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('-A FORWARD '))
    .map((l) => l.slice('-A FORWARD '.length))
}

/** Packets our reply-only rule(s) tagged `tag` dropped so far (`iptables -t mangle -L FORWARD -v -x`). */
export async function mangleForwardDrops(tag: string): Promise<number | undefined> {
  const r = await run('iptables', ['-w', '-t', 'mangle', '-L', 'FORWARD', '-n', '-v', '-x'])
  if (r.code !== 0) return undefined
  let n = 0
  for (const l of r.stdout.split('\n')) if (l.includes(`/* ${tag} */`) && /\sDROP\s/.test(l)) n += Number(l.trim().split(/\s+/)[0]) || 0
  return n
}

/** Is one of `rules` our reply-only rule for `tun`, tagged `tag`? */
export function hasReplyOnlyForwardRule(rules: string[], tun: string, tag: string): boolean {
  return rules.some(
    (l) => l.includes(`-o ${tun} `) && !/!\s+-o/.test(l) && /--ctstate NEW(\s|$)/.test(l) && l.includes(tag) && l.includes('-j DROP'),
  )
}

export async function insertMangleForwardRule(args: string[]): Promise<void> {
  await mustRun('iptables', ['-w', '-t', 'mangle', '-I', 'FORWARD', ...args])
}

/** Deletes every mangle FORWARD rule carrying our comment tag (also after a crash); returns how many. */
export async function removeTaggedMangleForwardRules(tag: string): Promise<number> {
  let n = 0
  for (const spec of (await mangleForwardRules()) ?? []) {
    if (/--comment "?([^"\s]+)"?/.exec(spec)?.[1] !== tag) continue
    const args = spec.match(/"[^"]*"|\S+/g)!.map((a) => a.replace(/^"|"$/g, ''))
    if ((await run('iptables', ['-w', '-t', 'mangle', '-D', 'FORWARD', ...args])).code === 0) n++
  }
  return n
}
