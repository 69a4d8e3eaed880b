/**
 * Running the agent as a service: through systemd when it is the init system, otherwise as a
 * daemon with a pid file (ENCLAVE_RUN_DIR/enclave.pid) and a log file (ENCLAVE_LOG_DIR, default
 * /var/log/enclave). stop() ends exactly the pid in the file, after checking it is our agent:
 * SIGTERM first, SIGKILL after a timeout.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { EnclaveError } from '../errors.js'
import { run } from '../platform/linux/exec.js'
import { ensurePrivateDir, openLogNoFollow, openNoFollow } from '../platform/linux/files.js'
import { lockHolder } from './instance-lock.js'
import { loadProfile, profilePath } from '../config/profile.js'

export const UNIT_NAME = 'enclave'
export const BIN_PATH = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))

export function logDir(): string {
  return process.env.ENCLAVE_LOG_DIR || '/var/log/enclave'
}

export function pidFile(runDir: string): string {
  return path.join(runDir, 'enclave.pid')
}

/** systemd is PID 1 and the unit is installed. ENCLAVE_NO_SYSTEMD=1 forces the daemon path. */
export function useSystemd(unitDir = '/etc/systemd/system'): boolean {
  if (process.env.ENCLAVE_NO_SYSTEMD === '1') return false
  return fs.existsSync('/run/systemd/system') && fs.existsSync(path.join(unitDir, `${UNIT_NAME}.service`))
}

export async function systemctl(verb: string): Promise<void> {
  const r = await run('systemctl', [verb, UNIT_NAME], 60_000)
  if (r.code !== 0) throw new EnclaveError('ESYSTEMD', `systemctl ${verb} ${UNIT_NAME} failed: ${r.stderr.trim() || `exit ${r.code}`}`)
}

export function readPid(runDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(pidFile(runDir), 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** True if `pid` is alive and is an `enclave run` (not a recycled pid of something else). */
export function isOurAgent(pid: number): boolean {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    return cmd.some((a) => a.endsWith('run.js') || a.endsWith('/enclave')) && cmd.includes('run')
  } catch {
    return false
  }
}

export interface DaemonOptions {
  configDir: string
  runDir: string
  verbosity: number
  timeoutMs?: number
}

/** Starts `enclave run` detached; resolves once its control socket answers (or fails with its log). */
export async function startDaemon(o: DaemonOptions): Promise<{ pid: number; log: string }> {
  const existing = readPid(o.runDir)
  if (existing && isOurAgent(existing))
    throw new EnclaveError('EALREADY', `the agent is already running (pid ${existing}); use \`enclave restart\` to restart it`)
  const holder = lockHolder(o.runDir)
  if (holder !== undefined)
    throw new EnclaveError('EALREADY', `an agent is already running in the foreground (pid ${holder}, \`enclave run\`); stop it first`)
  // A profile with a mistake is reported as such (exit 2), before anything starts.
  loadProfile(profilePath(o.configDir))
  // Neither file is written through a symlink or hard link planted at its path (files.ts).
  ensurePrivateDir(o.runDir, 0o755)
  ensurePrivateDir(logDir(), 0o750)
  const log = path.join(logDir(), 'enclave.log')
  const fd = openLogNoFollow(log)
  const logStart = fs.fstatSync(fd).size // only this run's lines are shown if it fails
  let pidFd: number
  try {
    pidFd = openNoFollow(pidFile(o.runDir), 0o644, false)
  } catch (e) {
    fs.closeSync(fd)
    throw e
  }
  // ENCLAVE_LOG_FILE: the agent rotates this file itself at a size limit (src/log/logger.ts).
  const child = spawn(process.execPath, [BIN_PATH, 'run', '-v', String(o.verbosity), '--config-dir', o.configDir], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ENCLAVE_RUN_DIR: o.runDir, ENCLAVE_LOG_FILE: log },
  })
  fs.closeSync(fd)
  const pid = child.pid!
  child.unref()
  fs.writeSync(pidFd, `${pid}\n`)
  fs.closeSync(pidFd)
  const deadline = Date.now() + (o.timeoutMs ?? 20_000)
  const sock = path.join(o.runDir, 'enclave.sock')
  while (Date.now() < deadline) {
    if (!isOurAgent(pid)) {
      fs.rmSync(pidFile(o.runDir), { force: true })
      const tail = fs.readFileSync(log).subarray(logStart).toString('utf8').trim().split('\n').slice(-8).join('\n')
      throw new EnclaveError('ESTART', `the agent exited during start${tail ? `; its log (${log}) says:\n${tail}` : ` (see ${log})`}`)
    }
    if (fs.existsSync(sock)) return { pid, log }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new EnclaveError(
    'ETIMEDOUT',
    `the agent (pid ${pid}) did not open its control socket within ${(o.timeoutMs ?? 20_000) / 1000} s; see ${log}`,
  )
}

/**
 * Stops the daemon in the pid file: SIGTERM, then SIGKILL after `graceMs`. An agent running in the
 * foreground (`enclave run`: no pid file, it holds the run directory's lock) is left alone and named.
 */
export async function stopDaemon(runDir: string, graceMs = 10_000): Promise<{ pid?: number; forced: boolean; foreground?: number }> {
  const pid = readPid(runDir)
  if (!pid || !isOurAgent(pid)) {
    fs.rmSync(pidFile(runDir), { force: true })
    const holder = lockHolder(runDir)
    return holder !== undefined ? { forced: false, foreground: holder } : { forced: false }
  }
  process.kill(pid, 'SIGTERM')
  const deadline = Date.now() + graceMs
  while (Date.now() < deadline) {
    if (!isOurAgent(pid)) break
    await new Promise((r) => setTimeout(r, 100))
  }
  let forced = false
  if (isOurAgent(pid)) {
    process.kill(pid, 'SIGKILL')
    forced = true
    while (isOurAgent(pid)) await new Promise((r) => setTimeout(r, 50))
  }
  fs.rmSync(pidFile(runDir), { force: true })
  return { pid, forced }
}

/** Directories the unit's hardening hides from the service: ProtectHome=true and PrivateTmp=true. */
export const HIDDEN_FROM_UNIT = ['/home', '/root', '/run/user', '/tmp', '/var/tmp']

/** Why the service could not see `p` (a path the unit names), or undefined when it can. */
export function hiddenFromUnit(p: string): string | undefined {
  const abs = path.resolve(p)
  const d = HIDDEN_FROM_UNIT.find((h) => abs === h || abs.startsWith(`${h}/`))
  if (!d) return undefined
  return d === '/tmp' || d === '/var/tmp'
    ? `${d} is private to the service (PrivateTmp=true)`
    : `${d} is hidden from the service (ProtectHome=true)`
}

/** The files `enclave run` needs, relative to the package root: what --install-to copies. */
export const PACKAGE_FILES = ['bin', 'lib', 'node_modules', 'native/build/Release', 'package.json', 'oclif.manifest.json']

/** The package root of this CLI (bin/, lib/, node_modules/). */
export const PACKAGE_ROOT = path.dirname(path.dirname(BIN_PATH))

/**
 * The systemd unit: restart on failure, only the capabilities the agent needs, and hardening.
 * Type=notify: the agent says READY=1 once its data plane is up and its control socket answers.
 * Paths are made absolute (systemd rejects relative ones); a path with spaces is refused.
 */
export function unitFile(o: { configDir: string; nodePath?: string; binPath?: string }): string {
  const node = path.resolve(o.nodePath ?? process.execPath)
  const bin = path.resolve(o.binPath ?? BIN_PATH)
  const configDir = path.resolve(o.configDir)
  for (const p of [node, bin, configDir])
    if (/\s/.test(p)) throw new EnclaveError('EINVAL', `${p}: a path with white space cannot go into the systemd unit`, 2)
  return `[Unit]
Description=Enclave overlay network agent (WireGuard protocol, exit nodes)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=${node} ${bin} run --config-dir ${configDir}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
Environment=ENCLAVE_RUN_DIR=/run/enclave
RuntimeDirectory=enclave
RuntimeDirectoryMode=0755
# TUN, routes, iptables (ManageNat) and ip_forward need CAP_NET_ADMIN; iptables uses CAP_NET_RAW.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=${configDir} /run/enclave /proc/sys/net/ipv4
ProtectHome=true
PrivateTmp=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=true
LockPersonality=true
DeviceAllow=/dev/net/tun rw

[Install]
WantedBy=multi-user.target
`
}

export const HUB_UNIT_NAME = 'enclave-hub'

/**
 * The hub's systemd unit: an ordinary unprivileged service (no TUN, no capabilities), run as the user
 * that owns the data directory, which is the only place it may write. Restarted on failure.
 */
export function hubUnitFile(o: { dataDir: string; user: string; nodePath?: string; binPath?: string }): string {
  const node = path.resolve(o.nodePath ?? process.execPath)
  const bin = path.resolve(o.binPath ?? BIN_PATH)
  const dataDir = path.resolve(o.dataDir)
  for (const p of [node, bin, dataDir])
    if (/\s/.test(p)) throw new EnclaveError('EINVAL', `${p}: a path with white space cannot go into the systemd unit`, 2)
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(o.user)) throw new EnclaveError('EINVAL', `--user ${o.user}: not a user name`, 2)
  return `[Unit]
Description=Enclave hub (enrolment, approval, central tags, policies and exit-node routes)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=${o.user}
ExecStart=${node} ${bin} hub serve --data-dir ${dataDir}
Restart=on-failure
RestartSec=2
Environment=ENCLAVE_HUB_DIR=${dataDir}
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=${dataDir}
ProtectHome=true
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=true
LockPersonality=true
UMask=0077

[Install]
WantedBy=multi-user.target
`
}
