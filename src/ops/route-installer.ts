/**
 * Applies the compiler's OS-route decisions: installs and removes our routes on the TUN device,
 * the policy rules that a 0.0.0.0/0 route needs, and remembers what it installed so that it removes
 * exactly that (on reload and at stop).
 *
 * Fail closed: each TUN route has an `unreachable` twin for the same prefix in the same table
 * (0.0.0.0/0: the fwmark table; narrower: main) at a worse metric, the fwmark number, which also
 * tags it as this agent's. If the agent dies without stopping (kill -9), the TUN device and its
 * routes vanish with the process but the twins and the policy rules stay: traffic the profile sends
 * through an exit node is refused, not leaked to the underlay, until `enclave stop` removes the
 * leftovers (removeCrashLeftovers) or the next start replaces them (the first sync).
 */
import { type Cidr, intToIp } from '../common/ipv4.js'
import { ipv6BlockMetric, isOurUnreachable } from '../platform/linux/net.js'
import { type OsNetwork, linuxNetwork } from '../platform/os-network.js'
import type { AgentLogger } from '../log/logger.js'
import { type RouteDecision, decideRoutes } from '../compile/routes.js'

/** An agent's fwmark, which is also its routing table for 0.0.0.0/0 and its fail-closed routes' metric. */
export function agentFwmark(localPort: number): number {
  return 0xec0000 + localPort
}

export class OsRouteInstaller {
  private installed: Cidr[] = []
  private decisions: RouteDecision[] = []
  private defaultRules = false
  /** The bypass addresses the installed default-route rules carry (sync's `bypass`). */
  private bypassKey = ''
  private ipv6Blocked = false
  /** The first sync also removes what a run that did not stop cleanly left (after installing ours). */
  private first = true

  /** `fwmark` is also the routing table number for 0.0.0.0/0. */
  constructor(
    readonly ifname: string,
    private readonly fwmark: number,
    private readonly log: AgentLogger,
    private readonly os: OsNetwork = linuxNetwork,
  ) {}

  isInstalled(route: string): boolean {
    return this.installed.some((c) => c.text === route)
  }

  decision(route: string): RouteDecision | undefined {
    return this.decisions.find((d) => d.cidr.text === route)
  }

  /**
   * Makes the OS routes match `wanted`; `carrier(route)` names the exit node for the log. `bypass`: with
   * 0.0.0.0/0 through an exit node, addresses that still use the underlay's routes (the hub's).
   */
  async sync(
    wanted: Cidr[],
    force: boolean,
    carrier: (route: string) => string | undefined,
    blockIpv6 = true,
    bypass: readonly number[] = [],
  ): Promise<void> {
    const bypassKey = bypass.join(',')
    const existing = (await this.os.listRoutes('main')).filter((r) => !this.isInstalled(r.dst) && !isOurUnreachable(r, this.fwmark))
    const decisions = decideRoutes(wanted, existing, this.ifname, force)
    const table = String(this.fwmark)
    const stale = this.first ? await this.leftovers() : []
    for (const old of this.installed) {
      if (decisions.some((d) => d.install && d.cidr.text === old.text)) continue
      await this.delPair(old)
      this.log.info({ route: old.text }, 'removed route')
    }
    const installed: Cidr[] = []
    for (const d of decisions) {
      if (!d.install) {
        this.log.warn({ route: d.cidr.text, reason: d.reason }, 'route NOT installed')
        continue
      }
      try {
        if (d.cidr.len === 0) {
          await this.os.addRoute(d.cidr, this.ifname, table)
          await this.os.addUnreachableRoute(d.cidr, this.fwmark, table)
          if (!this.defaultRules || this.bypassKey !== bypassKey) {
            await this.os.addDefaultRouteRules(this.fwmark, bypass)
            if (bypass.length && this.bypassKey !== bypassKey)
              this.log.info({ to: bypass.map(intToIp).join(' ') }, 'the hub stays on the underlay beside 0.0.0.0/0')
            this.defaultRules = true
            this.bypassKey = bypassKey
          }
        } else {
          await this.os.addRoute(d.cidr, this.ifname)
          await this.os.addUnreachableRoute(d.cidr, this.fwmark)
        }
        installed.push(d.cidr)
        if (!this.isInstalled(d.cidr.text))
          this.log.info({ route: d.cidr.text, dev: this.ifname, via: carrier(d.cidr.text), note: d.warning }, 'installed route')
      } catch (e) {
        if (!this.isInstalled(d.cidr.text)) await this.delPair(d.cidr) // never a TUN route without its twin
        d.install = false
        d.reason = (e as Error).message
        this.log.error({ route: d.cidr.text, err: d.reason }, 'route could not be installed')
      }
    }
    if (!installed.some((c) => c.len === 0) && (this.defaultRules || this.first)) {
      await this.os.removeDefaultRouteRules(this.fwmark)
      this.defaultRules = false
      this.bypassKey = ''
    }
    // 0.0.0.0/0 through an exit node: IPv6 must not leave in clear beside it (unless the profile allows it).
    const v6 = ipv6BlockMetric(this.fwmark)
    if (installed.some((c) => c.len === 0) && blockIpv6) {
      if (!this.ipv6Blocked) {
        this.ipv6Blocked = await this.os.addIpv6Block(v6)
        if (this.ipv6Blocked) this.log.info('IPv6 is blocked while 0.0.0.0/0 goes through an exit node (ExitNode.AllowIpv6 allows it)')
      }
    } else if (this.ipv6Blocked || this.first) {
      await this.os.delIpv6Block(v6)
      this.ipv6Blocked = false
    }
    for (const c of stale) {
      if (installed.some((i) => i.text === c.text)) continue
      await this.os.delUnreachableRoute(c, this.fwmark, c.len === 0 ? table : undefined)
      this.log.warn({ route: c.text }, 'removed a fail-closed route left by an earlier run that did not stop cleanly')
    }
    this.first = false
    this.installed = installed
    this.decisions = decisions
  }

  /** Fail-closed routes present before our first sync: a crashed earlier run's (replaced or removed). */
  private async leftovers(): Promise<Cidr[]> {
    const inTable = (await this.os.listUnreachableRoutes(this.fwmark, String(this.fwmark))).filter((c) => c.len === 0)
    const inMain = (await this.os.listUnreachableRoutes(this.fwmark, 'main')).filter((c) => c.len > 0)
    return [...inTable, ...inMain]
  }

  private async delPair(c: Cidr): Promise<void> {
    const table = c.len === 0 ? String(this.fwmark) : undefined
    await this.os.delRoute(c, this.ifname, table)
    await this.os.delUnreachableRoute(c, this.fwmark, table)
  }

  /** Removes every route and rule this installer added. */
  async removeAll(): Promise<void> {
    for (const c of this.installed) await this.delPair(c)
    if (this.defaultRules) await this.os.removeDefaultRouteRules(this.fwmark)
    if (this.ipv6Blocked) await this.os.delIpv6Block(ipv6BlockMetric(this.fwmark))
    this.installed = []
    this.defaultRules = false
    this.bypassKey = ''
    this.ipv6Blocked = false
  }
}

/**
 * After an agent died without stopping: removes its fail-closed routes and policy rules (`fwmark`
 * names the agent, see OsRouteInstaller). Only call this when no agent of that profile is running.
 * Returns how many routes and rules it removed.
 */
export async function removeCrashLeftovers(fwmark: number, os: OsNetwork = linuxNetwork): Promise<number> {
  let n = 0
  const table = String(fwmark)
  for (const c of await os.listUnreachableRoutes(fwmark, table)) if (await os.delUnreachableRoute(c, fwmark, table)) n++
  for (const c of await os.listUnreachableRoutes(fwmark, 'main')) if (await os.delUnreachableRoute(c, fwmark)) n++
  n += await os.removeDefaultRouteRules(fwmark)
  if (await os.delIpv6Block(ipv6BlockMetric(fwmark))) n++
  return n
}
