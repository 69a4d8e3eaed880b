/**
 * After the CLI edited the profile: ask a running agent to apply it, and say what actually happened.
 * The agent reloads the very file the CLI edited (it refuses another), returns once every data-plane
 * worker runs with the new tables, and reports each exit-node route (installed or not, and why) and
 * the settings that need a restart.
 */
import { EnclaveError } from '../errors.js'
import { AgentNotRunning, callAgent } from './client.js'

/** What the agent reports after a reload (the shape of src/agent/agent-api.ts ReloadResult). */
export interface ReloadReport {
  profile: string
  added: string[]
  removed: string[]
  changed: string[]
  routes: Array<{ route: string; via: string; installed: boolean; active: boolean; reason?: string }>
  restartNeeded: string[]
  workersApplied: boolean
  exitWarnings: string[]
  untaggedPeers: string[]
}

export interface Applied {
  /** The running agent applied the profile (its workers run with it). */
  applied: boolean
  /** Why not: the agent is not running (the next start reads the file), or it did not finish applying. */
  reason?: string
  report?: ReloadReport
}

/** Asks a running agent to reload `profileFile`; a stopped agent is not an error. */
export async function applyToAgent(profileFile: string): Promise<Applied> {
  let report: ReloadReport
  try {
    report = await callAgent<ReloadReport>({ op: 'reload', profile: profileFile })
  } catch (e) {
    if (e instanceof AgentNotRunning) return { applied: false, reason: 'the agent is not running; it reads the profile when it starts' }
    const err = e as EnclaveError
    throw new EnclaveError(
      err.code ?? 'EAGENT',
      `the profile was saved, but the running agent did not apply it: ${err.message}`,
      err.exitCode ?? 1,
    )
  }
  if (!report.workersApplied)
    return { applied: false, reason: 'the agent reloaded, but its data plane did not confirm the new tables in time', report }
  return { applied: true, report }
}

/**
 * The lines that tell an admin what happened, and whether it is a failure: a route of `routes` (or every
 * route, when undefined) that is not installed, or a setting that needs a restart, is said plainly.
 */
export function describeApplied(a: Applied, routes?: Array<{ route: string; via?: string }>): { lines: string[]; failed: boolean } {
  if (!a.report) return { lines: [a.applied ? 'Applied to the running agent.' : `Saved: ${a.reason}.`], failed: false }
  const lines: string[] = []
  let failed = !a.applied
  if (!a.applied) lines.push(`Saved, but NOT applied: ${a.reason}.`)
  const mine = a.report.routes.filter((r) => !routes || routes.some((w) => w.route === r.route && (!w.via || w.via === r.via)))
  for (const r of mine) {
    if (r.installed)
      lines.push(`Installed: ${r.route} through ${r.via}${r.active ? '' : ` (standby: ${r.reason ?? 'another exit node carries it'})`}.`)
    else {
      lines.push(`Saved, but NOT installed: ${r.route} through ${r.via}: ${r.reason ?? 'the agent did not install it'}.`)
      failed = true
    }
  }
  for (const s of a.report.restartNeeded) lines.push(`Saved; ${s} takes effect after a restart (sudo enclave restart).`)
  for (const w of a.report.exitWarnings) lines.push(`Warning: ${w}`)
  if (a.report.untaggedPeers?.length)
    lines.push(
      `Warning: Policies are in force and ${a.report.untaggedPeers.join(', ')} carry no tag any policy names: all their traffic is dropped (enclave peer set <peer> --tag <tag>)`,
    )
  if (a.applied && !lines.some((l) => l.startsWith('Installed') || l.startsWith('Saved'))) lines.unshift('Applied to the running agent.')
  return { lines, failed }
}
