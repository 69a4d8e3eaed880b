/**
 * A fixed set of token buckets in two Float64Arrays (no allocation per use), refilled by the time since
 * each bucket's last use. A clock that steps back counts as no time passing, never as debt, and refills
 * go on from the new time. Used by a worker's handshake gate and its per-peer pacing of staged packets.
 *
 * The time is read from `clock[0]` (milliseconds), which the owner writes once per batch: a millisecond
 * timestamp is not a small integer, and passed as an argument to a call V8 did not inline it would be
 * boxed, one heap number per packet (seen in test/unit/no-allocation.test.ts when the inlining budget of
 * the caller ran out).
 */
export class TokenBuckets {
  private readonly tokens: Float64Array
  private readonly last: Float64Array

  constructor(
    n: number,
    private readonly perS: number,
    readonly burst: number,
    private readonly clock: Float64Array,
  ) {
    this.tokens = new Float64Array(n).fill(burst)
    this.last = new Float64Array(n)
  }

  /** Refills bucket i up to the clock's time and returns its level. */
  refill(i: number): number {
    const nowMs = this.clock[0]
    const elapsed = nowMs - this.last[i]
    if (elapsed > 0) this.tokens[i] = Math.min(this.burst, this.tokens[i] + (elapsed * this.perS) / 1000)
    this.last[i] = nowMs
    return this.tokens[i]
  }

  /** Spends one token of bucket i (after refill() said there is one). */
  spend(i: number): void {
    this.tokens[i] -= 1
  }

  /** Refills bucket i and spends a token if it has one. */
  take(i: number): boolean {
    if (this.refill(i) < 1) return false
    this.tokens[i] -= 1
    return true
  }

  /** Makes bucket i full, as if unused (a table entry taken over by a new owner). */
  reset(i: number): void {
    this.tokens[i] = this.burst
    this.last[i] = 0
  }
}
