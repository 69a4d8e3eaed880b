/**
 * Operating the agent: control-socket permissions, start/stop without systemd, the unit file,
 * live reload under traffic, log levels, waitfor and doctor. All in namespaces made here.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { Lab, BIN, haveCommand, peerEntry, rootSkipReason, statusJson } from '../helpers/netns.js'

const skip = rootSkipReason()
if (skip) {
  t.skip(`operations tests: ${skip}`)
} else {
  t.test('operations', async (t) => {
    const lab = new Lab('op')
    t.teardown(() => lab.cleanup())
    const nsA = await lab.addNs('a')
    const nsB = await lab.addNs('b')
    const nsC = await lab.addNs('c')
    const nsL = await lab.addNs('lan')
    await lab.link(nsA, 'eth0', '198.18.0.1/24', nsB, 'eth0', '198.18.0.2/24')
    await lab.link(nsA, 'eth1', '198.18.1.1/24', nsC, 'eth0', '198.18.1.2/24')
    await lab.link(nsB, 'lan0', '172.26.0.3/20', nsL, 'eth0', '172.26.0.250/20')
    const A = lab.makeAgent({ name: 'a', ns: nsA })
    const B = lab.makeAgent({ name: 'b', ns: nsB })
    const C = lab.makeAgent({ name: 'c', ns: nsC })
    lab.writeAgentProfile(A, { Peers: [peerEntry(B, { Endpoint: '198.18.0.2:51820' })] })
    lab.writeAgentProfile(B, { Peers: [peerEntry(A)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'] } })
    lab.writeAgentProfile(C, { Peers: [peerEntry(A)] })

    await t.test('start and stop without systemd: pid file, clean exit, no orphans', async (t) => {
      const env = { ENCLAVE_RUN_DIR: B.runDir, ENCLAVE_NO_SYSTEMD: '1', ENCLAVE_LOG_DIR: path.join(B.dir, 'log') }
      const s = await lab.exec(nsB, process.execPath, [BIN, 'start', '--config-dir', B.dir], 30000, env)
      t.equal(s.code, 0, `start: ${s.stdout}${s.stderr}`)
      const pid = Number(fs.readFileSync(path.join(B.runDir, 'enclave.pid'), 'utf8'))
      t.ok(pid > 0 && fs.existsSync(`/proc/${pid}`), `daemon running as pid ${pid}`)
      const again = await lab.exec(nsB, process.execPath, [BIN, 'start', '--config-dir', B.dir], 30000, env)
      t.not(again.code, 0, 'a second start is refused')
      t.match(again.stderr, /already running \(pid \d+\)/)
      t.ok(fs.readFileSync(path.join(B.dir, 'log', 'enclave.log'), 'utf8').includes('data plane up'), 'the daemon logs to its log file')
      const st = await lab.exec(nsB, process.execPath, [BIN, 'stop'], 30000, env)
      t.equal(st.code, 0)
      t.match(st.stdout, new RegExp(`Stopped the agent \\(pid ${pid}\\)`))
      // Gone, or at most a zombie awaiting its reaper (this machine's PID 1 reaps lazily): not running.
      const state = fs.existsSync(`/proc/${pid}/stat`) ? fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] : 'gone'
      t.ok(state === 'gone' || state === 'Z', `the agent process is no longer running (${state})`)
      t.notOk(fs.existsSync(path.join(B.runDir, 'enclave.pid')), 'pid file removed')
      const pids = (await lab.sh('ip', ['netns', 'pids', nsB])).trim()
      t.equal(pids, '', 'no process left in the namespace')
      const st2 = await lab.exec(nsB, process.execPath, [BIN, 'stop'], 30000, env)
      t.match(st2.stdout, /was not running/)
    })

    const a = lab.startAgent(A)
    const b = lab.startAgent(B, ['-v', '1'])
    await a.waitFor(/control socket ready/)
    await b.waitFor(/control socket ready/)

    await t.test('the control socket is root-only; others get a clear refusal', async (t) => {
      const sock = path.join(A.runDir, 'enclave.sock')
      t.equal(fs.statSync(sock).mode & 0o777, 0o600)
      const r = await new Promise<{ code: number; out: string }>((res) =>
        execFile(
          'env',
          [
            '-i',
            `PATH=${process.env.PATH}`,
            `ENCLAVE_RUN_DIR=${A.runDir}`,
            'HOME=/tmp',
            process.execPath,
            BIN,
            'status',
            '--config-dir',
            A.dir,
          ],
          { uid: 65534, gid: 65534, cwd: '/' },
          (e, so, se) => res({ code: e ? Number(e.code) : 0, out: String(so) + String(se) }),
        ),
      )
      t.equal(r.code, 4, `non-root exit code 4: ${JSON.stringify(r.out)}`)
      t.match(r.out, /permission denied on .*enclave\.sock: run as root/)
      t.notMatch(r.out, /\n\s+at /)
    })

    await t.test('ControlGroup opens the socket to that group, and only to it', async (t) => {
      const C2 = lab.makeAgent({ name: 'cg', ns: nsC, port: 51899 })
      lab.writeAgentProfile(C2, { ControlGroup: 'nogroup', Peers: [] })
      const cg = lab.startAgent(C2)
      await cg.waitFor(/control socket ready/)
      const sock = path.join(C2.runDir, 'enclave.sock')
      const st = fs.statSync(sock)
      t.equal(st.mode & 0o777, 0o660, 'mode 0660')
      t.equal(st.gid, 65534, 'group nogroup')
      fs.chmodSync(lab.tmp, 0o755)
      fs.chmodSync(C2.dir, 0o755)
      const asUser = (gid: number, args: string[]) =>
        new Promise<{ code: number; out: string }>((res) =>
          execFile(
            'env',
            ['-i', `PATH=${process.env.PATH}`, `ENCLAVE_RUN_DIR=${C2.runDir}`, 'HOME=/tmp', process.execPath, BIN, ...args],
            { uid: 65534, gid, cwd: '/' },
            (e, so, se) => res({ code: e ? Number(e.code) : 0, out: String(so) + String(se) }),
          ),
        )
      const member = await asUser(65534, ['status', '--json'])
      t.equal(member.code, 0, `a member of nogroup reads live status: ${member.out.slice(0, 200)}`)
      t.equal(JSON.parse(member.out).running, true)
      const other = await asUser(65533, ['status'])
      t.equal(other.code, 4, 'a user outside the group is refused')
      t.match(other.out, /run as root or join group nogroup/)
      await cg.stop()
    })

    await t.test('waitfor and loglevel', async (t) => {
      const w = await lab.cli(A, ['waitfor', B.identity, '-t', '10'])
      t.equal(w.code, 0, `waitfor: ${w.stdout}${w.stderr}`)
      t.match(w.stdout, new RegExp(`${B.identity} is up`))
      const u = await lab.cli(A, ['waitfor', 'ZZZZZ', '-t', '10'])
      t.equal(u.code, 2, 'a name that is no peer is a usage error, said at once')
      t.match(u.stderr, new RegExp(`ZZZZZ is not a peer of the running agent \\(peers: .*${B.identity}`))
      const byDesc = await lab.cli(A, ['waitfor', 'b', '-t', '10', '--json'])
      t.equal(byDesc.code, 0, `waitfor by description: ${byDesc.stderr}`)
      t.match(JSON.parse(byDesc.stdout), { version: 1, identity: B.identity, state: 'Up' })
      const named = await lab.cli(A, ['loglevel', 'network'])
      t.equal(named.code, 0, 'the level names log lines carry work too')
      t.equal((await statusJson(lab, A)).logLevel, 2)
      const l = await lab.cli(A, ['loglevel', '4'])
      t.equal(l.code, 0)
      t.equal((await statusJson(lab, A)).logLevel, 4)
      await a.waitFor(/log level changed/)
    })

    await t.test('reload adds and removes a peer and a route while traffic keeps flowing', async (t) => {
      const pinger = lab.exec(nsA, 'ping', ['-c', '40', '-i', '0.1', '-W', '1', B.va], 30000)
      await new Promise((r) => setTimeout(r, 800))
      lab.writeAgentProfile(A, {
        Peers: [peerEntry(B, { Endpoint: '198.18.0.2:51820' }), peerEntry(C, { Endpoint: '198.18.1.2:51820' })],
        ExitNode: { AvailableRoutes: { [B.identity]: ['172.26.0.0/20'] } },
      })
      const r1 = await lab.cli(A, ['reload'])
      t.equal(r1.code, 0, r1.stderr)
      t.match(r1.stdout, /1 peer\(s\) added/)
      t.match((await lab.exec(nsA, 'ip', ['route', 'show', '172.26.0.0/20'])).stdout, /dev enclave0/, 'route added by reload')
      const c = lab.startAgent(C)
      await c.waitFor(/control socket ready/)
      t.equal((await lab.exec(nsA, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', C.va])).code, 0, 'the new peer is reachable')
      lab.writeAgentProfile(A, { Peers: [peerEntry(B, { Endpoint: '198.18.0.2:51820' })] })
      const r2 = await lab.cli(A, ['reload'])
      t.match(r2.stdout, /1 removed/)
      t.equal((await lab.exec(nsA, 'ip', ['route', 'show', '172.26.0.0/20'])).stdout.trim(), '', 'route removed by reload')
      const out = (await pinger).stdout
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out)!
      t.ok(Number(m[1]) - Number(m[2]) <= 1, `ping through the unchanged peer: ${m[0]}`)
      const st = await statusJson(lab, A)
      t.same(
        st.peers.map((p: any) => p.identity),
        [B.identity],
      )
      t.equal(st.peers[0].state, 'Up', 'the unchanged session stayed up')
      await c.stop()
    })

    await t.test('an invalid reload is refused and the agent keeps running', async (t) => {
      const file = path.join(A.dir, 'profiles', 'Universe.profile')
      const good = fs.readFileSync(file, 'utf8')
      fs.writeFileSync(file, good.replace('"Peers"', '"Peers": [{"PublicKey": "short"}], "Old"'))
      const r = await lab.cli(A, ['reload'])
      t.not(r.code, 0)
      t.match(r.stderr, /Universe\.profile: Peers\[0\]\.PublicKey: "short" is not valid base64/)
      t.equal((await lab.exec(nsA, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', B.va])).code, 0, 'still forwarding on the old profile')
      fs.writeFileSync(file, good)
      process.kill(a.proc.pid!, 'SIGHUP')
      await a.waitFor(/profile reloaded/)
      t.pass('SIGHUP reloads too')
    })

    await t.test('doctor finds a missing SNAT rule and ip_forward off, then passes once fixed', async (t) => {
      await lab.exec(nsB, 'sysctl', ['-w', 'net.ipv4.ip_forward=0'])
      const d1 = await lab.cli(B, ['doctor', '--probe', '172.26.0.250'])
      t.equal(d1.code, 1, 'doctor exits 1 on failures')
      t.match(d1.stdout, /FAIL {2}ip_forward: .*\n\s+fix: sudo sysctl -w net\.ipv4\.ip_forward=1/)
      t.match(
        d1.stdout,
        /FAIL {2}SNAT 172\.26\.0\.0\/20: .*\n\s+fix: sudo iptables -t nat -A POSTROUTING -s 100\.64\.0\.0\/10 -d 172\.26\.0\.0\/20 -j SNAT --to 172\.26\.0\.3/,
      )
      t.match(d1.stdout, /PASS {2}LAN probe 172\.26\.0\.250: answers/)
      t.match(d1.stdout, /PASS {2}agent: running/)
      await lab.guideExitNode(nsB, '172.26.0.3', { dst: '172.26.0.0/20' })
      const d2 = await lab.cli(B, ['doctor', '--json'])
      t.equal(d2.code, 0, d2.stdout)
      const j = JSON.parse(d2.stdout)
      t.equal(j.ok, true)
      t.ok(j.checks.some((c: any) => c.name === 'SNAT 172.26.0.0/20' && c.result === 'pass'))
      const dc = await lab.cli(A, ['doctor'])
      t.match(dc.stdout, new RegExp(`PASS  peer ${B.identity}: up`))
    })

    t.equal(await a.stop(), 0)
    t.equal(await b.stop(), 0)

    await t.test('after kill -9, the next start removes what the dead agent left', async (t) => {
      lab.writeAgentProfile(A, {
        Peers: [peerEntry(B, { Endpoint: '198.18.0.2:51820' })],
        ExitNode: { AvailableRoutes: { [B.identity]: ['0.0.0.0/0'] } },
      })
      lab.writeAgentProfile(B, { Peers: [peerEntry(A)], ExitNode: { ProvidesRoutes: ['172.26.0.0/20'], ManageNat: true } })
      const countRules = async () => ((await lab.exec(nsA, 'ip', ['rule', 'show'])).stdout.match(/not from all fwmark/g) ?? []).length
      const countNat = async () =>
        ((await lab.exec(nsB, 'iptables', ['-t', 'nat', '-S', 'POSTROUTING'])).stdout.match(/enclave:enclave0/g) ?? []).length
      let a2 = lab.startAgent(A)
      let b2 = lab.startAgent(B)
      await a2.waitFor(/control socket ready/)
      await b2.waitFor(/control socket ready/)
      t.equal(await countRules(), 1, 'policy rule for 0.0.0.0/0 installed')
      t.equal(await countNat(), 1, 'ManageNat rule installed')
      await a2.stop('SIGKILL')
      await b2.stop('SIGKILL')
      t.equal(await countRules(), 1, 'the killed client left its policy rule behind')
      t.equal(await countNat(), 1, 'the killed exit node left its NAT rule behind')
      a2 = lab.startAgent(A)
      b2 = lab.startAgent(B)
      await a2.waitFor(/control socket ready/)
      await b2.waitFor(/control socket ready/)
      await b2.waitFor(/removed NAT rules left by an earlier run/)
      t.equal(await countRules(), 1, 'restart: exactly one policy rule (stale one replaced)')
      t.equal(await countNat(), 1, 'restart: exactly one NAT rule (stale one removed first)')
      const up = await lab.cli(A, ['waitfor', B.identity, '-t', '15'])
      t.equal(up.code, 0, `the session comes up again ${up.stdout}${up.stderr}`)
      t.equal((await lab.exec(nsA, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', B.va])).code, 0, 'the restarted agents work')
      t.equal(await a2.stop(), 0)
      t.equal(await b2.stop(), 0)
      t.equal(await countRules(), 0, 'clean stop: no rules')
      t.equal(await countNat(), 0, 'clean stop: no NAT rules')
    })
  })
}
