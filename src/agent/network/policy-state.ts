/**
 * The running agent's policies: the compiled form (for status and explain) and the integer tables the
 * workers get (swapped whole, with a generation so flows judged by an older compile are judged again).
 */
import { ctCutFlows } from '../../dataplane/conntrack.js'
import { evaluatePolicy } from '../../dataplane/policy.js'
import type { PolicyTables } from '../../ipc/messages.js'
import type { Profile } from '../../config/profile.js'
import { type CompiledPolicies, compilePolicies, policyModeLine, policyTablesFor } from '../../compile/policy.js'

export class PolicyState {
  compiled!: CompiledPolicies
  tables!: PolicyTables

  constructor(private readonly workers: number) {}

  /** Compiles the profile's Policies over the current peer slots (start and reload); returns the mode line to log. */
  compile(p: Profile, peers: Iterable<{ slot: number; cfg: { tags: string[] } }>): string {
    this.compiled = compilePolicies({
      selfTags: p.tags,
      selfAddress: p.virtualAddress,
      providesRoutes: p.exitNode.providesRoutes,
      peers: [...peers].map((peer) => ({ slot: peer.slot, tags: peer.cfg.tags })),
      policies: p.policies,
    })
    this.tables = policyTablesFor(this.compiled, this.workers, (this.tables?.policyGen ?? 0) + 1)
    return policyModeLine(this.compiled)
  }

  /** Reload: cuts tracked flows that peers started and the current policy no longer allows. */
  cutDisallowedFlows(conntrack: SharedArrayBuffer, nowS: number): number {
    const table = this.compiled.table
    return ctCutFlows(
      new Int32Array(conntrack),
      nowS,
      (peer, proto, lanIp, lanPort) => evaluatePolicy(table, peer, proto, lanIp >>> 16, lanIp & 0xffff, lanPort) >= 0,
    )
  }
}
