/** The status model's policy section: this system's tags and each policy with its counters (pure). */
import { type CompiledPolicies, policyModeLine } from '../compile/policy.js'
import type { PolicySection } from './status-model.js'

export interface PolicyCounts {
  hits: number[]
  drops: number[]
  noPolicy: number
}

export function policySection(tags: readonly string[], c: CompiledPolicies, counts?: PolicyCounts): PolicySection {
  return {
    mode: c.mode === 'compat' ? 'none' : 'enforce',
    summary: policyModeLine(c),
    tags: [...tags],
    policies: c.policies.map((p, i) => ({
      label: p.label,
      rule: p.rule,
      enabled: p.enabled,
      enforcedHere: p.active,
      hits: counts?.hits[i] ?? 0,
      drops: counts?.drops[i] ?? 0,
    })),
    droppedNoPolicy: counts?.noPolicy ?? 0,
  }
}
