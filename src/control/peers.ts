/** Control-side state of one peer: configuration, handshake crypto, keypair slots, staging, health. */
import type { PeerConfig } from './profile/profile.js'
import type { PeerCrypto } from '../protocol/noise.js'

export interface KeypairRef {
  slot: number
  index: number
  createdMs: number
  isInitiator: boolean
}

export interface PeerRuntime {
  slot: number
  cfg: PeerConfig
  crypto: PeerCrypto
  current?: KeypairRef
  previous?: KeypairRef
  next?: KeypairRef
  /** Keypair slot reserved for our in-flight initiation. */
  pendingSlot?: number
  handshakeStartedMs?: number
  lastInitiationSentMs: number
  nextRetryMs: number
  lastHandshakeMs?: number
  staged: Buffer[]
  /** Endpoint resolved from the profile (host names looked up at start, reload, and while handshakes fail). */
  configuredEndpoint?: { ip: number; port: number }
  lastResolveMs?: number
  /** Set when a send went unanswered for KEEPALIVE+REKEY_TIMEOUT (used for exit-node failover). */
  unresponsiveSinceMs?: number
  rekeyOnRxDone?: number
  lastTxDataHandled: number
  lastLoggedEndpoint?: number
  lastState?: string
}

export function peerState(p: PeerRuntime, nowMs: number, rejectAfterMs: number): 'Up' | 'Connecting' | 'Down' {
  if (p.current && nowMs - p.current.createdMs < rejectAfterMs && p.unresponsiveSinceMs === undefined) return 'Up'
  if (p.handshakeStartedMs !== undefined) return 'Connecting'
  return 'Down'
}
