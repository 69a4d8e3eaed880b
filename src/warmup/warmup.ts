/**
 * The data path's JIT warm-up, run by every data-plane worker while no traffic needs it (between polls
 * that find nothing, from its start).
 *
 * V8 compiles a function with TurboFan only once it has run enough, and it does so on a background
 * thread, which then competes for a CPU with the packet that made the function hot. At interactive
 * rates (a ping every 10 ms, an SSH session) the hot path's functions crossed that threshold one by one
 * over the first tens of seconds of traffic, and each compile delayed a round trip by 1-4 ms (issue 23:
 * `perf` showed the worker queueing OptimizingCompileDispatcher jobs during the pings, and the job's
 * thread running on the CPU the packet was waiting for).
 *
 * So each worker first sends synthetic traffic through the same Pipeline code, on a session pair of
 * its own (src/warmup/synthetic.ts: its own shared memory, keys and conntrack, none of the agent's):
 * ICMP echo, UDP and TCP, both directions, to a LAN behind an exit node and to the node itself, single
 * packets and small batches, new flows and established ones, through the offload (vnet header) paths
 * when the TUN has them. Every branch a real packet takes has then been seen, so the optimised code
 * that results does not deoptimise on the first real packet of another kind.
 * The tables go through structuredClone, as the worker's own arrive (postMessage): the same object
 * shapes, so the compiled code's property accesses stay monomorphic. Half-way, new tables replace
 * them, as a reload does; every REKEY_EVERY rounds a new session starts, the responder's side
 * receive-only until the first packet confirms it, as after a handshake. The clock the
 * pipelines see moves 5 ms a round (20 s in all), so the once-a-second work (conntrack sweeps, token buckets) has run too.
 */
import { coalesceForTun, segmentPacket, VNET_HDR_LEN } from '../dataplane/offload.js'
import { HEADROOM, type Pipeline } from '../dataplane/pipeline.js'
import { A_VA, B_VA, LAN, deliver, ipv4icmp, ipv4tcp, ipv4udp, pairTables, rekeyPair, sessionPair } from './synthetic.js'
import { WARMUP_ROUNDS } from '../dataplane/warmup-rounds.js'

export interface WarmupOptions {
  mtu: number
  /** The worker's TUN has vnet headers (TSO/CSUM): packets come through segmentPacket and go out through coalesceForTun. */
  offload: boolean
  /** ...and UDP merging on write (coalesceForTun's udpGro). */
  uso: boolean
  /** Rounds of traffic (each: a request and its answer); see WARMUP_ROUNDS. */
  rounds?: number
}

export interface WarmupResult {
  rounds: number
  /** Packets sent through outbound(), and how many the other side's inbound() accepted for the TUN. */
  packets: number
  accepted: number
  ms: number
}

export { WARMUP_ROUNDS }

/** A new session every this many rounds: a real one's first packets (counter 0, the responder's confirmation) take branches of their own. */
const REKEY_EVERY = 500

const SIZES = [84, 64, 1400, 576, 120, 1280]
const PEER_EP = 0xc6120002 // the endpoint each synthetic side has for the other
const LAN_HOST = LAN + 250
const FLOWS = 48

class Side {
  readonly u32: Uint32Array
  readonly offs = new Int32Array(256)
  readonly lens = new Int32Array(256)
  readonly segs = new Int32Array(256)
  readonly cursor = new Int32Array(1)
  readonly udpGro: Uint32Array | null
  constructor(
    readonly pipe: Pipeline,
    uso: boolean,
  ) {
    const o = pipe.oSlab
    this.u32 = new Uint32Array(o.buffer, o.byteOffset, o.byteLength >> 2)
    const i = pipe.iSlab
    this.udpGro = uso ? new Uint32Array(i.buffer, i.byteOffset, i.byteLength >> 2) : null
  }
}

/**
 * The warm-up, in slices: the worker runs one slice whenever its poll finds nothing to do, so a real
 * packet never waits behind more than one slice, and "ready" still means the loop reads packets.
 */
export class DataPathWarmup {
  readonly result: WarmupResult
  private readonly pair: ReturnType<typeof sessionPair>
  private readonly c: Side
  private readonly e: Side
  private readonly maxSize: number
  /** Rounds in all. */
  private readonly total: number
  private r = 0
  private readonly t0 = performance.now()
  private readonly clock0 = Date.now()

  constructor(private readonly o: WarmupOptions) {
    const pair = sessionPair(8, () => undefined, undefined, o.offload)
    for (const p of [pair.client, pair.exit]) p.tables = structuredClone(p.tables)
    this.pair = pair
    this.c = new Side(pair.client, o.uso)
    this.e = new Side(pair.exit, o.uso)
    this.maxSize = Math.min(o.mtu, 1400)
    this.total = o.rounds ?? WARMUP_ROUNDS
    this.result = { rounds: 0, packets: 0, accepted: 0, ms: 0 }
  }

  get done(): boolean {
    return this.r >= this.total
  }

  /** Runs up to `rounds` more rounds, and stops early once `budgetMs` has passed (after one round at least); returns whether any remain. */
  step(rounds: number, budgetMs = Number.POSITIVE_INFINITY): boolean {
    const end = Math.min(this.total, this.r + rounds)
    const until = performance.now() + budgetMs
    for (; this.r < end; ) {
      this.round(this.r++)
      if (performance.now() >= until) break
    }
    this.result.rounds = this.r
    this.result.ms = Math.round(performance.now() - this.t0)
    return !this.done
  }

  private round(r: number): void {
    const { c, e, o } = this
    if (r % REKEY_EVERY === REKEY_EVERY >> 1) rekeyPair(this.pair, Math.floor(r / REKEY_EVERY) % 32)
    if (r === this.total >> 1) {
      c.pipe.tables = structuredClone(pairTables(A_VA, B_VA, false))
      e.pipe.tables = structuredClone(pairTables(B_VA, A_VA, true))
    }
    const now = this.clock0 + r * 5
    c.pipe.setClock(now)
    e.pipe.setClock(now)
    const n = (r & 7) === 7 ? 4 : 1
    const kind = r % 5 // 0, 1: ping through the exit node; 2: ping the node itself; 3: UDP; 4: TCP
    const size = Math.min(this.maxSize, SIZES[(r >> 3) % SIZES.length])
    const flow = r % FLOWS
    const fresh = r < FLOWS * 5 // the first time round, every flow is new
    const dst = kind === 2 ? B_VA : LAN_HOST
    for (let i = 0; i < n; i++) {
      const port = 20000 + flow * 8 + i
      if (kind <= 2) packet(c, i, o.offload, (b, off) => ipv4icmp(b, off, size, A_VA, dst, 8, port, r))
      else if (kind === 3) packet(c, i, o.offload, (b, off) => ipv4udp(b, off, size, A_VA, dst, port))
      else packet(c, i, o.offload, (b, off) => ipv4tcp(b, off, Math.max(size, 40), A_VA, dst, port, 443, r, fresh ? 0x02 : 0x10))
    }
    this.result.packets += n
    this.result.accepted += through(c, e, n, o.offload)
    // The answers, from the LAN host (or the node) back to the client.
    for (let i = 0; i < n; i++) {
      const port = 20000 + flow * 8 + i
      if (kind <= 2) packet(e, i, o.offload, (b, off) => ipv4icmp(b, off, size, dst, A_VA, 0, port, r))
      else if (kind === 3)
        packet(e, i, o.offload, (b, off) => {
          ipv4udp(b, off, size, dst, A_VA, 8080) // its destination port is 8080: turn it round
          b[off + 22] = port >> 8
          b[off + 23] = port & 255
        })
      else packet(e, i, o.offload, (b, off) => ipv4tcp(b, off, Math.max(size, 40), dst, A_VA, 443, port, r, fresh ? 0x12 : 0x10))
    }
    this.result.packets += n
    this.result.accepted += through(e, c, n, o.offload)
  }
}

/** The whole warm-up at once. */
export function warmUp(o: WarmupOptions): WarmupResult {
  const w = new DataPathWarmup(o)
  w.step(Number.POSITIVE_INFINITY)
  return w.result
}

/** Puts packet i of an outbound batch where the worker's TUN read would leave it. */
function packet(s: Side, i: number, offload: boolean, write: (b: Uint8Array, off: number) => void): void {
  const p = s.pipe
  if (!offload) {
    write(p.oSlab, i * p.slot + HEADROOM)
    s.pipe.oLens[i] = (p.oSlab[i * p.slot + HEADROOM + 2] << 8) | p.oSlab[i * p.slot + HEADROOM + 3]
    return
  }
  // An offload TUN read: a vnet header (no GSO, no checksum to finish) and the packet, in the arena.
  const a = p.arenaBase
  p.oSlab.fill(0, a, a + VNET_HDR_LEN)
  write(p.oSlab, a + VNET_HDR_LEN)
  const len = VNET_HDR_LEN + ((p.oSlab[a + VNET_HDR_LEN + 2] << 8) | p.oSlab[a + VNET_HDR_LEN + 3])
  segmentPacket(p.oSlab, s.u32, a, len, 0, p.slot, HEADROOM, i, p.batch - i, p.oLens)
}

/** from.outbound -> the network -> to.inbound -> (offload) the TUN write's coalescing. Returns the packets accepted. */
function through(from: Side, to: Side, n: number, offload: boolean): number {
  if (from.pipe.outbound(n) !== n) return 0
  deliver(from.pipe, to.pipe, n, PEER_EP)
  const writes = to.pipe.inbound(n)
  if (offload && writes > 0) {
    const p = to.pipe
    to.cursor[0] = 0
    while (to.cursor[0] < n) {
      const k = coalesceForTun(
        p.iSlab,
        p.slot,
        HEADROOM,
        p.wLens,
        n,
        p.iArenaBase,
        p.iSlab.length,
        to.offs,
        to.lens,
        to.cursor,
        to.udpGro,
        to.segs,
      )
      if (k <= 0) break
    }
  }
  return writes
}
