/**
 * A token bucket per source address for handshake messages while under load (wireguard-go's
 * ratelimiter: 20 per second, burst 5). Memory is bounded: idle sources are forgotten, and when
 * the table is full the oldest source is evicted.
 */
export const HANDSHAKES_PER_SOURCE_PER_S = 20
export const HANDSHAKE_BURST = 5
export const MAX_SOURCES = 8192

export class SourceRateLimiter {
  private readonly buckets = new Map<number, { tokens: number; last: number }>()

  constructor(
    private readonly perS = HANDSHAKES_PER_SOURCE_PER_S,
    private readonly burst = HANDSHAKE_BURST,
    private readonly maxSources = MAX_SOURCES,
  ) {}

  get size(): number {
    return this.buckets.size
  }

  /** Takes one token for `ip`; false when its bucket is empty. */
  allow(ip: number, now: number): boolean {
    let b = this.buckets.get(ip)
    if (b) {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.last) * this.perS) / 1000)
      b.last = now
      this.buckets.delete(ip) // re-insert: the map's order is least recently seen first
    } else {
      if (this.buckets.size >= this.maxSources) this.evict(now)
      b = { tokens: this.burst, last: now }
    }
    this.buckets.set(ip, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  /** Drops sources whose bucket has refilled (they are indistinguishable from new), else the oldest. */
  private evict(now: number): void {
    const refillMs = (this.burst * 1000) / this.perS
    for (const [ip, b] of this.buckets) {
      if (now - b.last < refillMs) break // ordered by last use: the rest are more recent
      this.buckets.delete(ip)
    }
    if (this.buckets.size >= this.maxSources) this.buckets.delete(this.buckets.keys().next().value as number)
  }
}
