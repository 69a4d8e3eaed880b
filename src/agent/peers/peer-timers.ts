/**
 * Applies WireGuard's timer rules to each peer every tick. The rules themselves are the pure
 * function src/protocol/timers.ts; this file feeds it one peer's state and carries out its actions
 * (through Sessions and Handshakes), probes exit nodes that stopped answering, and logs roaming and
 * state changes.
 */
import { intToIp, parseIpv4 } from '../../common/ipv4.js'
import { endpointIp, endpointPort } from '../../ipc/layout.js'
import { REJECT_AFTER_TIME_MS, REKEY_TIMEOUT_MS } from '../../protocol/constants.js'
import { type PeerTimerState, type TimerAction, timerActions } from '../../protocol/timers.js'
import type { Handshakes } from './handshakes.js'
import type { AgentLogger } from '../../log/logger.js'
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

  /** A session came up (we initiated, or the peer's was confirmed): the peer answers again. */
  sessionUp(peer: PeerRuntime): void {
    peer.health.unresponsiveSinceMs = undefined
  }

  tick(peer: PeerRuntime, now: number): void {
    const kps: PeerTimerState['keypairs'] = {}
    for (const w of ['previous', 'current', 'next'] as const) if (peer.session[w]) kps[w] = peer.session[w]
    const state: PeerTimerState = {
      ...this.d.memory.times(peer.slot),
      persistentKeepaliveS: peer.cfg.persistentKeepalive,
      handshakeStartedMs: peer.hs.startedMs,
      nextRetryMs: peer.hs.nextRetryMs,
      lastInitiationSentMs: peer.hs.lastSentMs,
      keypairs: kps,
      unresponsive: peer.health.unresponsiveSinceMs !== undefined,
      rekeyOnRxDone: peer.health.rekeyOnRxDone === peer.session.current?.slot,
    }
    for (const a of timerActions(state, now)) this.apply(peer, a, now)
    // A host name may have moved (dynamic DNS): look it up again while a handshake attempt keeps failing.
    // Checked here, not only at a retry: steady traffic starts initiations that push the retry back.
    if (
      peer.hs.startedMs !== undefined &&
      now - peer.hs.startedMs >= REKEY_TIMEOUT_MS &&
      peer.cfg.endpoint &&
      typeof parseIpv4(peer.cfg.endpoint.host) === 'string' &&
      now - (peer.ep.lastResolveMs ?? 0) >= DNS_RETRY_MS
    )
      this.d.resolveEndpoint(peer)
    if (peer.cfg.availableRoutes.length && peer.health.unresponsiveSinceMs !== undefined && now - peer.hs.lastSentMs >= HEALTH_PROBE_MS)
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
          { peer: id, queued: hs.giveUp(peer, now) },
          'handshake did not complete within REKEY_ATTEMPT_TIME; giving up until there is new traffic',
        )
        this.d.onHealthChange()
        return
      case 'retry':
        hs.initiate(peer, 'retry (REKEY_TIMEOUT)')
        if (now - (peer.hs.startedMs ?? now) >= 2 * REKEY_TIMEOUT_MS) this.d.onHealthChange()
        return
      case 'keepalive':
        if (this.d.sessions.sendTransport(peer, new Uint8Array(0), now)) this.d.log.protocol({ peer: id }, 'sent keepalive')
        return
      case 'initiate':
        hs.initiate(peer, a.why)
        return
      case 'unresponsive':
        peer.health.unresponsiveSinceMs = now
        this.d.log.network({ peer: id }, 'peer is not answering; starting a new handshake')
        hs.initiate(peer, 'no reply to sent data')
        this.d.onHealthChange()
        return
      case 'rekey-on-receive':
        peer.health.rekeyOnRxDone = peer.session.current?.slot
        hs.initiate(peer, 'rekey: keypair nearing REJECT_AFTER_TIME')
    }
  }

  private logChanges(peer: PeerRuntime, now: number): void {
    const e = this.d.memory.endpointRaw(peer.slot)
    if (peer.seen.endpoint !== undefined && e !== 0 && e !== peer.seen.endpoint)
      this.d.log.network(
        { peer: peer.cfg.identity, endpoint: `${intToIp(endpointIp(e))}:${endpointPort(e)}` },
        'peer roamed to a new endpoint',
      )
    if (e !== 0) peer.seen.endpoint = e
    const st = peerState(peer, now, REJECT_AFTER_TIME_MS)
    if (peer.seen.state !== undefined && st !== peer.seen.state)
      this.d.log.info({ peer: peer.cfg.identity, from: peer.seen.state, to: st }, 'peer state changed')
    peer.seen.state = st
  }
}
