/**
 * Run and log files are never written through a symlink or hard link planted at their path, and
 * `enclave start` refuses (before starting anything) when its pid or log path is such a link.
 */
import t from 'tap'
import { writeProfile } from '../../src/config/profile.js'
import { generatePrivateKey } from '../../src/config/keys.js'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ensurePrivateDir, openLogNoFollow, writeFileNoFollow } from '../../src/platform/linux/files.js'
import { startDaemon } from '../../src/ops/service.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-files-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

function plantLink(dir: string, name: string): string {
  const target = path.join(tmp, `target-of-${path.basename(dir)}-${name}`)
  fs.writeFileSync(target, 'precious\n', { mode: 0o600 })
  fs.symlinkSync(target, path.join(dir, name))
  return target
}

t.test('writeFileNoFollow and openLogNoFollow refuse a symlink; the target is untouched', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'd-'))
  const target = plantLink(dir, 'enclave.pid')
  t.throws(() => writeFileNoFollow(path.join(dir, 'enclave.pid'), '123\n', 0o644), { code: 'ESYMLINK' })
  const logTarget = plantLink(dir, 'enclave.log')
  t.throws(() => openLogNoFollow(path.join(dir, 'enclave.log')), { code: 'ESYMLINK' })
  for (const f of [target, logTarget]) {
    t.equal(fs.readFileSync(f, 'utf8'), 'precious\n')
    t.equal(fs.statSync(f).mode & 0o777, 0o600, 'mode of the target unchanged')
  }
})

t.test('a hard link or a FIFO is refused too; a plain file is written with its mode', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'h-'))
  const target = path.join(tmp, 'hard-target')
  fs.writeFileSync(target, 'precious\n', { mode: 0o600 })
  fs.linkSync(target, path.join(dir, 'enclave.pid'))
  t.throws(() => writeFileNoFollow(path.join(dir, 'enclave.pid'), '1\n', 0o644), { code: 'EBADFILE' })
  t.equal(fs.readFileSync(target, 'utf8'), 'precious\n')
  const fifo = path.join(dir, 'enclave.log')
  const { execFileSync } = await import('node:child_process')
  execFileSync('mkfifo', [fifo])
  t.throws(() => openLogNoFollow(fifo), { code: 'EBADFILE' }, 'no hang on a FIFO')
  const ok = path.join(dir, 'ok.pid')
  fs.writeFileSync(ok, 'old contents that are longer\n', { mode: 0o666 })
  writeFileNoFollow(ok, '42\n', 0o644)
  t.equal(fs.readFileSync(ok, 'utf8'), '42\n')
  t.equal(fs.statSync(ok).mode & 0o777, 0o644)
})

t.test('ensurePrivateDir refuses a symlinked or group-writable directory', async (t) => {
  const real = fs.mkdtempSync(path.join(tmp, 'r-'))
  const link = path.join(tmp, 'link-dir')
  fs.symlinkSync(real, link)
  t.throws(() => ensurePrivateDir(link, 0o755), { code: 'EBADDIR' })
  fs.chmodSync(real, 0o775)
  t.throws(() => ensurePrivateDir(real, 0o755), { code: 'EBADDIR' })
  fs.chmodSync(real, 0o755)
  t.doesNotThrow(() => ensurePrivateDir(real, 0o755))
  const fresh = path.join(tmp, 'fresh', 'run')
  ensurePrivateDir(fresh, 0o750)
  t.equal(fs.statSync(fresh).mode & 0o777, 0o750)
})

t.test('enclave start refuses a symlink at the pid or log path before starting anything', async (t) => {
  const saved = { ...process.env }
  t.teardown(() => {
    process.env = saved
  })
  for (const name of ['enclave.pid', 'enclave.log']) {
    const runDir = fs.mkdtempSync(path.join(tmp, 'run-'))
    const logDir = fs.mkdtempSync(path.join(tmp, 'log-'))
    process.env.ENCLAVE_LOG_DIR = logDir
    process.env.ENCLAVE_NO_SYSTEMD = '1'
    const target = plantLink(name === 'enclave.pid' ? runDir : logDir, name)
    // A valid profile: start checks it before anything else, and the symlink is what must stop it here.
    const configDir = fs.mkdtempSync(path.join(tmp, 'config-'))
    writeProfile(path.join(configDir, 'profiles', 'Universe.profile'), { PrivateKey: generatePrivateKey().toString('base64'), Peers: [] })
    await t.rejects(startDaemon({ configDir, runDir, verbosity: 1, timeoutMs: 3000 }), {
      code: 'ESYMLINK',
    })
    t.equal(fs.readFileSync(target, 'utf8'), 'precious\n', `the file behind a symlinked ${name} is untouched`)
    t.equal(fs.statSync(target).mode & 0o777, 0o600)
  }
})
