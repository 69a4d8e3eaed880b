/**
 * The hub's UDP relay (src/hub/relay.ts) against the direct path, on loopback, in one run: two plain UDP
 * sockets (connected, as an agent's would be to its endpoint) exchange WireGuard-sized transport
 * datagrams (type 4, 1,452 bytes) both ways at once, first directly, then through a UdpRelay running in
 * its own worker thread (as the hub would run it: off the senders' event loop), with its rate limits
 * raised out of the way so the relay's own cost is measured. Each direction keeps a window of datagrams
 * in flight (a sender sends more as the receiver counts them, like a transport's window) so the numbers
 * are what is delivered, not what the kernel drops; datagrams lost anyway are counted and the window
 * restarts after 20 ms without progress.
 * Direct and relayed measurements alternate (rounds), so that load from elsewhere on the machine falls
 * on both alike; the result is the median of each: delivered datagrams/s and Mbit/s (UDP payload), and
 * relayed / direct. `node lib/bench/relay.js [seconds] [rounds]` runs it alone.
 */
import dgram from 'node:dgram'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { UdpRelay, parseRelayBound, parseRelayChallenge, relayBindDatagram, relayConfirmDatagram } from '../src/hub/relay.js'
import { createLogger } from '../src/log/logger.js'

export const RELAY_BENCH_SIZE = 1452
const WINDOW = 256

export interface RelayBenchResult {
  case: 'udp-relay'
  size: number
  /** Seconds per measurement, and rounds of (direct, relayed); the numbers are medians. */
  seconds: number
  rounds: number
  direct_dps: number
  direct_mbps: number
  direct_lost: number
  relay_dps: number
  relay_mbps: number
  relay_lost: number
  relay_forwarded: number
  relay_dropped: number
  /** The relay thread's event-loop utilisation while relaying (1 = the relay was the bottleneck). */
  relay_thread_busy: number
  /** Median relayed / median direct, and each round's ratio. */
  ratio: number
  ratios: number[]
}

interface Flow {
  delivered: number
  lost: number
}

function wgData(size: number): Buffer {
  const b = Buffer.alloc(size, 0x5a)
  b[0] = 4
  b[1] = 0
  b[2] = 0
  b[3] = 0
  return b
}

async function udpSocket(): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  return s
}

async function connect(s: dgram.Socket, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => s.connect(port, '127.0.0.1', (e?: Error) => (e ? reject(e) : resolve())))
}

/**
 * Both directions at once for `seconds`: x sends to its connected peer, y to its own; each direction
 * keeps WINDOW datagrams in flight. Returns what was delivered in all.
 */
async function exchange(x: dgram.Socket, y: dgram.Socket, seconds: number): Promise<Flow> {
  const msg = wgData(RELAY_BENCH_SIZE)
  let running = true
  const total: Flow = { delivered: 0, lost: 0 }
  const dir = (from: dgram.Socket, to: dgram.Socket) => {
    let sent = 0
    let got = 0
    let lost = 0
    let seen = 0
    const pump = () => {
      while (running && sent - got - lost < WINDOW) {
        from.send(msg)
        sent++
      }
    }
    to.on('message', () => {
      got++
      pump()
    })
    const stall = setInterval(() => {
      if (got === seen && sent - got - lost > 0) {
        lost = sent - got
        pump()
      }
      seen = got
    }, 20)
    return {
      start: pump,
      stop: () => {
        clearInterval(stall)
        to.removeAllListeners('message')
        total.delivered += got
        total.lost += lost
      },
    }
  }
  const ab = dir(x, y)
  const ba = dir(y, x)
  ab.start()
  ba.start()
  await new Promise((r) => setTimeout(r, seconds * 1000))
  running = false
  ab.stop()
  ba.stop()
  // let what is in flight drain before the sockets are reused or closed
  await new Promise((r) => setTimeout(r, 50))
  return total
}

export async function runRelayBench(seconds = 2, rounds = 3): Promise<RelayBenchResult> {
  const a = await udpSocket()
  const b = await udpSocket()
  await connect(a, b.address().port)
  await connect(b, a.address().port)
  // the relay in a worker thread, as the hub would run it
  const worker = new Worker(new URL(import.meta.url), { workerData: { relayBench: true } })
  const ra = await udpSocket()
  const rb = await udpSocket()
  try {
    const grant = await new Promise<{ A: { port: number; token: string }; B: { port: number; token: string } }>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    await connect(ra, grant.A.port)
    await connect(rb, grant.B.port)
    for (const [s, tok] of [
      [ra, grant.A.token],
      [rb, grant.B.token],
    ] as const) {
      const ok = new Promise<void>((resolve) =>
        s.on('message', (m) => {
          const c = parseRelayChallenge(m)
          if (c) s.send(relayConfirmDatagram(c.token, c.cookie))
          else if (parseRelayBound(m) === tok) resolve()
        }),
      )
      s.send(relayBindDatagram(tok))
      await ok
      s.removeAllListeners('message')
    }
    await exchange(a, b, 0.3) // warm-up
    await exchange(ra, rb, 0.3)
    // direct and relayed alternate, so that load from elsewhere on the machine hits both alike
    const direct: Flow[] = []
    const relayed: Flow[] = []
    const busy: number[] = []
    for (let i = 0; i < rounds; i++) {
      direct.push(await exchange(a, b, seconds))
      const elu0 = worker.performance.eventLoopUtilization()
      relayed.push(await exchange(ra, rb, seconds))
      busy.push(worker.performance.eventLoopUtilization(elu0).utilization)
    }
    const stats = await new Promise<{ packets: number; dropped: Record<string, number> }>((resolve) => {
      worker.once('message', resolve)
      worker.postMessage('stats')
    })
    const med = (fs: Flow[]) => [...fs].sort((x, y) => x.delivered - y.delivered)[Math.floor(fs.length / 2)]
    const d = med(direct)
    const r = med(relayed)
    const dps = (f: Flow) => Math.round(f.delivered / seconds)
    const mbps = (f: Flow) => +((f.delivered * RELAY_BENCH_SIZE * 8) / seconds / 1e6).toFixed(1)
    return {
      case: 'udp-relay',
      size: RELAY_BENCH_SIZE,
      seconds,
      rounds,
      direct_dps: dps(d),
      direct_mbps: mbps(d),
      direct_lost: direct.reduce((s, f) => s + f.lost, 0),
      relay_dps: dps(r),
      relay_mbps: mbps(r),
      relay_lost: relayed.reduce((s, f) => s + f.lost, 0),
      relay_forwarded: stats.packets,
      relay_dropped: Object.values(stats.dropped).reduce((s, n) => s + n, 0),
      relay_thread_busy: +(busy.reduce((s, x) => s + x, 0) / busy.length).toFixed(2),
      ratio: +(r.delivered / d.delivered).toFixed(2),
      ratios: direct.map((f, i) => +(relayed[i].delivered / f.delivered).toFixed(2)),
    }
  } finally {
    a.close()
    b.close()
    ra.close()
    rb.close()
    await worker.terminate()
  }
}

export function relayBenchLine(r: RelayBenchResult): string {
  return `UDP relay, ${r.size} B WireGuard data both ways on loopback, median of ${r.rounds} x ${r.seconds} s alternating: direct ${r.direct_dps} datagrams/s (${r.direct_mbps} Mbit/s), relayed ${r.relay_dps} datagrams/s (${r.relay_mbps} Mbit/s) = ${r.ratio}x direct (rounds ${r.ratios.join(', ')}; target >= 0.5x: ${r.ratio >= 0.5 ? 'MET' : 'NOT MET'}); lost ${r.direct_lost} / ${r.relay_lost}, relay dropped ${r.relay_dropped}; relay thread busy ${Math.round(r.relay_thread_busy * 100)}%`
}

/** The worker: a relay with one pair and its limits out of the way. */
async function relayWorker(): Promise<void> {
  const port = parentPort
  if (!port) return
  const relay = new UdpRelay({
    log: createLogger(0, 'logfmt', { out: { write: () => undefined } }),
    host: '127.0.0.1',
    pairBytesPerSec: 1e12,
    pairPacketsPerSec: 1e9,
    hubBytesPerSec: 1e12,
    hubPacketsPerSec: 1e9,
    socketBufferBytes: 4 << 20,
  })
  const grant = await relay.allocate('bench', 'A', 'B')
  port.on('message', () => {
    const s = relay.stats()
    port.postMessage({ packets: s.packets, dropped: s.dropped })
  })
  port.postMessage(grant)
}

if (!isMainThread && (workerData as { relayBench?: boolean } | null)?.relayBench) await relayWorker()
else if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await runRelayBench(Number(process.argv[2] ?? 2), Number(process.argv[3] ?? 3))
  console.log(JSON.stringify(r))
  console.log(relayBenchLine(r))
}
