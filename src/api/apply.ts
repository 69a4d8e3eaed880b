/** After the CLI edited the profile: ask a running agent to apply it. */
import { EnclaveError } from '../errors.js'
import { AgentNotRunning, callAgent } from './client.js'

export interface Applied {
  /** The agent reloaded the profile. */
  applied: boolean
  /** Why not: the agent is not running (the next start reads the file). */
  reason?: string
}

/** Asks a running agent to reload the profile; a stopped agent is not an error. */
export async function applyToAgent(): Promise<Applied> {
  try {
    await callAgent({ op: 'reload' })
    return { applied: true }
  } catch (e) {
    if (e instanceof AgentNotRunning) return { applied: false, reason: 'the agent is not running; it reads the profile when it starts' }
    const err = e as EnclaveError
    throw new EnclaveError(
      err.code ?? 'EAGENT',
      `the profile was saved, but the running agent did not apply it: ${err.message}`,
      err.exitCode ?? 1,
    )
  }
}
