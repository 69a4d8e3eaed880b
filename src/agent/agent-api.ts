/** What the control socket asks of the running agent (the server depends on this, not on the Agent class). */
import type { AgentLogger } from '../log/logger.js'
import type { StatusModel } from '../views/status-model.js'

export interface ReloadResult {
  added: string[]
  removed: string[]
  changed: string[]
}

export interface AgentApi {
  readonly log: AgentLogger
  status(): StatusModel
  reload(): Promise<ReloadResult>
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
}
