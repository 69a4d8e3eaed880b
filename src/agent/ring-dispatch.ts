/**
 * Drains the workers' rings on the control thread and routes each message: handshake datagrams to
 * Handshakes, packets waiting for a session to Sessions (starting a handshake), "session confirmed"
 * and "rekey needed" events to the peer's session. A failing message is logged, never thrown.
 */
import { MSG_CONFIRMED, MSG_HANDSHAKE, MSG_REKEY, MSG_STAGED, type RingConsumer } from '../ipc/ring.js'
import type { Handshakes } from './peers/handshakes.js'
import { PATH_MAGIC } from '../protocol/path-msg.js'
import type { AgentLogger } from '../log/logger.js'
import { endpointText } from './peers/peer-memory.js'
import type { PeerRuntime, PeerTable } from './peers/peer-table.js'
import type { Sessions } from './peers/sessions.js'

const STAGE_DROP_LOG_MS = 5000

export interface DispatchDeps {
  peers: PeerTable
  sessions: Sessions
  handshakes: Handshakes
  log: AgentLogger
  onSessionUp: (peer: PeerRuntime) => void
  clock?: () => number
  /** Path datagrams (probes, relay bind answers) and "traffic waits for a peer" (issue 20). */
  paths?: { datagram(b: Buffer, ip: number, port: number): void; wanted(peer: PeerRuntime): void }
}

export class RingDispatcher {
  private lastNoEndpointLog = 0

  constructor(private readonly d: DispatchDeps) {}

  async consume(c: RingConsumer, stopping: () => boolean): Promise<void> {
    while (!stopping()) {
      await c.waitForData(500)
      for (const m of c.drain()) this.dispatch(m.kind, m.payload, m.ip, m.port, m.peer, m.aux)
    }
  }

  dispatch(kind: number, payload: Buffer, ip: number, port: number, slot: number, aux: number): void {
    try {
      this.handle(kind, payload, ip, port, slot, aux)
    } catch (e) {
      this.d.log.error({ err: (e as Error).message }, 'error handling a control message')
    }
  }

  /**
   * Confirmations are unloseable: a full ring can drop the worker's message, but the promotion is
   * in shared memory, and this runs on every tick for the peers with a `next` keypair.
   */
  pollConfirmations(now: number): void {
    for (const peer of this.d.peers) {
      if (!peer.session.next) continue
      const slot = this.d.sessions.promotedByWorker(peer)
      if (slot === undefined) continue
      try {
        this.confirm(peer, slot, now)
      } catch (e) {
        this.d.log.error({ peer: peer.cfg.identity, err: (e as Error).message }, 'error confirming a session')
      }
    }
  }

  private confirm(peer: PeerRuntime, kpSlot: number, now: number): void {
    if (!this.d.handshakes.confirmed(peer, kpSlot, now)) return
    const endpoint = endpointText(this.d.sessions.endpointOf(peer))
    this.d.log.network({ peer: peer.cfg.identity, endpoint }, 'handshake complete (peer initiated); session up')
    this.d.onSessionUp(peer)
  }

  private handle(kind: number, payload: Buffer, ip: number, port: number, slot: number, aux: number): void {
    if (kind === MSG_HANDSHAKE) {
      if (payload[0] === PATH_MAGIC) this.d.paths?.datagram(payload, ip, port)
      else this.d.handshakes.handle(payload, ip, port)
      return
    }
    const peer = this.d.peers.get(slot)
    if (!peer) return
    const now = (this.d.clock ?? Date.now)()
    if (kind === MSG_STAGED) {
      if (!this.d.sessions.stage(peer, payload, now)) return // a session came up while this packet was in the ring
      if (!this.d.sessions.endpointOf(peer) && now - this.lastNoEndpointLog > STAGE_DROP_LOG_MS) {
        this.lastNoEndpointLog = now
        this.d.log.warn(
          { peer: peer.cfg.identity },
          'traffic for a peer with no endpoint: it has to connect to us first (or set Endpoint in the profile)',
        )
      }
      this.d.paths?.wanted(peer)
      this.d.handshakes.initiate(peer, 'traffic waiting')
    } else if (kind === MSG_CONFIRMED) {
      this.confirm(peer, aux, now)
    } else if (kind === MSG_REKEY) {
      this.d.handshakes.initiate(peer, 'rekey: keypair age or message count')
    }
  }
}
