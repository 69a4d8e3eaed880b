/**
 * WireGuard's timer rules (whitepaper §6) as a pure function of one peer's timestamps and the
 * clock, so they can be tested with an injected `now`. The control thread applies the actions.
 *
 *  - keypairs older than REJECT_AFTER_TIME are erased;
 *  - an unanswered initiation is retried every REKEY_TIMEOUT (+ jitter, applied by the caller)
 *    until REKEY_ATTEMPT_TIME, then abandoned until new traffic;
 *  - persistent keepalive every N seconds of silence on our side;
 *  - passive keepalive: data received but nothing sent for KEEPALIVE_TIMEOUT;
 *  - data sent but nothing received for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: new handshake;
 *  - the initiator rekeys on receive at REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
 *    (REKEY_AFTER_TIME and REKEY_AFTER_MESSAGES on send are signalled by the workers).
 */
import { KEEPALIVE_TIMEOUT_MS, REJECT_AFTER_TIME_MS, REKEY_ATTEMPT_TIME_MS, REKEY_TIMEOUT_MS } from './constants.js'

export type KeypairWhich = 'previous' | 'current' | 'next'

export interface PeerTimerState {
  lastRxAny: number
  lastRxData: number
  lastTxAny: number
  lastTxData: number
  /** The first data sent after the last authenticated receive (WireGuard's new-handshake timer). */
  firstUnanswered?: number
  persistentKeepaliveS: number
  handshakeStartedMs?: number
  nextRetryMs: number
  lastInitiationSentMs: number
  keypairs: Partial<Record<KeypairWhich, { createdMs: number; isInitiator: boolean }>>
  unresponsive: boolean
  /** The current keypair already triggered its receive-side rekey. */
  rekeyOnRxDone: boolean
}

export type TimerAction =
  | { kind: 'expire'; which: KeypairWhich }
  | { kind: 'give-up' }
  | { kind: 'retry' }
  | { kind: 'keepalive'; why: 'persistent' | 'passive' }
  | { kind: 'initiate'; why: string }
  | { kind: 'unresponsive' }
  | { kind: 'rekey-on-receive' }

export function timerActions(s: PeerTimerState, now: number): TimerAction[] {
  const out: TimerAction[] = []
  let current = s.keypairs.current
  for (const which of ['previous', 'current', 'next'] as const) {
    const kp = s.keypairs[which]
    if (kp && now - kp.createdMs >= REJECT_AFTER_TIME_MS) {
      out.push({ kind: 'expire', which })
      if (which === 'current') current = undefined
    }
  }
  if (s.handshakeStartedMs !== undefined && now >= s.nextRetryMs) {
    out.push(now - s.handshakeStartedMs >= REKEY_ATTEMPT_TIME_MS ? { kind: 'give-up' } : { kind: 'retry' })
  }
  if (s.persistentKeepaliveS > 0 && now - Math.max(s.lastTxAny, s.lastInitiationSentMs) >= s.persistentKeepaliveS * 1000) {
    out.push(current ? { kind: 'keepalive', why: 'persistent' } : { kind: 'initiate', why: 'persistent keepalive' })
  } else if (current && s.lastRxData > s.lastTxAny && now - s.lastRxData >= KEEPALIVE_TIMEOUT_MS) {
    out.push({ kind: 'keepalive', why: 'passive' })
  }
  // WireGuard's new-handshake timer: data sent, and nothing authenticated received for KEEPALIVE +
  // REKEY_TIMEOUT since the first of it (not since the last packet received: after an idle minute, the
  // first new packet must not count as 15 s unanswered).
  const unansweredSince = Math.max(s.firstUnanswered ?? s.lastTxData, current?.createdMs ?? 0)
  if (
    !s.unresponsive &&
    s.lastTxData > s.lastRxAny &&
    (s.firstUnanswered ?? s.lastTxData) > s.lastRxAny &&
    now - s.lastTxData < 60_000 &&
    now - unansweredSince >= KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS
  ) {
    out.push({ kind: 'unresponsive' })
  }
  if (
    current?.isInitiator &&
    !s.rekeyOnRxDone &&
    s.lastRxData > current.createdMs &&
    now - current.createdMs >= REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS
  ) {
    out.push({ kind: 'rekey-on-receive' })
  }
  return out
}
