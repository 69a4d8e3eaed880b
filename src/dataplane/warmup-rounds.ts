/**
 * Rounds of the data-plane workers' JIT warm-up (src/dataplane/warmup.ts): enough for V8 (Node 20)
 * to have compiled the per-packet and per-batch functions with TurboFan. With --trace-opt the last
 * hot-path function was marked after ~2,500 rounds. A module of its own, so that control can name
 * the default without loading the warm-up and its synthetic session pair.
 */
export const WARMUP_ROUNDS = 4000
