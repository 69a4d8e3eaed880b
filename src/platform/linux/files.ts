/**
 * Run and log files that root writes in directories others might reach: never follow a symlink,
 * never write through a hard link, set modes on the opened descriptor (fchmod), not on a path.
 * A planted link at the path makes the call fail with one clear line; its target is untouched.
 */
import fs from 'node:fs'
import { EnclaveError } from '../../errors.js'

const { O_WRONLY, O_CREAT, O_APPEND, O_NOFOLLOW, O_NONBLOCK } = fs.constants

/**
 * Opens `file` for writing without following a symlink at its last component (O_NOFOLLOW), and
 * without blocking on a planted FIFO (O_NONBLOCK); refuses anything but a regular file with one
 * link, then sets `mode` on the descriptor and (unless appending) truncates it: nothing is changed
 * before the checks pass. Returns the descriptor.
 */
export function openNoFollow(file: string, mode: number, append: boolean): number {
  let fd: number
  try {
    fd = fs.openSync(file, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | (append ? O_APPEND : 0), mode)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ELOOP') throw new EnclaveError('ESYMLINK', `${file} is a symbolic link; refusing to write through it (remove it)`)
    if (code === 'ENXIO') throw new EnclaveError('EBADFILE', `${file} is not a regular file; refusing to write to it (remove it)`)
    throw new EnclaveError(code ?? 'EIO', `cannot open ${file}: ${(e as Error).message}`)
  }
  const st = fs.fstatSync(fd)
  if (!st.isFile() || st.nlink > 1) {
    fs.closeSync(fd)
    throw new EnclaveError('EBADFILE', `${file} is not a regular file with a single link; refusing to write to it (remove it)`)
  }
  fs.fchmodSync(fd, mode)
  if (!append) fs.ftruncateSync(fd, 0)
  return fd
}

/** Replaces the contents of `file` (created with `mode`) without following links. */
export function writeFileNoFollow(file: string, data: string, mode: number): void {
  const fd = openNoFollow(file, mode, false)
  try {
    fs.writeSync(fd, data)
  } finally {
    fs.closeSync(fd)
  }
}

/** Opens a log file for appending without following links (the caller closes it). */
export function openLogNoFollow(file: string, mode = 0o640): number {
  return openNoFollow(file, mode, true)
}

/**
 * Makes (or checks) a directory that only root may write: created with `mode` if missing; an
 * existing one must be a real directory (not a symlink) owned by this user and not writable by
 * group or others, so nobody else can plant or replace files in it.
 */
export function ensurePrivateDir(dir: string, mode: number): void {
  fs.mkdirSync(dir, { recursive: true, mode })
  const st = fs.lstatSync(dir)
  const uid = process.geteuid?.() ?? 0
  if (!st.isDirectory()) throw new EnclaveError('EBADDIR', `${dir} is not a directory (a symbolic link?); refusing to use it`)
  if (st.uid !== uid) throw new EnclaveError('EBADDIR', `${dir} is owned by uid ${st.uid}, not ${uid}; refusing to use it`)
  if (st.mode & 0o022)
    throw new EnclaveError(
      'EBADDIR',
      `${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod go-w ${dir}`,
    )
}
