/**
 * Handshakes: our initiations, answers to the peers' initiations, cookie replies and the
 * under-load (mac2) defence. The responder's crypto runs in a pool (workers/handshake.ts via
 * piscina); replay and flood checks and every state change stay here, on the control thread.
 */
import { packEndpoint } from '../../ipc/layout.js'
import sodium from 'sodium-native'
import { intToIp } from '../../common/ipv4.js'
import { identityFromPublicKey } from '../../config/identity.js'
import {
  COOKIE_REPLY_SIZE,
  INITIATION_SIZE,
  MAX_INITIATIONS_PER_PEER_PER_S,
  MSG_COOKIE_REPLY,
  MSG_INITIATION,
  MSG_RESPONSE,
  REKEY_TIMEOUT_JITTER_MAX_MS,
  REKEY_TIMEOUT_MS,
  RESPONSE_SIZE,
  UNDER_LOAD_HANDSHAKES_PER_S,
} from '../../protocol/constants.js'
import {
  type ConsumedInitiation,
  type CookieChecker,
  type LocalStatic,
  type SessionKeys,
  acceptInitiation,
  checkMac1,
  checkMac2,
  consumeCookieReply,
  consumeResponse,
  cookieChecker,
  createCookieReply,
  createInitiation,
  readReceiverIndex,
  refreshCookieSecret,
  writeMacs,
} from '../../protocol/noise.js'
import type { ConsumeTask, RespondTask } from '../../ipc/messages.js'
import type { KeypairSlots } from './keypairs.js'
import { SourceRateLimiter } from './rate-limit.js'
import type { AgentLogger } from '../../log/logger.js'
import type { PeerRuntime, PeerTable } from './peer-table.js'
import type { Sessions } from './sessions.js'
import type { SendDatagram } from './transport-send.js'

/** Initiations being processed in the pool at once; beyond this they are dropped (initiators retry). */
export const MAX_HANDSHAKES_IN_FLIGHT = 64
/** "No keypair slot" is logged at most this often. */
export const NO_SLOT_LOG_MS = 5000

/** Runs a task of workers/handshake.ts (in a piscina pool in the agent, in-process in tests). */
export type HandshakeTaskRunner = {
  (task: ConsumeTask): Promise<ConsumedInitiation | null>
  (task: RespondTask): Promise<{ msg: Uint8Array; keys: SessionKeys }>
}

export interface HandshakeDeps {
  local: LocalStatic
  peers: PeerTable
  sessions: Sessions
  keypairs: KeypairSlots
  send: SendDatagram
  runTask: HandshakeTaskRunner
  log: AgentLogger
  /** A session came up (we initiated: true; the peer's first data confirmed ours: see Sessions.confirm). */
  onSessionUp: (peer: PeerRuntime) => void
  clock?: () => number
  /** Handshake messages per second above which we are under load (mac2 and per-source limits). */
  underLoadPerS?: number
  /** The cookie secret; the agent's is shared with the workers (SharedCookieSecret). A private one otherwise. */
  cookie?: CookieChecker
}

export class Handshakes {
  private readonly cookie: CookieChecker
  private readonly recent: number[] = []
  private readonly limiter = new SourceRateLimiter()
  private inFlight = 0
  private lastNoSlotLog = -Infinity
  private noSlotCount = 0
  private closed = false
  private readonly now: () => number

  constructor(private readonly d: HandshakeDeps) {
    this.now = d.clock ?? Date.now
    this.cookie = d.cookie ?? cookieChecker(this.now())
  }

  /** Replaces the cookie secret once it is COOKIE_REFRESH_TIME old, also when no handshake comes (the workers use it). */
  refreshCookieSecret(now: number): void {
    refreshCookieSecret(this.cookie, now)
  }

  close(): void {
    this.closed = true
  }

  /**
   * Sends an initiation unless one went out within REKEY_TIMEOUT; `now: true` (an operator's rekey)
   * sends one at once all the same.
   */
  initiate(peer: PeerRuntime, why: string, opts: { now?: boolean } = {}): void {
    const now = this.now()
    if (!opts.now && now - peer.hs.lastSentMs < REKEY_TIMEOUT_MS) return
    const ep = this.d.sessions.endpointOf(peer)
    if (!ep) {
      this.d.log.debug({ peer: peer.cfg.identity }, 'cannot initiate a handshake: no endpoint known; waiting for the peer')
      return
    }
    const kp = this.d.sessions.beginInitiation(peer, now)
    if (!kp) {
      this.noSlot(peer, 'initiation deferred', now)
      return
    }
    const msg = createInitiation(this.d.local, peer.crypto, kp.index, now)
    peer.hs.lastSentMs = now
    peer.hs.lastSentTo = packEndpoint(ep.ip, ep.port)
    if (peer.hs.startedMs === undefined) peer.hs.startedMs = now
    peer.hs.nextRetryMs = now + REKEY_TIMEOUT_MS + sodium.randombytes_uniform(REKEY_TIMEOUT_JITTER_MAX_MS + 1)
    this.d.send(msg, ep.ip, ep.port)
    this.d.log.protocol({ peer: peer.cfg.identity, endpoint: `${intToIp(ep.ip)}:${ep.port}`, reason: why }, 'sent handshake initiation')
  }

  /**
   * The initiator spoke on our `next` keypair: it becomes current (Sessions.confirm), our own initiation
   * in flight, if any, is dropped with its handshake state, and the attempt is over.
   */
  confirmed(peer: PeerRuntime, kpSlot: number, now: number): boolean {
    const ours = peer.session.pendingSlot !== undefined
    if (!this.d.sessions.confirm(peer, kpSlot, now)) return false
    if (ours) peer.crypto.handshake = undefined
    peer.hs.startedMs = undefined
    return true
  }

  /**
   * The one way to give up on a handshake (REKEY_ATTEMPT_TIME passed): our initiation, its handshake
   * state and the packets waiting for it are dropped; new traffic starts a new attempt.
   */
  giveUp(peer: PeerRuntime, now: number): number {
    this.d.sessions.abandonInitiation(peer, now)
    peer.crypto.handshake = undefined
    peer.hs.startedMs = undefined
    return this.d.sessions.dropStaged(peer)
  }

  /** One handshake datagram (initiation, response or cookie reply) from ip:port. */
  handle(msg: Buffer, ip: number, port: number): void {
    const now = this.now()
    const type = msg[0]
    const from = `${intToIp(ip)}:${port}`
    if (type === MSG_INITIATION || type === MSG_RESPONSE) {
      if (msg.length !== (type === MSG_INITIATION ? INITIATION_SIZE : RESPONSE_SIZE) || !checkMac1(this.d.local, msg)) {
        this.d.log.debug({ from, type }, 'dropped handshake message: bad size or mac1')
        return
      }
      if (this.underLoad(now)) {
        if (!checkMac2(this.cookie, msg, ip, port, now)) {
          this.d.send(createCookieReply(this.d.local, this.cookie, msg, ip, port, now), ip, port)
          this.d.log.protocol({ from }, 'under load: sent cookie reply')
          return
        }
        // A valid cookie proves the address, not good intent: each address gets its own small share.
        if (!this.limiter.allow(ip, now)) {
          this.d.log.debug({ from }, 'under load: handshake over the per-address rate, dropped')
          return
        }
      }
    }
    if (type === MSG_INITIATION) this.startAnswer(msg, ip, port)
    else if (type === MSG_RESPONSE) this.handleResponse(msg, ip, port, now)
    else if (type === MSG_COOKIE_REPLY && msg.length === COOKIE_REPLY_SIZE) this.handleCookieReply(msg, now)
  }

  /** Logs (at most once per NO_SLOT_LOG_MS) that a handshake could not get a keypair slot. */
  private noSlot(peer: PeerRuntime, what: string, now: number): void {
    this.noSlotCount++
    if (now - this.lastNoSlotLog < NO_SLOT_LOG_MS) return
    this.d.log.warn(
      { peer: peer.cfg.identity, held: this.d.keypairs.heldBy(peer.slot), free: this.d.keypairs.freeCount, times: this.noSlotCount },
      `no keypair slot free: ${what} (slots return after the quarantine)`,
    )
    this.lastNoSlotLog = now
    this.noSlotCount = 0
  }

  private underLoad(now: number): boolean {
    this.recent.push(now)
    while (this.recent.length && now - this.recent[0] > 1000) this.recent.shift()
    return this.recent.length > (this.d.underLoadPerS ?? UNDER_LOAD_HANDSHAKES_PER_S)
  }

  private handleResponse(msg: Buffer, ip: number, port: number, now: number): void {
    const peer = this.d.peers.byInitiationIndex(readReceiverIndex(msg, 8))
    if (!peer || peer.session.pendingSlot === undefined) return
    const keys = consumeResponse(this.d.local, peer.crypto, msg)
    const from = `${intToIp(ip)}:${port}`
    if (!keys) {
      this.d.log.network({ peer: peer.cfg.identity, from }, 'handshake response does not authenticate: dropped')
      return
    }
    if (!this.d.sessions.completeAsInitiator(peer, keys, { ip, port }, now)) return
    if (now >= peer.hs.lastSentMs) peer.hs.rttMs = now - peer.hs.lastSentMs
    peer.hs.startedMs = undefined
    this.d.log.network({ peer: peer.cfg.identity, endpoint: from }, 'handshake complete (we initiated); session up')
    this.d.onSessionUp(peer)
  }

  /**
   * A cookie reply names the receiver index of the message it answers: our initiation (its index
   * is in the peer table) or our response (its index is the `next` keypair's). Either way, as in
   * WireGuard, the cookie is stored and the next handshake message we send that peer carries mac2:
   * a retried initiation of ours at once, or our answer to the initiator's retry.
   */
  private handleCookieReply(msg: Buffer, now: number): void {
    const index = readReceiverIndex(msg, 4)
    const initiating = this.d.peers.byInitiationIndex(index)
    const peer = initiating ?? this.d.peers.get(this.d.keypairs.ownerOf(index) ?? -1)
    if (!peer || !consumeCookieReply(peer.crypto, msg, now)) return
    if (initiating) {
      // As WireGuard: the cookie only gives the next retransmission (at REKEY_TIMEOUT) its mac2. Our
      // initiation stays pending: anyone who sees it on the wire can forge a cookie reply for it (it needs
      // only the responder's public key), and retrying at once would drop the real response to it.
      this.d.log.protocol({ peer: peer.cfg.identity }, 'peer is under load: got a cookie; the next retry carries mac2')
    } else {
      this.d.log.protocol({ peer: peer.cfg.identity }, 'peer is under load: got a cookie for our response; the next one carries mac2')
    }
  }

  private startAnswer(msg: Buffer, ip: number, port: number): void {
    const from = `${intToIp(ip)}:${port}`
    if (this.inFlight >= MAX_HANDSHAKES_IN_FLIGHT) {
      this.d.log.debug({ from }, 'handshake pool saturated: initiation dropped (the initiator retries)')
      return
    }
    this.inFlight++
    void this.answer(msg, ip, port)
      .catch((e: Error) => this.d.log.error({ from, err: e.message }, 'handshake task failed'))
      .finally(() => this.inFlight--)
  }

  /** Responder: decrypt in the pool, check replay/flood here, build the response in the pool, install. */
  private async answer(msg: Buffer, ip: number, port: number): Promise<void> {
    const from = `${intToIp(ip)}:${port}`
    const local = this.d.local
    // The flood check below measures the gap between the peer's initiations as they arrived here. Measured
    // after the pool, time an initiation waited in a busy pool would shrink that gap: two sent seconds apart
    // could leave the pool together, and the second, the one the peer still holds state for, would be
    // refused as a flood while the first was answered in vain.
    const arrived = this.now()
    const ci = await this.d.runTask({ op: 'consume', msg, privateKey: local.privateKey, publicKey: local.publicKey, nowMs: arrived })
    if (this.closed) return
    const peer = ci ? this.d.peers.byPublicKey(ci.peerPublicKey) : undefined
    if (!ci) {
      this.d.log.network({ from }, 'handshake initiation that does not authenticate (not meant for our key): dropped')
      return
    }
    if (!peer) {
      const key = Buffer.from(ci.peerPublicKey).toString('base64')
      this.d.log.network(
        { from, key, identity: identityFromPublicKey(ci.peerPublicKey) },
        'handshake initiation from a key that is not a peer: dropped (if it should be one: `enclave add <key>`)',
      )
      return
    }
    const verdict = acceptInitiation(peer.crypto, ci, arrived, 1000 / MAX_INITIATIONS_PER_PEER_PER_S)
    if (verdict !== 'ok') {
      this.d.log.protocol({ peer: peer.cfg.identity, from, verdict }, 'handshake initiation refused')
      return
    }
    const kp = this.d.keypairs.alloc(peer.slot, this.now())
    if (!kp) {
      this.noSlot(peer, 'initiation refused', this.now())
      return
    }
    const { slot, index } = kp
    const state = peer.crypto.handshake!
    peer.crypto.handshake = undefined
    const r = await this.d.runTask({
      op: 'respond',
      peerPublicKey: peer.cfg.publicKey,
      presharedKey: peer.crypto.presharedKey,
      state,
      localIndex: index,
      nowMs: this.now(),
    })
    if (this.closed || this.d.peers.get(peer.slot) !== peer) {
      this.d.keypairs.retire(slot, this.now())
      return
    }
    const resp = Buffer.from(r.msg)
    writeMacs(resp, peer.crypto, this.now())
    this.d.sessions.installAsResponder(peer, slot, index, r.keys, { ip, port }, this.now())
    this.d.send(resp, ip, port)
    this.d.log.protocol({ peer: peer.cfg.identity, from }, 'answered handshake initiation')
  }
}
