/**
 * The only importer of the native addon (native/enclave_io.cc). A thin facade that turns -errno
 * into typed errors where the caller wants them. The hot-path functions are re-exported as they
 * are: they return -errno for system errors, and the addon itself checks every size it is given
 * (count x slot against the slab, offsets and lengths against their buffers), throwing a
 * RangeError for a caller's bug instead of touching memory outside the buffers.
 * checkBatchBuffers (src/io/packet-io.ts) is the same check in JavaScript, for a clear message once
 * at worker start. Loaded by whoever opens native devices; a worker on memory queues never loads it.
 */
import { createRequire } from 'node:module'
import fs from 'node:fs'

export interface NativeIo {
  tunOpen(
    name: string,
    multiQueue: boolean,
    offload?: boolean,
    uso?: boolean,
  ): { fd: number; name?: string; offload?: boolean; uso?: boolean }
  writeArena(fd: number, buf: Uint8Array, base: number, offs: Int32Array, lens: Int32Array, count: number): number
  readArena(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, maxPkts: number, timeoutMs: number): number
  readBatch(fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, max: number, timeoutMs: number): number
  writeBatch(fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, count: number): number
  udpOpen(ip: number, port: number, reusePort: boolean, rcvbuf: number, sndbuf: number, mark: number, gro?: boolean): number
  udpLocalPort(fd: number): number
  recvBatch(fd: number, slab: Uint8Array, slotSize: number, lens: Int32Array, addrs: Uint32Array, max: number, timeoutMs: number): number
  sendBatch(fd: number, slab: Uint8Array, slotSize: number, offset: number, lens: Int32Array, addrs: Uint32Array, count: number): number
  poll2(fdA: number, fdB: number, timeoutMs: number): number
  epollCreate(): number
  /** add: watch `fd` for reading; false: stop watching it. 0 or -errno. */
  epollCtl(epfd: number, add: boolean, fd: number): number
  /** Readable fds written to `fds` (at most `max`, at most 256); 0 on timeout; -errno. */
  epollWait(epfd: number, fds: Int32Array, max: number, timeoutMs: number): number
  /** SO_PEERCRED of a connected Unix socket; pid < 0 is -errno. */
  peerCred(fd: number): { pid: number; uid?: number; gid?: number }
  dup2(oldFd: number, newFd: number): number
  /** flock(2): 0 or -errno (-EWOULDBLOCK when LOCK_NB finds it held). */
  flock(fd: number, op: number): number
  /** One datagram to a Unix datagram socket ('@name': abstract); bytes sent or -errno. */
  unixDgramSend(path: string, data: string): number
  close(fd: number): number
  strerror(errno: number): string
  /** prctl(PR_SET_NAME) on the calling thread (15 bytes kept): 0 or -errno. */
  setThreadName(name: string): number
  MAX_BATCH: number
}

const require = createRequire(import.meta.url)

function load(): NativeIo {
  const candidates = [
    new URL('../../native/build/Release/enclave_io.node', import.meta.url),
    new URL('../../../native/build/Release/enclave_io.node', import.meta.url),
  ]
  for (const c of candidates) if (fs.existsSync(c)) return require(c.pathname) as NativeIo
  throw new Error('native addon enclave_io.node is not built; run `npm rebuild` (or `npm ci`) in the enclave package')
}

export const native: NativeIo = load()

export class NativeError extends Error {
  readonly errno: number
  constructor(what: string, negErrno: number) {
    super(`${what}: ${native.strerror(-negErrno)}`)
    this.errno = -negErrno
  }
}

/**
 * Opens `queues` queues of one multi-queue TUN device. With `offload`, asks for virtio_net_hdr and
 * TSO4/CSUM, and with `uso` UDP segmentation offload too; if the kernel refuses offload, reopens
 * without (the result says what you got).
 */
export function openTunQueues(
  name: string,
  queues: number,
  offload = false,
  uso = false,
): { fds: number[]; name: string; offload: boolean; uso: boolean } {
  if (offload) {
    const first = native.tunOpen(name, true, true, uso)
    if (first.fd >= 0 && first.offload) {
      const fds = [first.fd]
      let ok = true
      for (let i = 1; i < queues && ok; i++) {
        // The offload flags belong to the device: every queue gets the first one's.
        const r = native.tunOpen(first.name ?? name, true, true, first.uso === true)
        if (r.fd < 0 || r.uso !== first.uso) ok = false
        if (r.fd >= 0) fds.push(r.fd)
      }
      if (ok) return { fds, name: first.name ?? name, offload: true, uso: first.uso === true }
      for (const fd of fds) native.close(fd)
    } else if (first.fd >= 0) native.close(first.fd)
  }
  const fds: number[] = []
  let actual = name
  for (let i = 0; i < queues; i++) {
    const r = native.tunOpen(actual, true, false)
    if (r.fd < 0) {
      for (const fd of fds) native.close(fd)
      throw new NativeError(`cannot open TUN ${name} (queue ${i})`, r.fd)
    }
    actual = r.name ?? actual
    fds.push(r.fd)
  }
  return { fds, name: actual, offload: false, uso: false }
}

export function openUdp(ip: number, port: number, reusePort: boolean, mark: number): number {
  const fd = native.udpOpen(ip >>> 0, port, reusePort, 4 << 20, 4 << 20, mark, true)
  if (fd < 0) throw new NativeError(`cannot bind UDP port ${port}`, fd)
  return fd
}
