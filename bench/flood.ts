/**
 * Handshake flood: a legitimate peer rekeys while spoofed initiations with a VALID mac1 (it takes only
 * the target's public key) arrive at FLOOD_RATE a second, in namespaces made here (deleted afterwards):
 *
 *   client (peer c) --198.18.0.0/30-- target (agent e) --198.18.1.0/30-- flood (raw socket, sources
 *                                                                         spoofed from 10.128.0.0/9)
 *
 * During the flood, c runs `enclave rekey` every REKEY_EVERY_S seconds; each rekey's completion time is
 * read from c's own log (the first "sent handshake initiation" after the request to "handshake complete",
 * both timestamped by the agent), so the CLI's start-up does not count. The target's CPU is its process's
 * utime + stime (/proc/<pid>/stat, all threads) over the flood, as a share of one core.
 * Target: every rekey within one retry (<= 5 s), CPU below half a core.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { Lab, ROOT } from '../src/lab/lab.js'
import { HASH, MAC, enc } from '../src/protocol/primitives.js'
import { INITIATION_SIZE, LABEL_MAC1, MSG_INITIATION } from '../src/protocol/constants.js'

export const REKEY_EVERY_S = 5
/** A rekey that has not completed this long after its first initiation counts as failed. */
const REKEY_GIVE_UP_MS = 20_000

export interface FloodResult {
  case: 'handshake-flood'
  rate: number
  seconds: number
  sent: number
  /** Each rekey's completion time in ms (null: not completed within REKEY_GIVE_UP_MS). */
  rekey_ms: (number | null)[]
  rekey_max_ms: number | null
  rekeys_failed: number
  /** The target's CPU over the flood, in cores (1 = one core busy all the time). */
  cpu_cores: number
  /** The target's drop counters after the flood (ring_full, handshake_limited, ...). */
  drops: Record<string, number>
}

function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100 // USER_HZ is 100 on Linux
}

/** `count` initiations of random content with a valid mac1 for `publicKey`, mac2 zero. */
export function junkInitiations(publicKey: Uint8Array, count: number): Buffer[] {
  const mac1Key = HASH(enc.encode(LABEL_MAC1), publicKey)
  const out: Buffer[] = []
  for (let i = 0; i < count; i++) {
    const m = Buffer.alloc(INITIATION_SIZE)
    crypto.getRandomValues(m.subarray(4, 116))
    m[0] = MSG_INITIATION
    m.set(MAC(mac1Key, m.subarray(0, 116)), 116)
    out.push(m)
  }
  return out
}

const timeOf = (line: string): number => Date.parse(/time=(\S+)/.exec(line)?.[1] ?? '')

/** Completion times of the rekeys requested after log offset `from` in c's log. */
function rekeyTimes(log: string, from: number[]): (number | null)[] {
  return from.map((off) => {
    const lines = log.slice(off).split('\n')
    const sent = lines.find((l) => l.includes('sent handshake initiation') && l.includes('rekey requested'))
    if (!sent) return null
    const t0 = timeOf(sent)
    const done = lines.find((l) => l.includes('handshake complete (we initiated)') && timeOf(l) >= t0)
    if (!done) return null
    const ms = timeOf(done) - t0
    return ms <= REKEY_GIVE_UP_MS ? ms : null
  })
}

export async function runFloodBench(rate = 30_000, seconds = 60): Promise<FloodResult> {
  const lab = new Lab('', { kind: 'encf' })
  const ns = (n: string) => lab.nsName(n)
  try {
    for (const n of ['client', 'target', 'flood']) await lab.addNs(n)
    await lab.link(ns('client'), 'wan0', '198.18.0.1/30', ns('target'), 'wan0', '198.18.0.2/30')
    await lab.link(ns('flood'), 'fl0', '198.18.1.1/30', ns('target'), 'fl0', '198.18.1.2/30')
    // The spoofed sources route back toward the flooder (the target's answers die there).
    await lab.sh('ip', ['-n', ns('target'), 'route', 'add', '10.128.0.0/9', 'via', '198.18.1.1'])
    const c = lab.makeNode({ name: 'c', ns: ns('client') })
    const e = lab.makeNode({ name: 'e', ns: ns('target') })
    lab.writeProfile(c, {
      VirtualAddress: '100.64.0.1',
      Peers: [{ PublicKey: e.publicKey, VirtualAddress: '100.64.0.2', Endpoint: '198.18.0.2:51820' }],
    })
    lab.writeProfile(e, { VirtualAddress: '100.64.0.2', Peers: [{ PublicKey: c.publicKey, VirtualAddress: '100.64.0.1' }] })
    const ea = lab.startAgent(e, ['-v', '1'])
    const ca = lab.startAgent(c, ['-v', '3'])
    await ea.waitFor(/control socket ready/, 20000)
    await ca.waitFor(/control socket ready/, 20000)
    const ping = await lab.exec(ns('client'), 'ping', ['-c', '3', '-W', '3', '100.64.0.2'])
    if (ping.code !== 0) throw new Error(`flood bench: no session before the flood: ${ping.stdout}${ping.stderr}`)

    const msgsFile = path.join(lab.tmp, 'initiations.hex')
    fs.writeFileSync(
      msgsFile,
      `${junkInitiations(Buffer.from(e.publicKey, 'base64'), 4096)
        .map((m) => m.toString('hex'))
        .join('\n')}\n`,
    )
    const sender = path.join(ROOT, 'bench', 'flood-sender.py')
    const flood = new Promise<{ sent: number }>((resolve, reject) =>
      execFile(
        'ip',
        ['netns', 'exec', ns('flood'), 'python3', sender, '198.18.1.2', '51820', String(rate), String(seconds), '10.128.0.0/9', msgsFile],
        { timeout: (seconds + 30) * 1000 },
        (err, out, errOut) => (err ? reject(new Error(`flood sender failed: ${err.message} ${errOut}`)) : resolve(JSON.parse(String(out)))),
      ),
    )
    const cpu0 = cpuSeconds(ea.pid!)
    const t0 = Date.now()
    const offsets: number[] = []
    // Rekeys from 2 s into the flood until 5 s before its end, so each has time to complete.
    await new Promise((r) => setTimeout(r, 2000))
    while (Date.now() - t0 < (seconds - REKEY_EVERY_S) * 1000) {
      offsets.push(ca.log.length)
      const r = await lab.cli(c, ['rekey'])
      if (r.code !== 0) throw new Error(`enclave rekey failed: ${r.stderr}`)
      const next = t0 + 2000 + offsets.length * REKEY_EVERY_S * 1000
      await new Promise((res) => setTimeout(res, Math.max(0, next - Date.now())))
    }
    const { sent } = await flood
    const cpu = (cpuSeconds(ea.pid!) - cpu0) / ((Date.now() - t0) / 1000)
    // Rekeys near the end: give them their bound to complete before reading the log.
    await new Promise((r) => setTimeout(r, 3000))
    const status = await lab.statusJson(e)
    const drops: Record<string, number> = {}
    for (const [k, v] of Object.entries((status.counters ?? {}) as Record<string, number>)) if (v) drops[k] = v
    const rekey = rekeyTimes(ca.log, offsets)
    const done = rekey.filter((x): x is number => x !== null)
    return {
      case: 'handshake-flood',
      rate,
      seconds,
      sent,
      rekey_ms: rekey,
      rekey_max_ms: done.length ? Math.max(...done) : null,
      rekeys_failed: rekey.length - done.length,
      cpu_cores: +cpu.toFixed(3),
      drops,
    }
  } finally {
    await lab.cleanup()
  }
}

// Run alone: node lib/bench/flood.js [rate] [seconds]
if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const r = await runFloodBench(Number(process.argv[2] ?? 30_000), Number(process.argv[3] ?? 60))
  console.log(JSON.stringify(r))
}
