/**
 * The README's first command: `enclave demo` (the guide by hand) and `enclave demo --hub` (the guide with a
 * hub: enrol, approve, route, policy, ping the printer) run whole, as a user runs them, and leave nothing
 * behind: no namespace of theirs, no process of theirs.
 */
import { execFileSync, spawn } from 'node:child_process'
import t from 'tap'
import { BIN, haveCommand, rootSkipReason } from '../helpers/netns.js'

const skip = rootSkipReason() || (!haveCommand('iptables') ? 'iptables is not installed' : false)

function run(args: string[]): Promise<{ code: number | null; out: string; pid: number }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => p.kill('SIGINT'), 120_000)
    p.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, out, pid: p.pid ?? 0 })
    })
  })
}

function leftovers(prefix: string, pid: number): string[] {
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  return ns.split('\n').filter((l) => l.startsWith(`${prefix}${pid}`))
}

t.test('enclave demo: the guide by hand', { skip }, async (t) => {
  const r = await run(['demo'])
  t.equal(r.code, 0, `the demo ends well\n${r.out.slice(-2000)}`)
  t.match(r.out, /✔ the laptop reached the printer through the exit node/)
  t.match(r.out, /✔ the printer could not start traffic into the overlay/)
  t.notMatch(r.out, /✘/)
  t.same(leftovers('encdemo', r.pid), [], 'no namespace of the demo is left')
})

t.test('enclave demo --hub: enrol, approve, route, policy, ping the printer; the hub down, the tunnel stays', { skip }, async (t) => {
  const r = await run(['demo', '--hub'])
  t.equal(r.code, 0, `the demo ends well\n${r.out.slice(-2000)}`)
  t.match(r.out, /Enrolled as \w{5} \(100\.[\d.]+\) — approved, 0 peers/, 'the exit node enrols with an auto-approve key')
  t.match(r.out, /Enrolled as \w{5} \(100\.[\d.]+\) — awaiting approval/, 'the laptop waits for approval')
  t.match(r.out, /\+ \w{5} -> \w{5}:172\.26\.0\.0\/20 \(icmp,tcp:9100\)/, 'the dry run shows the pair the policy opens')
  t.match(r.out, /Exit node for \. \. \. : 172\.26\.0\.0\/20/, "the laptop's status shows the hub-given route")
  t.match(r.out, /✔ the laptop, configured only by the hub, reached the printer through the exit node/)
  t.match(r.out, /✔ what no policy grants stayed closed/)
  t.match(r.out, /✔ with the hub down, the tunnel kept working/)
  t.notMatch(r.out, /✘/)
  t.same(leftovers('enchub', r.pid), [], 'no namespace of the demo is left')
  const hubs = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes('hub serve') && l.includes(`enchub${r.pid}`))
  t.same(hubs, [], 'no hub process of the demo is left')
})
