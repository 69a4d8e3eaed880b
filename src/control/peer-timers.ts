/**
 * Applies WireGuard's timer rules to each peer every tick. The rules themselves are the pure
 * function src/protocol/timers.ts; this file feeds it one peer's state and carries out its actions
 * (through Sessions and Handshakes), probes exit nodes that stopped answering, and logs roaming and
 * state changes.
 */
import { intToIp, parseIpv4 } from '../common/ipv4.js'
import { endpointIp, endpointPort } from '../ipc/layout.js'
import { REJECT_AFTER_TIME_MS, REKEY_TIMEOUT_MS } from '../protocol/constants.js'
import { type PeerTimerState, type TimerAction, timerActions } from '../protocol/timers.js'
import type { Handshakes } from './handshakes.js'
import type { AgentLogger } from './logger.js'
import type { PeerMemory } from './peer-memory.js'
import { type PeerRuntime, peerState } from './peer-table.js'
import type { Sessions } from './sessions.js'

/** An exit node that stopped answering is probed this often (failover back when it returns). */
export const HEALTH_PROBE_MS = 30_000
/** While handshakes to a peer named by host name fail, its name is looked up again this often. */
export const DNS_RETRY_MS = 10_000

export interface TimerDeps {
  memory: PeerMemory
  sessions: Sessions
  handshakes: Handshakes
  log: AgentLogger
  /** A peer's health changed in a way that may move an exit-node route. */
  onHealthChange: () => void
  /** Looks a peer's endpoint host name up again. */
  resolveEndpoint: (peer: PeerRuntime) => void
}

export class PeerTimers {
  constructor(private readonly d: TimerDeps) {}

  tick(peer: PeerRuntime, now: number): void {
    const kps: PeerTimerState['keypairs'] = {}
    for (const w of ['previous', 'current', 'next'] as const) if (peer[w]) kps[w] = peer[w]
    const state: PeerTimerState = {
      ...this.d.memory.times(peer.slot),
      persistentKeepaliveS: peer.cfg.persistentKeepalive,
      handshakeStartedMs: peer.handshakeStartedMs,
      nextRetryMs: peer.nextRetryMs,
      lastInitiationSentMs: peer.lastInitiationSentMs,
      keypairs: kps,
      unresponsive: peer.unresponsiveSinceMs !== undefined,
      rekeyOnRxDone: peer.rekeyOnRxDone === peer.current?.slot,
    }
    for (const a of timerActions(state, now)) this.apply(peer, a, now)
    if (peer.cfg.availableRoutes.length && peer.unresponsiveSinceMs !== undefined && now - peer.lastInitiationSentMs >= HEALTH_PROBE_MS)
      this.d.handshakes.initiate(peer, 'probing exit node')
    this.logChanges(peer, now)
  }

  private apply(peer: PeerRuntime, a: TimerAction, now: number): void {
    const id = peer.cfg.identity
    const hs = this.d.handshakes
    switch (a.kind) {
      case 'expire':
        if (this.d.sessions.expire(peer, a.which, now))
          this.d.log.network({ peer: id }, 'session expired (no new handshake within REJECT_AFTER_TIME)')
        return
      case 'give-up':
        this.d.log.network(
          { peer: id, queued: peer.staged.length },
          'handshake did not complete within REKEY_ATTEMPT_TIME; giving up until there is new traffic',
        )
        peer.handshakeStartedMs = undefined
        peer.staged = []
        this.d.sessions.abandonInitiation(peer, now)
        peer.crypto.handshake = undefined
        this.d.onHealthChange()
        return
      case 'retry':
        // A host name may have moved (dynamic DNS): look it up again while handshakes keep failing.
        if (peer.cfg.endpoint && typeof parseIpv4(peer.cfg.endpoint.host) === 'string' && now - (peer.lastResolveMs ?? 0) >= DNS_RETRY_MS)
          this.d.resolveEndpoint(peer)
        hs.initiate(peer, 'retry (REKEY_TIMEOUT)')
        if (now - (peer.handshakeStartedMs ?? now) >= 2 * REKEY_TIMEOUT_MS) this.d.onHealthChange()
        return
      case 'keepalive':
        if (this.d.sessions.sendTransport(peer, new Uint8Array(0), now)) this.d.log.protocol({ peer: id }, 'sent keepalive')
        return
      case 'initiate':
        hs.initiate(peer, a.why)
        return
      case 'unresponsive':
        peer.unresponsiveSinceMs = now
        this.d.log.network({ peer: id }, 'peer is not answering; starting a new handshake')
        hs.initiate(peer, 'no reply to sent data')
        this.d.onHealthChange()
        return
      case 'rekey-on-receive':
        peer.rekeyOnRxDone = peer.current?.slot
        hs.initiate(peer, 'rekey: keypair nearing REJECT_AFTER_TIME')
    }
  }

  private logChanges(peer: PeerRuntime, now: number): void {
    const e = this.d.memory.endpointRaw(peer.slot)
    if (peer.lastLoggedEndpoint !== undefined && e !== 0 && e !== peer.lastLoggedEndpoint)
      this.d.log.network(
        { peer: peer.cfg.identity, endpoint: `${intToIp(endpointIp(e))}:${endpointPort(e)}` },
        'peer roamed to a new endpoint',
      )
    if (e !== 0) peer.lastLoggedEndpoint = e
    const st = peerState(peer, now, REJECT_AFTER_TIME_MS)
    if (peer.lastState !== undefined && st !== peer.lastState)
      this.d.log.info({ peer: peer.cfg.identity, from: peer.lastState, to: st }, 'peer state changed')
    peer.lastState = st
  }
}
