/** What the control socket asks of the running agent (the server depends on this, not on the Agent class). */
import type { AgentLogger } from '../log/logger.js'
import type { StatusModel } from '../views/status-model.js'

/** One exit-node route after a change: is its OS route in place, does this exit node carry it, and if not, why. */
export interface RouteOutcome {
  route: string
  via: string
  installed: boolean
  active: boolean
  reason?: string
}

export interface ReloadResult {
  /** The profile the agent runs (and read). */
  profile: string
  added: string[]
  removed: string[]
  changed: string[]
  /** Every exit-node route as it stands now. */
  routes: RouteOutcome[]
  /** Settings that were saved but take effect only after a restart. */
  restartNeeded: string[]
  /** Every data-plane worker runs with the new tables (a reload returns once they do, or after a timeout). */
  workersApplied: boolean
  /** The exit-node checks after the change (the same as status shows). */
  exitWarnings: string[]
  /** With Policies: peers that carry no tag any policy names (all their traffic is dropped). */
  untaggedPeers: string[]
}

export interface AgentApi {
  readonly log: AgentLogger
  status(): StatusModel
  /** The status after re-running the exit-node checks (at most every 2 s): what the control socket serves. */
  freshStatus(): Promise<StatusModel>
  /** Re-reads the profile; `profile` is the file the caller edited, refused when it is not the one the agent runs. */
  reload(profile?: string): Promise<ReloadResult>
  /** Starts a handshake with one peer (identity or virtual address); null when there is no such peer. */
  connect(which: string): string | null
  rekeyAll(): string[]
  setVerbosity(level: number): void
  stop(why?: string): Promise<void>
}

/** Hooks for tests (the control socket offers them only with ENCLAVE_TEST_HOOKS=1). */
export interface AgentTestHooks {
  /** Terminates data-plane worker i as a crash would (the supervisor restarts it). */
  crashWorker(i: number): void
  /** Whether data-plane worker i has a thread (from the start of a (re)start until it exits). */
  workerRunning(i: number): boolean
  /** Connection-table entries held for a peer slot (by the peer's identity while it exists, else by slot). */
  flowsOf(peer: string | number): number
  /** The slot of a configured peer. */
  slotOf(peer: string): number | undefined
}
