/**
 * The routing state of a run: which exit node carries each route now, and the data-plane tables
 * compiled from it. Recompiles (and says so) only when the choice or the peers change.
 */
import type { RouteTables } from '../../ipc/messages.js'
import type { PeerRuntime } from '../peers/peer-table.js'
import type { Profile } from '../../config/profile.js'
import { type RoutePeer, chooseRoutes, compileTables, failovers, sameChoice } from '../../compile/routes.js'

export function routePeer(p: PeerRuntime): RoutePeer {
  return {
    slot: p.slot,
    identity: p.cfg.identity,
    virtualAddress: p.cfg.virtualAddress,
    availableRoutes: p.cfg.availableRoutes,
    unresponsive: p.health.unresponsiveSinceMs !== undefined,
    handshakeStartedMs: p.hs.startedMs,
  }
}

export class Routing {
  private active = new Map<string, number>()
  private current?: RouteTables

  /** Route text -> peer slot carrying it. */
  get choice(): ReadonlyMap<string, number> {
    return this.active
  }

  get tables(): RouteTables {
    if (!this.current) throw new Error('routing tables not compiled yet')
    return this.current
  }

  carrier(route: string): number | undefined {
    return this.active.get(route)
  }

  /** Compiles new tables unconditionally (peers or profile changed). */
  compile(profile: Profile, peers: Iterable<PeerRuntime>, now: number): RouteTables {
    const rp = [...peers].map(routePeer)
    this.active = chooseRoutes(rp, [...profile.exitNode.availableRoutes.keys()], now)
    const prof = { virtualAddress: profile.virtualAddress, providesRoutes: profile.exitNode.providesRoutes }
    this.current = compileTables(prof, rp, this.active, (this.current?.gen ?? 0) + 1)
    return this.current
  }

  /** Re-runs failover; returns the moves and new tables, or undefined when nothing changed. */
  refresh(
    profile: Profile,
    peers: Iterable<PeerRuntime>,
    now: number,
  ): { moves: Array<{ route: string; from: number; to: number }>; tables: RouteTables } | undefined {
    const list = [...peers]
    const next = chooseRoutes(list.map(routePeer), [...profile.exitNode.availableRoutes.keys()], now)
    if (sameChoice(this.active, next)) return undefined
    const moves = failovers(this.active, next)
    return { moves, tables: this.compile(profile, list, now) }
  }
}
