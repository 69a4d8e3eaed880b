/**
 * One agent per run directory: the first step of a start. The lock is a file (`agent.lock`) holding the
 * owner's pid and a token of its own, created atomically (written aside, then hard-linked into place,
 * which fails if it exists). A lock whose pid is gone (the agent was killed) is taken over; one whose
 * process lives makes a second start fail with "already running (pid N)" before it has changed anything.
 * Release removes the file only while it still holds this lock's token.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { EnclaveError } from '../errors.js'
import { ensurePrivateDir } from '../platform/linux/files.js'

export const LOCK_NAME = 'agent.lock'

export function lockPath(runDir: string): string {
  return path.join(runDir, LOCK_NAME)
}

/** The pid that holds the run directory's lock, if that process is alive. */
export function lockHolder(runDir: string): number | undefined {
  let pid: number
  try {
    pid = Number(fs.readFileSync(lockPath(runDir), 'utf8').split('\n')[0])
  } catch {
    return undefined
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  return alive(pid) ? pid : undefined
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export class InstanceLock {
  private constructor(
    private readonly file: string,
    private readonly token: string,
  ) {}

  /** Takes the lock or throws ERUNNING naming the live holder. `stale` is told when a dead holder's lock is taken over. */
  static acquire(runDir: string, stale?: (pid: number) => void): InstanceLock {
    ensurePrivateDir(runDir, 0o755)
    const file = lockPath(runDir)
    const token = crypto.randomBytes(8).toString('hex')
    const tmp = `${file}.${process.pid}.${token}`
    fs.writeFileSync(tmp, `${process.pid}\n${token}\n`, { mode: 0o644 })
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          fs.linkSync(tmp, file)
          return new InstanceLock(file, token)
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
        }
        let held: string
        try {
          held = fs.readFileSync(file, 'utf8')
        } catch {
          continue // released meanwhile
        }
        const pid = Number(held.split('\n')[0])
        if (Number.isInteger(pid) && pid > 0 && alive(pid))
          throw new EnclaveError('ERUNNING', `an agent is already running with run directory ${runDir} (pid ${pid}); nothing was changed`)
        // A dead holder's lock: move it aside (atomic), check it is the one we read, then retry.
        const aside = `${file}.stale.${process.pid}.${token}`
        try {
          fs.renameSync(file, aside)
        } catch {
          continue
        }
        const moved = fs.readFileSync(aside, 'utf8')
        if (moved !== held) fs.renameSync(aside, file)
        else {
          fs.rmSync(aside, { force: true })
          stale?.(pid)
        }
      }
      throw new EnclaveError('ERUNNING', `could not take the agent lock ${file}; another agent is starting`)
    } finally {
      fs.rmSync(tmp, { force: true })
    }
  }

  release(): void {
    try {
      if (fs.readFileSync(this.file, 'utf8').split('\n')[1] === this.token) fs.rmSync(this.file, { force: true })
    } catch {
      // already gone
    }
  }
}
