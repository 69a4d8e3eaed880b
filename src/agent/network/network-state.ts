/**
 * What the agent derives from the profile and the peer table for the data plane and for the OS: the
 * route tables with exit-node failover (Routing), the compiled policies (PolicyState), the OS routes and
 * policy rules (OsRouteInstaller), ManageNat and the exit-node checks (OsFootprint). The workers get the
 * tables whole, through `publish`, never a half-built one.
 *
 * `apply` is the one order of a start or reload: compile the policies, cut tracked flows the new policy no
 * longer allows, rebuild and publish the tables, then the OS routes, ManageNat and the checks.
 */
import { hubAddresses } from './hub-bypass.js'
import type { DataplaneTables } from '../../ipc/messages.js'
import type { AgentLogger } from '../../log/logger.js'
import type { PeerTable } from '../peers/peer-table.js'
import type { PolicyState } from './policy-state.js'
import type { Profile } from '../../config/profile.js'
import { type FootprintCheck, type OsFootprint, REPLY_ONLY_CHECK, checkWarning } from '../../ops/os-footprint.js'
import type { OsRouteInstaller } from '../../ops/route-installer.js'
import { wantedRoutes } from '../../compile/routes.js'
import { Routing, routePeer } from './routing.js'
import type { StatusSources } from '../observability/status-gather.js'

export type NetworkFacts = Pick<StatusSources, 'routes' | 'active' | 'policy' | 'policyCounts'> & { exitWarnings: string[] }

export class NetworkState {
  private readonly routing = new Routing()
  /** The exit-node warnings from the last start or reload (shown by status). */
  private exitWarnings: string[] = []
  /** What the last applyOs could not set up: the reply-only rule, ManageNat. */
  private setupWarnings: { replyOnly: string[]; nat: string[] } = { replyOnly: [], nat: [] }
  /** This system's own addresses the policies were last compiled with (sorted; see localAddressesFor). */
  private localAddrs: number[] = []

  constructor(
    private readonly policy: PolicyState,
    private readonly routes: OsRouteInstaller,
    private readonly footprint: OsFootprint,
    private readonly publishTables: (tables: DataplaneTables) => void,
    private readonly log: AgentLogger,
    private readonly now: () => number = Date.now,
    /** This machine's IPv4 addresses (OsNetwork.localAddresses). */
    private readonly readLocalAddresses: () => Promise<number[]> = async () => [],
  ) {}

  /**
   * The addresses an exit node enforcing Policies judges as itself: they may lie inside its ProvidesRoutes
   * (its LAN address), where a gateway grant must not reach its own services. Others need none.
   */
  private async localAddressesFor(profile: Profile): Promise<number[]> {
    if (profile.policies === undefined || !profile.exitNode.providesRoutes.length) return []
    try {
      return [...new Set(await this.readLocalAddresses())].sort((x, y) => x - y)
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not read the local addresses; keeping the last ones')
      return this.localAddrs
    }
  }

  /**
   * Reads this machine's addresses again (the agent calls it every LOCAL_ADDRESSES_MS) and, when they
   * changed, compiles the policies with them, cuts flows they no longer allow and publishes the tables.
   * Returns the published generation and how many flows were cut, or undefined when nothing changed.
   */
  async refreshLocalAddresses(
    profile: Profile,
    peers: PeerTable,
    conntrack: { table: SharedArrayBuffer; nowS: () => number },
  ): Promise<{ gen: number; cut: number } | undefined> {
    const addrs = await this.localAddressesFor(profile)
    if (addrs.length === this.localAddrs.length && addrs.every((a, i) => a === this.localAddrs[i])) return undefined
    this.localAddrs = addrs
    this.policy.compile(profile, peers, addrs)
    const cut = this.policy.cutDisallowedFlows(conntrack.table, conntrack.nowS())
    this.routing.compile(profile, peers, this.now()) // a new generation: the workers pull tables when it changes
    const tables = this.tables()
    this.publishTables(tables)
    return { gen: tables.gen, cut }
  }

  /** What the workers get: the route tables and the compiled policies. */
  tables(): DataplaneTables {
    return { ...this.routing.tables, ...this.policy.tables }
  }

  /**
   * Applies a profile over the current peers (start: `conntrack` undefined; reload: flows the new policy
   * no longer allows are cut before the workers get the new tables). Returns how many flows were cut.
   */
  async apply(
    profile: Profile,
    peers: PeerTable,
    conntrack?: { table: SharedArrayBuffer; nowS: number },
  ): Promise<{ cut: number; gen: number }> {
    this.localAddrs = await this.localAddressesFor(profile)
    const line = this.policy.compile(profile, peers, this.localAddrs)
    this.log.info({ tags: profile.tags.join(' ') || '(none)' }, line)
    const cut = conntrack ? this.policy.cutDisallowedFlows(conntrack.table, conntrack.nowS) : 0
    if (cut) this.log.info({ flows: cut }, 'policy reload: cut flows the new policy no longer allows')
    this.routing.compile(profile, peers, this.now())
    const tables = this.tables()
    this.publishTables(tables)
    return { cut, gen: tables.gen }
  }

  /** The OS side of `apply`: routes and rules, the reply-only rule, ManageNat, then the exit-node checks (after the workers run). */
  async applyOs(profile: Profile, peers: PeerTable): Promise<void> {
    const carrier = (route: string) => peers.get(this.routing.carrier(route) ?? -1)?.cfg.identity
    const wanted = wantedRoutes(peers.list().map(routePeer))
    let bypass: number[] = []
    if (profile.hub && wanted.some((c) => c.len === 0)) {
      const hub = await hubAddresses(profile.hub.urls)
      bypass = hub.addrs
      if (hub.unresolved.length)
        this.log.warn({ hub: hub.unresolved.join(' ') }, 'cannot resolve the hub: its connection may go through the exit node')
    }
    await this.routes.sync(wanted, profile.exitNode.forceRoutes, carrier, !profile.exitNode.allowIpv6, bypass)
    this.footprint.setProfile(profile)
    const replyOnly = await this.footprint.applyReplyOnly(this.routes.ifname)
    this.setupWarnings = { replyOnly, nat: await this.footprint.applyNat() }
    const checks = profile.exitNode.providesRoutes.length ? await this.footprint.check(this.routes.ifname, true) : []
    this.exitWarnings = this.warningsWith(checks)
    for (const w of this.exitWarnings) this.log.warn(w)
  }

  /** The exit-node checks again, without changing anything (status asks: warnings follow fixes made by hand). */
  async recheck(profile: Profile): Promise<void> {
    if (!profile.exitNode.providesRoutes.length) return
    this.exitWarnings = this.warningsWith(await this.footprint.check(this.routes.ifname, true))
  }

  /**
   * What applyOs could not set up, then the checks that did not pass (anti-spoofing has its own warnings
   * from the start; the reply-only check repeats a reply-only setup warning, which is shown instead).
   */
  private warningsWith(checks: FootprintCheck[]): string[] {
    const { replyOnly, nat } = this.setupWarnings
    const shown = checks.filter(
      (c) => c.result !== 'pass' && c.name !== 'anti-spoofing' && !(c.name === REPLY_ONLY_CHECK && replyOnly.length),
    )
    return [...replyOnly, ...nat, ...shown.map(checkWarning)]
  }

  /** Re-chooses exit nodes after a peer's health changed; publishes only if a route moved. */
  refreshFailover(profile: Profile, peers: PeerTable): void {
    const r = this.routing.refresh(profile, peers, this.now())
    if (!r) return
    const name = (slot: number) => peers.get(slot)?.cfg.identity
    for (const m of r.moves) this.log.warn({ route: m.route, from: name(m.from), to: name(m.to) }, 'exit node failover')
    this.publishTables(this.tables())
  }

  /** Removes what applyOs added: routes, policy rules, the reply-only rule and SNAT rules (at stop). */
  async teardown(): Promise<void> {
    await this.routes.removeAll()
    await this.footprint.removeReplyOnly()
    await this.footprint.removeNat()
  }

  /** What status reads of the network state. */
  statusFacts(): NetworkFacts {
    return {
      routes: this.routes,
      active: this.routing.choice,
      policy: this.policy.compiled,
      policyCounts: this.policy.counts(),
      exitWarnings: this.exitWarnings,
    }
  }
}
