/**
 * The running agent's policies: the compiled form (for status and explain) and the integer tables the
 * workers get (swapped whole, with a generation so flows judged by an older compile are judged again).
 */
import { ctCutFlows } from '../../dataplane/conntrack.js'
import { evaluatePolicy } from '../../dataplane/policy.js'
import type { PolicyTables } from '../../ipc/messages.js'
import type { Profile } from '../../config/profile.js'
import { type CompiledPolicies, compilePolicies, policyModeLine, policyTablesFor, sumPolicyCounters } from '../../compile/policy.js'

export interface PolicyCounts {
  hits: number[]
  drops: number[]
  noPolicy: number
}

export class PolicyState {
  compiled!: CompiledPolicies
  tables!: PolicyTables
  /** Counts of earlier compiles, by policy label: the counters are cumulative since start, across reloads. */
  private readonly carried = new Map<string, { hits: number; drops: number }>()
  private carriedNoPolicy = 0

  constructor(private readonly workers: number) {}

  /** Compiles the profile's Policies over the current peer slots (start and reload); returns the mode line to log. */
  compile(p: Profile, peers: Iterable<{ slot: number; cfg: { tags: string[] } }>, localAddresses: readonly number[] = []): string {
    if (this.tables) {
      const c = sumPolicyCounters(this.tables, this.workers)
      this.compiled.policies.forEach((pol, i) => {
        const k = this.carried.get(pol.label) ?? { hits: 0, drops: 0 }
        this.carried.set(pol.label, { hits: k.hits + c.hits[i], drops: k.drops + c.drops[i] })
      })
      this.carriedNoPolicy += c.noPolicy
    }
    this.compiled = compilePolicies({
      selfTags: p.tags,
      selfAddress: p.virtualAddress,
      providesRoutes: p.exitNode.providesRoutes,
      localAddresses,
      peers: [...peers].map((peer) => ({ slot: peer.slot, tags: peer.cfg.tags })),
      policies: p.policies,
    })
    this.tables = policyTablesFor(this.compiled, this.workers, (this.tables?.policyGen ?? 0) + 1)
    return policyModeLine(this.compiled)
  }

  /** Hits and drops per policy and "no policy allows", since start (a policy keeps its counts by its label). */
  counts(): PolicyCounts {
    const c = sumPolicyCounters(this.tables, this.workers)
    return {
      hits: this.compiled.policies.map((pol, i) => c.hits[i] + (this.carried.get(pol.label)?.hits ?? 0)),
      drops: this.compiled.policies.map((pol, i) => c.drops[i] + (this.carried.get(pol.label)?.drops ?? 0)),
      noPolicy: c.noPolicy + this.carriedNoPolicy,
    }
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
