/**
 * The systemd unit as systemd would run it: install-service writes it (with --install-to, so the hardened
 * unit can see the program), then this test runs the unit's ExecStart line with the unit's Environment
 * inside a namespace it made, as Type=notify does: NOTIFY_SOCKET set (a datagram socket the test listens
 * on) and JOURNAL_STREAM set (journald's priorities). Only ENCLAVE_RUN_DIR is moved to a temporary
 * directory, so that the test never touches the machine's /run/enclave.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BIN, Lab, haveCommand, rootSkipReason } from '../helpers/netns.js'

const skip = rootSkipReason() || (!haveCommand('python3') ? 'python3 is not installed (listens on the notify socket)' : false)
if (skip) {
  t.skip(`service unit test: ${skip}`)
} else {
  t.test("the unit's ExecStart, run with the unit's environment, says READY=1 and logs with journald priorities", async (t) => {
    const lab = new Lab('svc')
    const dest = `/opt/enclave-unit-test-${process.pid}`
    const etc = `/etc/enclave-unit-test-${process.pid}`
    t.teardown(async () => {
      await lab.cleanup()
      fs.rmSync(dest, { recursive: true, force: true })
      fs.rmSync(etc, { recursive: true, force: true })
    })
    const ns = await lab.addNs('a')
    const node = lab.makeNode({ name: 'a', ns })
    fs.mkdirSync(path.join(etc, 'profiles'), { recursive: true, mode: 0o700 })
    fs.copyFileSync(lab.profilePath(node), path.join(etc, 'profiles', 'Universe.profile'))
    const unitDir = path.join(lab.tmp, 'units')
    fs.mkdirSync(unitDir)
    const inst = await lab.exec(ns, process.execPath, [
      BIN,
      'install-service',
      '--unit-dir',
      unitDir,
      '--config-dir',
      etc,
      '--install-to',
      dest,
    ])
    t.equal(inst.code, 0, inst.stderr)
    t.match(inst.stdout, /daemon-reload/, 'it says to run systemctl daemon-reload')
    const unit = fs.readFileSync(path.join(unitDir, 'enclave.service'), 'utf8')
    const exec = /^ExecStart=(.+)$/m.exec(unit)?.[1].split(' ') ?? []
    const unitEnv = Object.fromEntries([...unit.matchAll(/^Environment=(\w+)=(.*)$/gm)].map((m) => [m[1], m[2]]))
    t.equal(exec[1], `${dest}/bin/run.js`, 'ExecStart runs the installed copy')
    t.match(unit, /^Type=notify$/m)
    for (const line of [
      'Restart=on-failure',
      'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW',
      'NoNewPrivileges=true',
      'ProtectSystem=strict',
      'ProtectHome=true',
      'ExecReload=/bin/kill -HUP $MAINPID',
    ])
      t.ok(unit.includes(line), line)
    if (haveCommand('systemd-analyze')) {
      const v = await lab.exec(ns, 'systemd-analyze', ['verify', path.join(unitDir, 'enclave.service')])
      t.equal(v.code, 0, `systemd-analyze verify: ${v.stdout}${v.stderr}`)
    } else t.comment('systemd-analyze not installed: unit verification skipped')
    const un = await lab.exec(ns, process.execPath, [BIN, 'uninstall-service', '--unit-dir', unitDir])
    t.equal(un.code, 0, un.stderr)
    t.notOk(fs.existsSync(path.join(unitDir, 'enclave.service')), 'uninstall-service removes it')

    const sock = path.join(lab.tmp, 'notify.sock')
    const listener: ChildProcess = spawn('python3', [
      '-u',
      '-c',
      'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("listening",flush=True)\nwhile True:\n  print(s.recv(4096).decode().replace("\\n","|"),flush=True)',
      sock,
    ])
    t.teardown(() => listener.kill('SIGKILL'))
    let notes = ''
    listener.stdout?.on('data', (d) => (notes += d.toString()))
    const until = async (what: string, f: () => boolean, ms = 20000) => {
      const end = Date.now() + ms
      while (!f()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    }
    await until('the listener', () => notes.includes('listening'))
    const runDir = path.join(lab.tmp, 'run')
    const agent = lab.spawn(ns, exec[0], exec.slice(1), {
      ...unitEnv,
      ENCLAVE_RUN_DIR: runDir,
      NOTIFY_SOCKET: sock,
      JOURNAL_STREAM: '8:12345',
    })
    let out = ''
    agent.stdout?.on('data', (d) => (out += d.toString()))
    agent.stderr?.on('data', (d) => (out += d.toString()))
    await until('READY=1', () => notes.includes('READY=1'))
    t.match(
      notes,
      new RegExp(`READY=1\\|MAINPID=${agent.pid}\\|STATUS=data plane up`),
      'READY=1 from the main process, once the data plane is up',
    )
    t.match(out, /^<6>time=\S+ level=info msg="data plane up"/m, 'info lines carry priority 6')
    t.ok(fs.existsSync(path.join(runDir, 'enclave.sock')), 'the control socket answered before READY')
    agent.kill('SIGTERM')
    const code = await new Promise<number | null>((r) => agent.once('exit', (c) => r(c)))
    t.equal(code, 0, 'SIGTERM stops it cleanly')
    t.match(notes, /STOPPING=1/, 'and it said STOPPING=1 first')
  })

  t.test("the hub's unit: runs as the data directory's owner with no capabilities, and its ExecStart serves", async (t) => {
    const lab = new Lab('hsvc')
    const dest = `/opt/enclave-hub-unit-test-${process.pid}`
    const data = `/var/lib/enclave-hub-unit-test-${process.pid}`
    let hub: ChildProcess | undefined
    t.teardown(async () => {
      if (hub?.pid && hub.exitCode === null) hub.kill('SIGKILL')
      await lab.cleanup()
      fs.rmSync(dest, { recursive: true, force: true })
      fs.rmSync(data, { recursive: true, force: true })
    })
    const ns = await lab.addNs('h')
    const init = await lab.exec(ns, process.execPath, [BIN, 'hub', 'init', '--data-dir', data, '--listen', '127.0.0.1:8443'])
    t.equal(init.code, 0, init.stderr)
    // nobody (65534) stands in for the hub's own user.
    fs.chownSync(data, 65534, 65534)
    for (const f of fs.readdirSync(data)) fs.chownSync(path.join(data, f), 65534, 65534)
    const unitDir = path.join(lab.tmp, 'units')
    fs.mkdirSync(unitDir)
    const inst = await lab.exec(ns, process.execPath, [
      BIN,
      'hub',
      'install-service',
      '--unit-dir',
      unitDir,
      '--data-dir',
      data,
      '--install-to',
      dest,
    ])
    t.equal(inst.code, 0, inst.stderr)
    const user = /^nobody:/m.test(fs.readFileSync('/etc/passwd', 'utf8')) ? 'nobody' : undefined
    const unit = fs.readFileSync(path.join(unitDir, 'enclave-hub.service'), 'utf8')
    if (user) t.match(unit, /^User=nobody$/m, "the unit runs as the data directory's owner")
    for (const line of [
      'CapabilityBoundingSet=',
      'NoNewPrivileges=true',
      'ProtectSystem=strict',
      `ReadWritePaths=${data}`,
      'Restart=on-failure',
    ])
      t.ok(unit.split('\n').includes(line), line)
    const exec = /^ExecStart=(.+)$/m.exec(unit)?.[1].split(' ') ?? []
    t.same(exec.slice(1), [`${dest}/bin/run.js`, 'hub', 'serve', '--data-dir', data], 'ExecStart serves the installed copy')
    if (haveCommand('systemd-analyze')) {
      const v = await lab.exec(ns, 'systemd-analyze', ['verify', path.join(unitDir, 'enclave-hub.service')])
      t.equal(v.code, 0, `systemd-analyze verify: ${v.stdout}${v.stderr}`)
    } else t.comment('systemd-analyze not installed: unit verification skipped')
    // The ExecStart line, as the unit's user with no capabilities (setpriv does what User= does).
    hub = lab.spawn(ns, 'setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--', ...exec])
    let out = ''
    hub.stdout?.on('data', (d) => (out += d.toString()))
    hub.stderr?.on('data', (d) => (out += d.toString()))
    const end = Date.now() + 20000
    while (!out.includes('hub listening') && hub.exitCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
    t.match(out, /hub listening/, `the hub serves as nobody\n${out}`)
    const key = await lab.exec(ns, process.execPath, [
      '-e',
      "fetch('http://127.0.0.1:8443/enclave/v1/key').then(r=>r.json()).then(j=>console.log(j.publicKey))",
    ])
    const served = key.stdout.trim()
    t.equal(served.length, 44, `it answers with a key (${served})`)
    t.ok(init.stdout.includes(`Hub public key: ${served}`), 'the one hub init printed')
    hub.kill('SIGTERM')
    const code = await new Promise<number | null>((r) => hub?.once('exit', (c) => r(c)))
    t.equal(code, 0, 'SIGTERM stops it cleanly')
  })
}
