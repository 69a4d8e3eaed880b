/**
 * The worker supervisor: starts the data-plane workers, forwards their log and flow messages,
 * restarts a worker that exits unexpectedly (after releasing the replay locks it held), and gives
 * up (asks the agent to stop) when workers keep crashing. It owns the Worker objects; the agent
 * only asks it to start, post and stop.
 */
import type { Worker } from 'node:worker_threads'
import { KP_SLOTS, K_FIELDS, K_LOCK } from '../ipc/layout.js'
import type { FlowLog, WorkerInit } from '../ipc/messages.js'
import { type AgentLogger, WorkerLogQueue } from '../log/logger.js'
import { startWorker } from '../common/worker-file.js'

const START_TIMEOUT_MS = 15_000
const RESTART_DELAY_MS = 100
const CRASH_WINDOW_MS = 60_000
const MAX_CRASHES_IN_WINDOW = 10
const STOP_GRACE_MS = 2000

export interface SupervisorHooks {
  /** The init message for worker i (read at every (re)start, so it carries the latest tables). */
  init: (i: number) => WorkerInit
  onFlow: (f: FlowLog) => void
  /** Workers keep crashing: the agent should stop. */
  onCrashLoop: () => void
  /** A worker's TUN queue failed for good (the device was deleted): the agent should stop. */
  onDeviceLost: (worker: number, err: string) => void
}

/**
 * Frees the replay-window locks (K_LOCK) that worker `worker` held when it stopped: a lock holds its
 * holder's id + 1, and a worker that dies inside the lock never lets go (the other workers would drop
 * every packet on that keypair as replay_lock_busy). Call only once the worker has exited. Returns
 * how many were freed.
 */
export function releaseReplayLocks(kpI32: Int32Array, worker: number): number {
  let freed = 0
  for (let kb = K_LOCK; kb < KP_SLOTS * K_FIELDS; kb += K_FIELDS)
    if (kpI32[kb] === worker + 1 && Atomics.compareExchange(kpI32, kb, worker + 1, 0) === worker + 1) freed++
  return freed
}

export class WorkerSupervisor {
  private readonly workers: Array<Worker | undefined> = []
  private restarts: number[] = []
  private stopping = false
  /** A worker reported its TUN queue lost: workers that leave their loop are not restarted. */
  private deviceLost = false
  /** The keypair words (from the workers' init), for releasing a dead worker's replay locks. */
  private kpI32?: Int32Array
  /** Restarts since start (for status and metrics). */
  restartsTotal = 0
  /** Worker log lines, bounded: beyond 1024 waiting, dropped and counted (logger.ts). */
  private readonly logs = new WorkerLogQueue(
    ({ worker, msg: m }) =>
      m.t === 'flow'
        ? this.hooks.onFlow(m as unknown as FlowLog)
        : this.log[(m.level as 'info' | 'warn' | 'error') ?? 'info']({ worker }, String(m.msg)),
    (n) => this.log.warn({ dropped: n }, 'worker log messages dropped: control could not keep up'),
  )

  constructor(
    private readonly hooks: SupervisorHooks,
    private readonly log: AgentLogger,
  ) {}

  /** Starts workers 0..n-1; resolves when every loop runs (so "ready" means packets are being read). */
  async startAll(n: number): Promise<void> {
    await Promise.all(Array.from({ length: n }, (_, i) => this.start(i)))
  }

  post(msg: unknown): void {
    for (const w of this.workers) w?.postMessage(msg)
  }

  /** Worker i runs (a worker being restarted gets the latest tables in its init message). */
  running(i: number): boolean {
    return this.workers[i] !== undefined
  }

  /** Test hook: crash a worker to exercise the restart path. */
  crash(i: number): void {
    void this.workers[i]?.terminate()
  }

  /** Waits for workers to leave their loops (the agent set G_STOP), terminating stragglers. */
  async stopAll(): Promise<void> {
    this.stopping = true
    await Promise.all(
      this.workers.map(
        (w) =>
          w &&
          new Promise<void>((r) => {
            const t = setTimeout(() => {
              void w.terminate()
              r()
            }, STOP_GRACE_MS)
            w.once('exit', () => {
              clearTimeout(t)
              r()
            })
          }),
      ),
    )
  }

  private start(i: number): Promise<void> {
    const init = this.hooks.init(i)
    this.kpI32 ??= new Int32Array(init.layout.kpI32)
    const w = startWorker('dataplane', { workerData: init })
    this.workers[i] = w
    // Settled once: ready, or failed by the worker's exit (a death while it loads fails this start at once,
    // not after a later restart succeeded) or by the timeout. Whatever comes after the first has no effect.
    let ready!: () => void
    let notReady!: (e: Error) => void
    const isReady = new Promise<void>((res, rej) => {
      ready = res
      notReady = rej
    })
    w.on('message', (m: { t: string } & Record<string, unknown>) => {
      if (m.t === 'ready') ready()
      else if (m.t === 'flow' || m.t === 'log') this.logs.push({ worker: i, msg: m })
      else if (m.t === 'device-lost') {
        this.deviceLost = true
        this.hooks.onDeviceLost(i, String(m.err))
      }
    })
    w.on('error', (e) => this.log.error({ worker: i, err: e.message }, 'data-plane worker crashed'))
    w.on('exit', (code) => {
      notReady(new Error(`data-plane worker ${i} exited (code ${code}) before it was ready`))
      this.exited(i, code)
    })
    const timer = setTimeout(
      () => notReady(new Error(`data-plane worker ${i} did not start within ${START_TIMEOUT_MS / 1000} s`)),
      START_TIMEOUT_MS,
    ).unref()
    return isReady.finally(() => clearTimeout(timer))
  }

  private exited(i: number, code: number): void {
    this.workers[i] = undefined
    if (this.stopping || this.deviceLost) return
    const freed = this.kpI32 ? releaseReplayLocks(this.kpI32, i) : 0
    if (freed) this.log.warn({ worker: i, locks: freed }, 'released the replay locks the exited worker held')
    // Monotonic: a step of the wall clock neither makes crashes an hour apart a loop nor hides a real one.
    const now = performance.now()
    this.restarts = this.restarts.filter((t) => now - t < CRASH_WINDOW_MS)
    this.restarts.push(now)
    this.restartsTotal++
    if (this.restarts.length > MAX_CRASHES_IN_WINDOW) {
      this.log.error('data-plane workers keep crashing; stopping the agent')
      this.hooks.onCrashLoop()
      return
    }
    this.log.error({ worker: i, code }, 'data-plane worker exited unexpectedly; restarting it')
    setTimeout(() => {
      if (this.stopping) return
      const t0 = performance.now()
      this.start(i).then(
        // Its loop reads packets again: until this line, that queue's packets wait in the ring.
        () => {
          if (!this.stopping) this.log.info({ worker: i, ms: Math.round(performance.now() - t0) }, 'data-plane worker restarted')
        },
        (e: Error) => {
          // A stop terminates a worker still loading after its grace: that is no failure.
          if (!this.stopping) this.log.error({ worker: i, err: e.message }, 'worker restart failed')
        },
      )
    }, RESTART_DELAY_MS)
  }
}
