/** What a profile reload changes: a pure comparison of the running peers with the new profile. */
import type { PeerConfig, Profile } from '../../config/profile.js'
import { type LocalStatic, type PeerCrypto, peerCrypto } from '../../protocol/noise.js'

export interface PeerChange<P> {
  peer: P
  cfg: PeerConfig
  /** Anything in the peer's configuration changed (reported as "changed"). */
  edited: boolean
  presharedKeyChanged: boolean
  endpointEdited: boolean
}

export interface ReloadPlan<P> {
  removed: P[]
  kept: PeerChange<P>[]
  added: PeerConfig[]
}

const keyOf = (k: Uint8Array) => Buffer.from(k).toString('base64')

/** Refuses changes that need a restart; returns the reason, or undefined when the reload can apply. */
export function restartNeeded(running: Profile, next: Profile): string | undefined {
  if (
    !next.privateKey.equals(running.privateKey) ||
    next.interface !== running.interface ||
    next.localPort !== running.localPort ||
    next.mtu !== running.mtu
  )
    return 'PrivateKey, Interface, LocalPort and Mtu cannot change while running; restart the agent (`enclave restart`)'
  return undefined
}

export function planReload<P extends { cfg: PeerConfig }>(running: Iterable<P>, next: Profile): ReloadPlan<P> {
  const wanted = new Map(next.peers.map((c) => [keyOf(c.publicKey), c]))
  const plan: ReloadPlan<P> = { removed: [], kept: [], added: [] }
  const seen = new Set<string>()
  for (const peer of running) {
    const k = keyOf(peer.cfg.publicKey)
    const cfg = wanted.get(k)
    if (!cfg) {
      plan.removed.push(peer)
      continue
    }
    seen.add(k)
    const old = peer.cfg
    plan.kept.push({
      peer,
      cfg,
      edited: JSON.stringify({ ...old, index: 0 }) !== JSON.stringify({ ...cfg, index: 0 }),
      presharedKeyChanged: old.presharedKey?.toString('base64') !== cfg.presharedKey?.toString('base64'),
      endpointEdited: `${old.endpoint?.host}:${old.endpoint?.port}` !== `${cfg.endpoint?.host}:${cfg.endpoint?.port}`,
    })
  }
  for (const [k, cfg] of wanted) if (!seen.has(k)) plan.added.push(cfg)
  return plan
}

/**
 * Applies a kept peer's new configuration. A new PresharedKey needs new handshake crypto, but the
 * replay floor carries over: the greatest initiation timestamp seen and the last accepted time
 * (an initiation does not depend on the PresharedKey, so a recorded one would be accepted again).
 */
export function applyConfig(c: PeerChange<{ cfg: PeerConfig; crypto: PeerCrypto }>, local: LocalStatic): void {
  c.peer.cfg = c.cfg
  if (!c.presharedKeyChanged) return
  const fresh = peerCrypto(local, c.cfg.publicKey, c.cfg.presharedKey)
  fresh.lastTimestamp = c.peer.crypto.lastTimestamp
  fresh.lastInitiationMs = c.peer.crypto.lastInitiationMs
  c.peer.crypto = fresh
}
