/**
 * Who may do what over the control socket: the agent checks each client's credentials (SO_PEERCRED),
 * so only root changes state, members of ControlGroup only read, and a socket mode opened up by
 * mistake lets nobody else in. Clients run as uid 65534 (nobody). One agent, one namespace made here.
 */
import t from 'tap'
import { until } from '../helpers/until.js'
import fs from 'node:fs'
import path from 'node:path'
import { execFile, spawn } from 'node:child_process'
import { Lab, BIN, rootSkipReason, statusJson } from '../helpers/netns.js'
import { MAX_CONNECTIONS_PER_USER, REQUEST_TIMEOUT_MS } from '../../src/agent/control-socket.js'

/** Sends one raw request as uid 65534 with group `gid`; returns the agent's reply (or the connect error). */
function requestAs(
  gid: number,
  sock: string,
  req: object,
): Promise<{ ok?: boolean; error?: string; code?: string; connectError?: string; closedUnanswered?: boolean }> {
  const script = `const s = require('node:net').createConnection(process.argv[1]);
let b = ''; s.on('connect', () => s.write(process.argv[2] + '\\n'));
s.on('data', (d) => (b += d)); s.on('end', () => process.stdout.write(b));
s.on('error', (e) => process.stdout.write(JSON.stringify({ connectError: e.code })))`
  return new Promise((res, rej) =>
    execFile(process.execPath, ['-e', script, sock, JSON.stringify(req)], { uid: 65534, gid, cwd: '/' }, (e, so) =>
      e ? rej(e) : res(String(so) ? JSON.parse(String(so)) : { closedUnanswered: true }),
    ),
  )
}

/** Runs the CLI as uid 65534 with group `gid`. */
function cliAs(gid: number, runDir: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((res) =>
    execFile(
      'env',
      ['-i', `PATH=${process.env.PATH}`, `ENCLAVE_RUN_DIR=${runDir}`, 'HOME=/tmp', process.execPath, BIN, ...args],
      { uid: 65534, gid, cwd: '/' },
      (e, so, se) => res({ code: e ? Number(e.code) : 0, out: String(so) + String(se) }),
    ),
  )
}

const skip = rootSkipReason()
t.test('control socket access by credentials', { skip }, async (t) => {
  const lab = new Lab('ca')
  t.teardown(() => lab.cleanup())
  const ns = await lab.addNs('a')
  const A = lab.makeAgent({ name: 'a', ns })
  lab.writeAgentProfile(A, { ControlGroup: 'nogroup', Peers: [] })
  const a = lab.startAgent(A)
  t.teardown(() => a.stop())
  await a.waitFor(/control socket ready/)
  fs.chmodSync(lab.tmp, 0o755)
  fs.chmodSync(A.dir, 0o755)
  const sock = path.join(A.runDir, 'enclave.sock')
  t.equal(fs.statSync(sock).mode & 0o777, 0o660, 'socket 0660 for ControlGroup')
  t.same(
    fs.readdirSync(A.runDir).filter((f) => f.startsWith('.sock-')),
    [],
    'no staging directory left behind',
  )

  await t.test('a member of ControlGroup reads but cannot change state', async (t) => {
    const st = await requestAs(65534, sock, { op: 'status' })
    t.equal(st.ok, true, 'status is allowed')
    for (const req of [{ op: 'loglevel', level: 5 }, { op: 'reload' }, { op: 'rekey' }, { op: 'connect', peer: 'ZZZZZ' }, { op: 'stop' }]) {
      const r = await requestAs(65534, sock, req)
      t.equal(r.ok, false, `${req.op} refused`)
      t.equal(r.code, 'EPERM')
      t.match(r.error, /needs root/)
    }
    const cli = await cliAs(65534, A.runDir, ['loglevel', '5'])
    t.equal(cli.code, 4, `the CLI exits 4 (permission): ${cli.out.trim()}`)
    t.match(cli.out, /needs root/)
    t.equal((await statusJson(lab, A)).logLevel, 3, 'the log level did not change')
  })

  await t.test('with the socket opened to everyone, others still cannot read or change anything', async (t) => {
    fs.chmodSync(sock, 0o666)
    const st = await requestAs(65533, sock, { op: 'status' })
    t.equal(st.ok, false, 'status refused to a user outside the group')
    t.match(st.error, /needs root or the control group/)
    const stop = await requestAs(65533, sock, { op: 'stop' })
    t.equal(stop.ok, false, 'stop refused')
    t.equal(stop.code, 'EPERM')
    await new Promise((r) => setTimeout(r, 300))
    t.equal((await statusJson(lab, A)).running, true, 'the agent is still running')
    t.equal(a.proc.exitCode, null)
  })

  await t.test('a member holding connections open cannot exhaust the agent', async (t) => {
    // The agent gets 200 file descriptors; uid 65534 opens 400 connections and sends nothing.
    const pid = String(a.pid)
    const before = (await lab.exec(ns, 'prlimit', ['--pid', pid, '--nofile', '--raw', '--noheadings', '-o', 'SOFT,HARD'])).stdout.trim()
    t.teardown(() => lab.exec(ns, 'prlimit', ['--pid', pid, `--nofile=${before.split(/\s+/).join(':')}`]))
    const lim = await lab.exec(ns, 'prlimit', ['--pid', pid, '--nofile=200:200'])
    t.equal(lim.code, 0, `prlimit ${lim.stderr}`)
    // The holder prints {settled, closed} whenever a connection settles (connects or closes) or closes.
    const hold = `const net = require('node:net'); let settled = 0, closed = 0;
      const say = () => console.log(JSON.stringify({ settled, closed }));
      for (let i = 0; i < 400; i++) {
        const s = net.createConnection(process.argv[1]); let done = false;
        const settle = () => { if (!done) { done = true; settled++ } };
        s.on('connect', () => { settle(); say() }); s.on('error', () => {}); s.on('close', () => { settle(); closed++; say() });
      }
      setTimeout(() => process.exit(0), 30000);`
    const holder = spawn(process.execPath, ['-e', hold, sock], { uid: 65534, gid: 65534, cwd: '/', stdio: ['ignore', 'pipe', 'ignore'] })
    t.teardown(() => holder.kill('SIGKILL'))
    let last = { settled: 0, closed: 0 }
    holder.stdout.on('data', (d: Buffer) => {
      const lines = String(d).trim().split('\n')
      last = JSON.parse(lines[lines.length - 1])
    })
    t.ok(await until(() => last.settled === 400, 10000, 50), `all 400 connections settled (${JSON.stringify(last)})`)
    const st = await lab.cli(A, ['status', '--json'])
    t.equal(st.code, 0, `root's status answers while the member holds its connections: ${st.stderr.trim()}`)
    const member = await requestAs(65534, sock, { op: 'status' })
    t.ok(
      member.closedUnanswered || ['EPIPE', 'ECONNRESET'].includes(member.connectError ?? ''),
      `the member's next connection is closed unanswered: ${JSON.stringify(member)}`,
    )
    t.ok(
      await until(() => last.closed >= 400 - MAX_CONNECTIONS_PER_USER, 5000, 50),
      `all but ${MAX_CONNECTIONS_PER_USER} were closed as they arrived (${last.closed})`,
    )
    t.ok(await until(() => last.closed === 400, REQUEST_TIMEOUT_MS + 5000, 50), 'the idle ones were closed after the request timeout')
    t.match(a.log, /connection limit for this user reached/)
    const again = await requestAs(65534, sock, { op: 'status' })
    t.equal(again.ok, true, 'once they are gone the member may read again')
  })

  await t.test('root may change state', async (t) => {
    const r = await lab.cli(A, ['loglevel', '4'])
    t.equal(r.code, 0, r.stderr)
    t.equal((await statusJson(lab, A)).logLevel, 4)
  })
})
