/**
 * The agent's time: milliseconds on the wall clock's scale (so a status can say when, and the peer cache
 * outlives a restart), but advanced only by the monotonic clock. WireGuard's timers, the replay and flood
 * checks, keypair ages and connection-tracking timeouts all measure intervals on it, and an interval must
 * not jump when NTP steps the wall clock: stepped forward, every session and tracked flow would expire at
 * once (connections through an exit node cut, peers failed over); stepped back, sessions would not expire
 * and every initiation from a peer would be refused as a flood for as long as the step.
 *
 * One anchor (the wall and the monotonic clock read together) is taken by the agent's control thread; its
 * workers get it in their init and read the same time. `performance.now()` and `process.hrtime()` both read
 * CLOCK_MONOTONIC, the first from this thread's own origin: their difference, taken once, maps one to the
 * other, so reading the time costs one `performance.now()` and no allocation.
 */

export interface TimeAnchor {
  /** The wall clock (ms since 1970) when the anchor was taken. */
  wallMs: number
  /** CLOCK_MONOTONIC (ms), the same in every thread of the process, at that moment. */
  monoMs: number
}

function monotonicMs(): number {
  const [s, ns] = process.hrtime()
  return s * 1e3 + ns / 1e6
}

/** Reads the wall and the monotonic clock together. */
export function takeAnchor(): TimeAnchor {
  return { wallMs: Date.now(), monoMs: monotonicMs() }
}

/** The agent's time in this thread: the anchor's wall time plus the monotonic time since it. */
export function agentTimeReader(anchor: TimeAnchor): () => number {
  const base = anchor.wallMs - anchor.monoMs + (monotonicMs() - performance.now())
  return () => base + performance.now()
}
