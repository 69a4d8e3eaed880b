/**
 * The agent's clock seam. Control reads the time and runs its periodic tick through a Clock; the
 * data-plane workers read the same time (a shared offset, so a test that moves the clock moves theirs).
 *  - `systemClock`: the wall clock and real timers.
 *  - `OffsetClock`: the wall clock plus an offset that only grows; `advance(ms)` moves time forward for
 *    control and workers alike and runs the periodic callbacks as the jump would have (one call per
 *    period, in steps), so tests reach timeouts (rekey, reject-after, failover) without waiting.
 */
export interface Clock {
  now(): number
  setInterval(fn: () => void, ms: number): { clear(): void }
  /** Shared with workers (Float64 [0] = offset in ms), or undefined for the wall clock. */
  readonly shared?: SharedArrayBuffer
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setInterval(fn, ms) {
    const t = setInterval(fn, ms)
    return { clear: () => clearInterval(t) }
  },
}

export class OffsetClock implements Clock {
  readonly shared = new SharedArrayBuffer(8)
  private readonly off = new Float64Array(this.shared)
  private readonly intervals = new Set<{ fn: () => void; ms: number; next: number; timer: NodeJS.Timeout }>()

  now(): number {
    return Date.now() + this.off[0]
  }

  get offsetMs(): number {
    return this.off[0]
  }

  setInterval(fn: () => void, ms: number): { clear(): void } {
    const e = { fn, ms, next: this.now() + ms, timer: setInterval(() => this.fire(e), ms) }
    this.intervals.add(e)
    return {
      clear: () => {
        clearInterval(e.timer)
        this.intervals.delete(e)
      },
    }
  }

  private fire(e: { fn: () => void; ms: number; next: number }): void {
    e.next = this.now() + e.ms
    e.fn()
  }

  /**
   * Moves time forward by `ms` in steps of at most `stepMs`, running each periodic callback that falls
   * due and letting pending promises and I/O settle after every step.
   */
  async advance(ms: number, stepMs = 100): Promise<void> {
    let left = ms
    while (left > 0) {
      const step = Math.min(stepMs, left)
      this.off[0] += step
      left -= step
      const now = this.now()
      for (const e of [...this.intervals]) {
        if (now >= e.next && this.intervals.has(e)) this.fire(e)
      }
      await new Promise<void>((r) => setImmediate(r))
    }
  }
}
