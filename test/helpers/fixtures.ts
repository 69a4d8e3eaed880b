/**
 * Profiles and peer settings for unit tests, made through the real schema (validateProfile), never cast
 * from partial objects: a fixture is something the agent could have loaded.
 */
import { generatePrivateKey } from '../../src/config/keys.js'
import { type PeerConfig, type Profile, validateProfile } from '../../src/config/profile.js'

export const FIXTURE_FILE = '/test/profiles/Universe.profile'

/** A valid profile: a fresh key, no peers, `extra` merged in (profile keys as in the file). */
export function profileFixture(extra: Record<string, unknown> = {}): Profile {
  return validateProfile(FIXTURE_FILE, { PrivateKey: generatePrivateKey().toString('base64'), Peers: [], ExitNode: {}, ...extra })
}

/** A peer's settings as the profile gives them (`extra`: Peers-entry keys such as Endpoint, Tags, PresharedKey). */
export function peerFixture(publicKey: Uint8Array, extra: Record<string, unknown> = {}): PeerConfig {
  return profileFixture({ Peers: [{ PublicKey: Buffer.from(publicKey).toString('base64'), ...extra }] }).peers[0]
}
