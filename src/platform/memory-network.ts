/**
 * An OsNetwork in memory: the routes, policy rules, sysctl and iptables rules an agent would leave in the
 * kernel, kept as plain data, with every change recorded in `changes`. The semantics that the agent
 * relies on are kept: `replace` replaces, deleting what is not there fails, tagged removals remove only
 * the tag's rules, one address per interface.
 */
import { type Cidr, cidrContains, intToIp, parseCidr, parseIpv4 } from '../common/ipv4.js'
import { type NatRule, type OsRoute, ROUTE_PROTO, natMatch } from './linux/net.js'
import type { OsNetwork } from './os-network.js'

interface RouteEntry extends OsRoute {
  table: string
}

export class MemoryOsNetwork implements OsNetwork {
  /** Every change, in order, as a short line ("route add 172.26.0.0/20 dev enclave0 table main", ...). */
  readonly changes: string[] = []
  readonly routes: RouteEntry[] = []
  readonly rules: Array<{ priority: number; spec: string }> = []
  readonly nat: string[][] = []
  readonly raw: string[][] = []
  /** mangle FORWARD (the reply-only rule). */
  readonly forward: string[][] = []
  readonly interfaces = new Map<string, { address: number; mtu: number }>()
  ipForward = false
  /** Whether `iptables` exists on this pretend machine. */
  iptables = true
  /** The source address towards a destination (an exit node's LAN address), by the caller's choice. */
  lanAddress: (cidr: Cidr) => string | undefined = () => undefined
  /** The pretend machine's own addresses besides its interfaces' (its LAN addresses), dotted quads. */
  localAddrs: string[] = []

  constructor(
    /** Routes of the pretend machine itself (its LAN, its default route), in table main. */
    connected: OsRoute[] = [],
  ) {
    for (const r of connected) this.routes.push({ ...r, table: r.table ?? 'main' })
  }

  async configureInterface(dev: string, address: number, mtu: number): Promise<void> {
    if (this.interfaces.has(dev)) throw new Error(`ip addr add ${intToIp(address)}/10 dev ${dev}: RTNETLINK answers: File exists`)
    this.interfaces.set(dev, { address, mtu })
    this.changes.push(`interface ${dev} ${intToIp(address)}/10 mtu ${mtu} up`)
  }

  /** The TUN device disappears with its last queue; so do its routes. */
  removeInterface(dev: string): void {
    this.interfaces.delete(dev)
    for (let i = this.routes.length - 1; i >= 0; i--) if (this.routes[i].dev === dev) this.routes.splice(i, 1)
  }

  async listRoutes(table = 'main'): Promise<OsRoute[]> {
    return this.routes.filter((r) => r.table === table).map(({ table: _t, ...r }) => r)
  }

  private findRoute(dst: string, table: string, pred: (r: RouteEntry) => boolean): number {
    return this.routes.findIndex((r) => r.dst === dst && r.table === table && pred(r))
  }

  async addRoute(cidr: Cidr, dev: string, table = 'main'): Promise<void> {
    if (!this.interfaces.has(dev)) throw new Error(`ip route replace ${cidr.text} dev ${dev}: Cannot find device "${dev}"`)
    const i = this.findRoute(cidr.text, table, (r) => r.type !== 'unreachable' && (r.metric ?? 0) === 0)
    const e: RouteEntry = { dst: cidr.text, dev, protocol: ROUTE_PROTO, table }
    if (i >= 0) this.routes[i] = e
    else this.routes.push(e)
    this.changes.push(`route add ${cidr.text} dev ${dev} table ${table}`)
  }

  async delRoute(cidr: Cidr, dev: string, table = 'main'): Promise<void> {
    const i = this.findRoute(cidr.text, table, (r) => r.dev === dev && r.protocol === ROUTE_PROTO)
    if (i < 0) return
    this.routes.splice(i, 1)
    this.changes.push(`route del ${cidr.text} dev ${dev} table ${table}`)
  }

  async addUnreachableRoute(cidr: Cidr, metric: number, table = 'main'): Promise<void> {
    const i = this.findRoute(cidr.text, table, (r) => r.type === 'unreachable' && r.metric === metric)
    const e: RouteEntry = { dst: cidr.text, type: 'unreachable', protocol: ROUTE_PROTO, metric, table }
    if (i >= 0) this.routes[i] = e
    else this.routes.push(e)
    this.changes.push(`route add unreachable ${cidr.text} metric ${metric} table ${table}`)
  }

  async delUnreachableRoute(cidr: Cidr, metric: number, table = 'main'): Promise<boolean> {
    const i = this.findRoute(cidr.text, table, (r) => r.type === 'unreachable' && r.metric === metric && r.protocol === ROUTE_PROTO)
    if (i < 0) return false
    this.routes.splice(i, 1)
    this.changes.push(`route del unreachable ${cidr.text} metric ${metric} table ${table}`)
    return true
  }

  async listUnreachableRoutes(metric: number, table = 'main'): Promise<Cidr[]> {
    const out: Cidr[] = []
    for (const r of this.routes) {
      if (r.table !== table || r.type !== 'unreachable' || r.metric !== metric || r.protocol !== ROUTE_PROTO) continue
      const c = parseCidr(r.dst)
      if (typeof c !== 'string') out.push(c)
    }
    return out
  }

  /** IPv6 unreachable defaults by metric (the memory machine has IPv6). */
  readonly ipv6Blocks = new Set<number>()

  async addIpv6Block(metric: number): Promise<boolean> {
    this.ipv6Blocks.add(metric)
    this.changes.push(`route6 add unreachable default metric ${metric}`)
    return true
  }

  async delIpv6Block(metric: number): Promise<boolean> {
    const had = this.ipv6Blocks.delete(metric)
    if (had) this.changes.push(`route6 del unreachable default metric ${metric}`)
    return had
  }

  async addDefaultRouteRules(fwmark: number, bypass: readonly number[] = []): Promise<void> {
    await this.removeDefaultRouteRules(fwmark)
    this.rules.push({ priority: 32761, spec: `not fwmark ${fwmark} table ${fwmark}` })
    this.rules.push({ priority: 32760, spec: 'table main suppress_prefixlength 0' })
    for (const a of bypass) this.rules.push({ priority: 32759, spec: `to ${intToIp(a)}/32 table main` })
    this.changes.push(`rules add fwmark ${fwmark}${bypass.length ? ` bypass ${bypass.map(intToIp).join(',')}` : ''}`)
  }

  async removeDefaultRouteRules(fwmark: number): Promise<number> {
    let n = 0
    for (let i = this.rules.length - 1; i >= 0; i--) {
      const r = this.rules[i]
      if (r.spec === `not fwmark ${fwmark} table ${fwmark}` || r.spec === 'table main suppress_prefixlength 0' || r.priority === 32759) {
        this.rules.splice(i, 1)
        n++
      }
    }
    if (n) this.changes.push(`rules del fwmark ${fwmark} (${n})`)
    return n
  }

  ipForwardEnabled(): boolean {
    return this.ipForward
  }

  enableIpForward(): void {
    this.ipForward = true
    this.changes.push('sysctl net.ipv4.ip_forward=1')
  }

  disableIpForward(): void {
    this.ipForward = false
    this.changes.push('sysctl net.ipv4.ip_forward=0')
  }

  async lanAddressFor(cidr: Cidr): Promise<string | undefined> {
    return this.lanAddress(cidr)
  }

  async localAddresses(): Promise<number[]> {
    const out = [...this.interfaces.values()].map((i) => i.address >>> 0)
    for (const a of this.localAddrs) {
      const v = parseIpv4(a)
      if (typeof v === 'number') out.push(v >>> 0)
    }
    return out
  }

  async natRules(): Promise<NatRule[] | undefined> {
    if (!this.iptables) return undefined
    return this.nat.map((args) => {
      const get = (flag: string) => {
        const i = args.indexOf(flag)
        return i >= 0 ? args[i + 1] : undefined
      }
      return {
        ...natMatch(args.join(' ')),
        source: get('-s'),
        destination: get('-d'),
        target: get('-j') ?? '',
        to: get('--to-source') ?? get('--to'),
        comment: get('--comment'),
        pkts: 0,
        bytes: 0,
        spec: args.join(' '),
      }
    })
  }

  async addNatRule(args: string[]): Promise<void> {
    if (!this.iptables) throw new Error('iptables: command not found')
    this.nat.push([...args])
    this.changes.push(`nat add ${args.join(' ')}`)
  }

  async removeTaggedNatRules(tag: string): Promise<number> {
    return this.removeTagged(this.nat, tag, 'nat')
  }

  async rawPreroutingRules(): Promise<string[] | undefined> {
    if (!this.iptables) return undefined
    return this.raw.map((a) => a.join(' '))
  }

  async insertRawRule(args: string[]): Promise<void> {
    if (!this.iptables) throw new Error('iptables: command not found')
    this.raw.unshift([...args])
    this.changes.push(`raw insert ${args.join(' ')}`)
  }

  async removeTaggedRawRules(tag: string): Promise<number> {
    return this.removeTagged(this.raw, tag, 'raw')
  }

  async mangleForwardRules(): Promise<string[] | undefined> {
    if (!this.iptables) return undefined
    return this.forward.map((a) => a.join(' '))
  }

  /** The pretend kernel drops nothing by itself: the reply-only rule's counter is what a test sets. */
  forwardDrops = 0

  async mangleForwardDrops(tag: string): Promise<number | undefined> {
    if (!this.iptables) return undefined
    return this.forward.some((a) => a.includes(tag)) ? this.forwardDrops : 0
  }

  async insertMangleForwardRule(args: string[]): Promise<void> {
    if (!this.iptables) throw new Error('iptables: command not found')
    this.forward.unshift([...args])
    this.changes.push(`forward insert ${args.join(' ')}`)
  }

  async removeTaggedMangleForwardRules(tag: string): Promise<number> {
    return this.removeTagged(this.forward, tag, 'forward')
  }

  private removeTagged(list: string[][], tag: string, what: string): number {
    let n = 0
    for (let i = list.length - 1; i >= 0; i--) {
      const c = list[i].indexOf('--comment')
      if (c >= 0 && list[i][c + 1] === tag) {
        list.splice(i, 1)
        n++
      }
    }
    if (n) this.changes.push(`${what} del tag ${tag} (${n})`)
    return n
  }

  /** The route the pretend kernel picks for `dst` in table main (longest prefix, lowest metric). */
  lookup(dst: number): OsRoute | undefined {
    let best: RouteEntry | undefined
    let bestLen = -1
    for (const r of this.routes) {
      if (r.table !== 'main') continue
      const c = parseCidr(r.dst)
      if (typeof c === 'string' || !cidrContains(c, dst)) continue
      if (c.len > bestLen || (c.len === bestLen && (r.metric ?? 0) < (best?.metric ?? 0))) {
        best = r
        bestLen = c.len
      }
    }
    return best
  }
}
