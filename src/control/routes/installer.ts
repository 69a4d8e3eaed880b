/**
 * Applies the compiler's OS-route decisions: installs and removes our routes on the TUN device,
 * the policy rules that a 0.0.0.0/0 route needs, and remembers what it installed so that it removes
 * exactly that (on reload and at stop).
 */
import type { Cidr } from '../../common/ipv4.js'
import * as net from '../../platform/linux/net.js'
import type { AgentLogger } from '../logger.js'
import { type RouteDecision, decideRoutes } from './compiler.js'

export class OsRouteInstaller {
  private installed: Cidr[] = []
  private decisions: RouteDecision[] = []
  private defaultRules = false

  /** `fwmark` is also the routing table number for 0.0.0.0/0. */
  constructor(
    private readonly ifname: string,
    private readonly fwmark: number,
    private readonly log: AgentLogger,
  ) {}

  isInstalled(route: string): boolean {
    return this.installed.some((c) => c.text === route)
  }

  decision(route: string): RouteDecision | undefined {
    return this.decisions.find((d) => d.cidr.text === route)
  }

  /** Makes the OS routes match `wanted`; `carrier(route)` names the exit node for the log. */
  async sync(wanted: Cidr[], force: boolean, carrier: (route: string) => string | undefined): Promise<void> {
    const existing = (await net.listRoutes('main')).filter((r) => !this.isInstalled(r.dst))
    const decisions = decideRoutes(wanted, existing, this.ifname, force)
    const table = String(this.fwmark)
    for (const old of this.installed) {
      if (decisions.some((d) => d.install && d.cidr.text === old.text)) continue
      await net.delRoute(old, this.ifname, old.len === 0 ? table : undefined)
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
          await net.addRoute(d.cidr, this.ifname, table)
          if (!this.defaultRules) {
            await net.addDefaultRouteRules(this.fwmark)
            this.defaultRules = true
          }
        } else {
          await net.addRoute(d.cidr, this.ifname)
        }
        installed.push(d.cidr)
        if (!this.isInstalled(d.cidr.text))
          this.log.info({ route: d.cidr.text, dev: this.ifname, via: carrier(d.cidr.text), note: d.warning }, 'installed route')
      } catch (e) {
        d.install = false
        d.reason = (e as Error).message
        this.log.error({ route: d.cidr.text, err: d.reason }, 'route could not be installed')
      }
    }
    if (!installed.some((c) => c.len === 0) && this.defaultRules) {
      await net.removeDefaultRouteRules(this.fwmark)
      this.defaultRules = false
    }
    this.installed = installed
    this.decisions = decisions
  }

  /** Removes every route and rule this installer added. */
  async removeAll(): Promise<void> {
    for (const c of this.installed) await net.delRoute(c, this.ifname, c.len === 0 ? String(this.fwmark) : undefined)
    if (this.defaultRules) await net.removeDefaultRouteRules(this.fwmark)
    this.installed = []
    this.defaultRules = false
  }
}
