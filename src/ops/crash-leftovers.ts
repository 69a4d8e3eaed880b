/**
 * `enclave stop` after the agent died without stopping (kill -9, crash): the fail-closed routes and
 * policy rules it left keep refusing the traffic its profile sends through exit nodes (see
 * route-installer.ts), its anti-spoofing rules (os-footprint.ts) stay in the raw table and, with ManageNat,
 * its SNAT rules in the nat table. Once nobody holds the run directory's lock and nobody answers on the
 * control socket, stop removes them.
 */
import { AgentNotRunning, callAgent, socketPath } from '../api/client.js'
import { loadProfile, profilePath } from '../config/profile.js'
import { OsFootprint } from './os-footprint.js'
import { InstanceLock } from './instance-lock.js'

/**
 * Removes what a dead agent of the profile in `configDir` left; returns how many routes and rules,
 * and anti-spoofing rules, or undefined when an agent still answers (its routes are its own) or the
 * profile cannot be read.
 */
export async function cleanupAfterCrash(configDir: string, runDir: string): Promise<number | undefined> {
  let profile: ReturnType<typeof loadProfile>
  try {
    profile = loadProfile(profilePath(configDir))
  } catch {
    return undefined
  }
  // Held during the clean-up: an agent that starts meanwhile waits for nothing and removes nothing of ours,
  // and we remove nothing of its.
  let lock: InstanceLock
  try {
    lock = InstanceLock.acquire(runDir)
  } catch {
    return undefined // an agent holds the run directory: what is there is its own
  }
  try {
    try {
      await callAgent({ op: 'ping' }, socketPath(runDir), 2000)
      return undefined
    } catch (e) {
      if (!(e instanceof AgentNotRunning)) return undefined
    }
    return await new OsFootprint(profile).removeAfterCrash()
  } finally {
    lock.release()
  }
}
