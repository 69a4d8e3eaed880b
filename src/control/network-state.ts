/**
 * What the agent derives from the profile and the peer table for the data plane and for the OS: the
 * route tables with exit-node failover (Routing), the compiled policies (PolicyState), the OS routes and
 * policy rules (OsRouteInstaller) and the exit-node checks. The workers get the tables whole, through
 * `publish`, never a half-built one.
 */
import type { DataplaneTables } from '../ipc/messages.js'
import type { AgentLogger } from './logger.js'
import type { PeerTable } from './peer-table.js'
import type { PolicyState } from './policy/state.js'
import type { Profile } from './profile/profile.js'
import { checkExitNode } from './exit-node.js'
import { type OsNetwork, linuxNetwork } from '../platform/os-network.js'
import type { OsRouteInstaller } from './routes/installer.js'
import { wantedRoutes } from './routes/compiler.js'
import { Routing, routePeer } from './routes/routing.js'

export class NetworkState {
  readonly routing = new Routing()
  /** The exit-node checks' warnings from the last start or reload (shown by status). */
  exitWarnings: string[] = []

  constructor(
    readonly policy: PolicyState,
    readonly routes: OsRouteInstaller,
    private readonly publishTables: (tables: DataplaneTables) => void,
    private readonly log: AgentLogger,
    private readonly os: OsNetwork = linuxNetwork,
    private readonly now: () => number = Date.now,
  ) {}

  /** What the workers get: the route tables and the compiled policies. */
  tables(): DataplaneTables {
    return { ...this.routing.tables, ...this.policy.tables }
  }

  /** Recompiles the route tables (start, reload) and publishes them. */
  rebuild(profile: Profile, peers: PeerTable): void {
    this.routing.compile(profile, peers, this.now())
    this.publish()
  }

  /** Re-chooses exit nodes after a peer's health changed; publishes only if a route moved. */
  refreshFailover(profile: Profile, peers: PeerTable): void {
    const r = this.routing.refresh(profile, peers, this.now())
    if (!r) return
    const name = (slot: number) => peers.get(slot)?.cfg.identity
    for (const m of r.moves) this.log.warn({ route: m.route, from: name(m.from), to: name(m.to) }, 'exit node failover')
    this.publish()
  }

  /** Compiles the profile's Policies over the current peer slots; the workers get them with the next tables. */
  compilePolicy(profile: Profile, peers: PeerTable): void {
    const line = this.policy.compile(profile, peers)
    this.log.info({ tags: profile.tags.join(' ') || '(none)' }, line)
  }

  /** OS routes, policy rules and exit-node checks for the current profile. */
  async applyOs(profile: Profile, peers: PeerTable): Promise<void> {
    const carrier = (route: string) => peers.get(this.routing.carrier(route) ?? -1)?.cfg.identity
    await this.routes.sync(wantedRoutes(peers.list().map(routePeer)), profile.exitNode.forceRoutes, carrier)
    this.exitWarnings = await checkExitNode(profile, this.log, this.os)
  }

  private publish(): void {
    this.publishTables(this.tables())
  }
}
