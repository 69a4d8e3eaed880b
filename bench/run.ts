/**
 * `npm run bench`: guards the throughput of the exit-node hot path.
 *  1. In process (no syscalls): packets/s per worker through the real Pipeline at 1400 B and 64 B.
 *  2. In namespaces (root, iperf3, wireguard-go): TCP client -> exit node -> LAN host for our agent and
 *     for stock wireguard-go on the same path, and the ratio. Target: >= 1.5 x the best stock VPN
 *     measured here (fastd 0.93 Gbit/s => 1.40 Gbit/s; ../shared/research/anchors-throughput.md).
 * Results: JSON lines on stdout and in bench/results/<timestamp>.jsonl, then a table.
 * Knobs: BENCH_SECONDS (iperf3 run length, default 5), BENCH_RUNS (default 3), BENCH_NETNS=0 to skip part 2.
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { runHotpath, type HotpathResult } from './hotpath.js'
import { ExitPathBench, type NetnsResult } from './netns.js'
import { runPolicyBench } from './policy.js'
import { type PolicyNetnsResult, runPolicyHotpath, runPolicyNetnsBench } from './policy-netns.js'

const TARGET_GBPS = 1.5 * 0.93
const resultsDir = fileURLToPath(new URL('../../bench/results/', import.meta.url))
fs.mkdirSync(resultsDir, { recursive: true })
const file = path.join(resultsDir, `${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`)
const emit = (o: object) => {
  const line = JSON.stringify(o)
  console.log(line)
  fs.appendFileSync(file, line + '\n')
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  emit({ case: 'meta', node: process.version, cpus: (await import('node:os')).cpus().length, date: new Date().toISOString() })
  const hot: HotpathResult[] = []
  runHotpath(1400, 64, 0.5) // warm-up: let V8 optimise before measuring
  for (const size of [1400, 64])
    for (const batch of [1, 64]) {
      const r = runHotpath(size, batch, 2)
      hot.push(r)
      emit(r)
    }
  // Tags and policies: new-flow decisions in process (100 policies x 1,000 peers), and the exit node's
  // inbound path with and without policies.
  const decisions = await runPolicyBench(2)
  for (const r of decisions) emit(r)
  const policyHot = runPolicyHotpath()
  for (const r of policyHot) emit(r)
  const policyNet: PolicyNetnsResult[] = []
  const net: NetnsResult[] = []
  const canNetns = process.getuid?.() === 0 && process.env.BENCH_NETNS !== '0'
  if (canNetns) {
    const seconds = Number(process.env.BENCH_SECONDS ?? 5)
    const runs = Number(process.env.BENCH_RUNS ?? 3)
    const b = new ExitPathBench()
    // The lab tears the namespaces down on SIGINT/SIGTERM and on exit as well.
    try {
      await b.setup()
      for (const impl of ['enclave', 'wireguard-go'] as const) {
        const stop = await b.start(impl)
        for (const test of ['tcp1', 'tcp4'] as const)
          for (let run = 0; run < runs; run++) {
            const r = await b.iperf(test === 'tcp1' ? 1 : 4, seconds)
            const rec: NetnsResult = { case: 'exit-path', impl, test, run, gbps: +r.gbps.toFixed(3), retransmits: r.retransmits }
            net.push(rec)
            emit(rec)
          }
        for (let run = 0; run < runs; run++) {
          const u = await b.udp64(seconds)
          const rec: NetnsResult = { case: 'exit-path', impl, test: 'udp64', run, kpps: +u.kpps.toFixed(1), loss_pct: +u.loss.toFixed(1) }
          net.push(rec)
          emit(rec)
        }
        const pg = await b.ping()
        const prec: NetnsResult = { case: 'exit-path', impl, test: 'ping', run: 0, avg_ms: pg.avg, max_ms: pg.max }
        net.push(prec)
        emit(prec)
        await stop()
      }
    } finally {
      b.teardown()
    }
    for (const r of await runPolicyNetnsBench(seconds, Math.max(2, runs - 1))) {
      policyNet.push(r)
      emit(r)
    }
  }

  console.log('\nIn-process hot path, one thread (client encrypt -> exit decrypt + checks + conntrack):')
  console.log('  size  batch   outbound pps  Gbit/s    inbound pps  Gbit/s')
  for (const r of hot)
    console.log(
      `  ${String(r.size).padStart(4)}  ${String(r.batch).padStart(5)}  ${String(r.outbound_pps).padStart(13)}  ${r.outbound_gbps.toFixed(2).padStart(6)}  ${String(r.inbound_pps).padStart(13)}  ${r.inbound_gbps.toFixed(2).padStart(6)}`,
    )
  console.log('\nPolicies (100 policies, 1,000 peers; the exit node judges new flows only):')
  for (const r of decisions) console.log(`  ${r.case}: ${(r.decisions_per_s / 1e6).toFixed(2)} M decisions/s, ${r.ns_per_decision} ns each`)
  for (const r of policyHot) console.log(`  in process, ${r.test}, ${r.policies} policies: ${r.inbound_pps} inbound packets/s`)
  if (policyNet.length) {
    for (const test of ['tcp1', 'new-flows'] as const)
      for (const n of [0, 100]) {
        const xs = policyNet.filter((r) => r.test === test && r.policies === n).map((r) => (test === 'tcp1' ? r.gbps! : r.cps!))
        console.log(
          `  exit node, ${test}, ${n} policies: median ${median(xs)}${test === 'tcp1' ? ' Gbit/s' : ' connections/s'} (runs: ${xs.join(', ')})`,
        )
      }
  }
  if (net.length) {
    console.log('\nTCP client -> exit node -> LAN host (iperf3, median of runs, Gbit/s):')
    const summary: Record<string, number> = {}
    for (const impl of ['enclave', 'wireguard-go'])
      for (const test of ['tcp1', 'tcp4']) {
        const xs = net.filter((r) => r.impl === impl && r.test === test).map((r) => r.gbps!)
        summary[`${impl}/${test}`] = median(xs)
        console.log(`  ${impl.padEnd(13)} ${test}: ${median(xs).toFixed(2)}  (runs: ${xs.map((x) => x.toFixed(2)).join(', ')})`)
      }
    console.log('\nUDP, 64-byte payloads, unlimited offered rate (kpps delivered to the LAN host, median) and ping (ms):')
    for (const impl of ['enclave', 'wireguard-go']) {
      const u = net.filter((r) => r.impl === impl && r.test === 'udp64')
      const p = net.find((r) => r.impl === impl && r.test === 'ping')
      summary[`${impl}/udp64_kpps`] = median(u.map((r) => r.kpps!))
      if (p) summary[`${impl}/ping_avg_ms`] = p.avg_ms!
      console.log(
        `  ${impl.padEnd(13)} udp64: ${median(u.map((r) => r.kpps!)).toFixed(1)} kpps (loss ${u.map((r) => r.loss_pct).join('/')} %)   ping avg ${p?.avg_ms} ms, max ${p?.max_ms} ms`,
      )
    }
    const ratio = summary['enclave/tcp1'] / summary['wireguard-go/tcp1']
    console.log(`  ratio enclave / wireguard-go (tcp1): ${ratio.toFixed(2)}x`)
    console.log(
      `  target ${TARGET_GBPS.toFixed(2)} Gbit/s (1.5 x fastd 0.93): ${summary['enclave/tcp1'] >= TARGET_GBPS ? 'MET' : 'NOT MET'} by tcp1 ${summary['enclave/tcp1'].toFixed(2)}`,
    )
    emit({ case: 'summary', ...summary, ratio_tcp1: +ratio.toFixed(2), target_gbps: +TARGET_GBPS.toFixed(2) })
  } else {
    console.log('\n(netns throughput skipped: needs root, iperf3 and wireguard-go; BENCH_NETNS=0 also skips it)')
  }
  console.log(`\nresults: ${file}`)
}

await main()
