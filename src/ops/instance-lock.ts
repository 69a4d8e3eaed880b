/**
 * One agent per run directory: the first step of a start. The lock is flock(2) on `agent.lock` in the run
 * directory, which the kernel releases when its holder exits, however it exits (kill -9 included): there is
 * no stale lock to judge, no pid reuse to be fooled by, and no race between two starts. The file holds the
 * holder's pid, for messages only. A second start fails with "already running (pid N)" before it has
 * changed anything. flock conflicts between two opens of the file in one process too, so agents run in one
 * test process exclude each other just as processes do.
 */
import fs from 'node:fs'
import path from 'node:path'
import { EnclaveError } from '../errors.js'
import { native } from '../native/io.js'
import { ensurePrivateDir } from '../platform/linux/files.js'

export const LOCK_NAME = 'agent.lock'
const LOCK_SH = 1
const LOCK_EX = 2
const LOCK_NB = 4
const LOCK_UN = 8
const EWOULDBLOCK = 11

export function lockPath(runDir: string): string {
  return path.join(runDir, LOCK_NAME)
}

function openLockFile(file: string, create: boolean): number | undefined {
  // libuv opens with O_CLOEXEC: the lock is never inherited by the commands the agent runs.
  const flags = (create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDONLY) | fs.constants.O_NOFOLLOW
  try {
    return fs.openSync(file, flags, 0o644)
  } catch (e) {
    if (!create && (e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
}

function pidIn(fd: number): number | undefined {
  const buf = Buffer.alloc(32)
  const n = fs.readSync(fd, buf, 0, buf.length, 0)
  const pid = Number(buf.subarray(0, n).toString('utf8').trim())
  return Number.isInteger(pid) && pid > 0 ? pid : undefined
}

/** The pid of the agent holding the run directory's lock, or undefined when nobody holds it. */
export function lockHolder(runDir: string): number | undefined {
  const fd = openLockFile(lockPath(runDir), false)
  if (fd === undefined) return undefined
  try {
    if (native.flock(fd, LOCK_SH | LOCK_NB) === 0) return undefined // nobody holds it exclusively
    return pidIn(fd) ?? -1
  } finally {
    fs.closeSync(fd) // also drops our shared lock
  }
}

export class InstanceLock {
  private constructor(private fd: number | undefined) {}

  /**
   * Takes the lock or throws ERUNNING naming the holder. `stale` is told the pid of an earlier holder that
   * exited without releasing it (killed): the kernel released it, the file still names it.
   */
  static acquire(runDir: string, stale?: (pid: number) => void): InstanceLock {
    ensurePrivateDir(runDir, 0o755)
    const file = lockPath(runDir)
    const fd = openLockFile(file, true) as number
    const r = native.flock(fd, LOCK_EX | LOCK_NB)
    if (r !== 0) {
      const pid = r === -EWOULDBLOCK ? pidIn(fd) : undefined
      fs.closeSync(fd)
      if (r === -EWOULDBLOCK)
        throw new EnclaveError(
          'ERUNNING',
          `an agent is already running with run directory ${runDir} (pid ${pid ?? 'unknown'}); nothing was changed`,
        )
      throw new EnclaveError('ELOCK', `cannot lock ${file}: ${native.strerror(-r)}`)
    }
    const before = pidIn(fd)
    if (before !== undefined && before !== process.pid) stale?.(before)
    fs.ftruncateSync(fd, 0)
    fs.writeSync(fd, `${process.pid}\n`, 0)
    return new InstanceLock(fd)
  }

  release(): void {
    if (this.fd === undefined) return
    try {
      fs.ftruncateSync(this.fd, 0)
    } catch {
      /* the lock goes with the descriptor anyway */
    }
    native.flock(this.fd, LOCK_UN)
    fs.closeSync(this.fd)
    this.fd = undefined
  }
}
