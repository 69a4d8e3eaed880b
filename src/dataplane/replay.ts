/**
 * Sliding replay window (RFC 6479 style, as wireguard-go's replay.go) over shared memory.
 * The bitmap is REPLAY_WORDS 32-bit words used as a ring; the window is (REPLAY_WORDS-1)*32
 * counters behind the highest accepted one. Counters are doubles (exact below 2^53).
 *
 * Callers hold the keypair's K_LOCK around check-and-set when several threads may receive on it.
 * Allocation-free.
 */
import { REPLAY_WORDS } from '../ipc/layout.js'

export const REPLAY_WINDOW = (REPLAY_WORDS - 1) * 32

/**
 * Returns true and records the counter if it was not seen and is inside the window.
 * `last` is stored at lastArr[lastIdx]; the bitmap at bits[base .. base+REPLAY_WORDS).
 * Call only after the packet authenticated.
 */
export function replayCheckAndSet(bits: Uint32Array, base: number, lastArr: Float64Array, lastIdx: number, counter: number): boolean {
  return replayCheckAndSet32(bits, base, lastArr, lastIdx, Math.floor(counter / 4294967296), counter % 4294967296)
}

/**
 * The hot-path form, with the 64-bit counter as its high and low 32-bit words (each passed as
 * two 16-bit halves would be excessive: words above 2^30 are rare, since counters start at 0 and
 * a keypair lives 180 s; values are only boxed, never wrong).
 */
export function replayCheckAndSet32(
  bits: Uint32Array,
  base: number,
  lastArr: Float64Array,
  lastIdx: number,
  ctrHi: number,
  ctrLo: number,
): boolean {
  const counter = ctrHi * 4294967296 + ctrLo
  const last = lastArr[lastIdx]
  const block = Math.floor(counter / 32)
  if (counter > last) {
    const lastBlock = Math.floor(last / 32)
    let diff = block - lastBlock
    if (diff > REPLAY_WORDS) diff = REPLAY_WORDS
    for (let i = 1; i <= diff; i++) bits[base + ((lastBlock + i) % REPLAY_WORDS)] = 0
    lastArr[lastIdx] = counter
  } else if (last - counter >= REPLAY_WINDOW) {
    return false
  }
  const w = base + (block % REPLAY_WORDS)
  const bit = (1 << (counter % 32)) >>> 0
  if ((bits[w] & bit) !== 0) return false
  bits[w] = (bits[w] | bit) >>> 0
  return true
}

/** Cheap pre-check before decrypting: false if certainly a replay or too old. */
export function replayMaybeFresh(
  bits: Uint32Array,
  base: number,
  lastArr: Float64Array,
  lastIdx: number,
  ctrHi: number,
  ctrLo: number,
): boolean {
  const counter = ctrHi * 4294967296 + ctrLo
  const last = lastArr[lastIdx]
  if (counter > last) return true
  if (last - counter >= REPLAY_WINDOW) return false
  return (bits[base + (Math.floor(counter / 32) % REPLAY_WORDS)] & ((1 << (counter % 32)) >>> 0)) === 0
}
