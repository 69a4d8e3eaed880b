/** The keyed hash of the connection-tracking table (allocation-free, 32-bit words). */

function rotl(x: number, b: number): number {
  return (x << b) | (x >>> (32 - b))
}

/**
 * HalfSipHash-2-4 with a 32-bit result (Aumasson and Bernstein's reference, halfsiphash.c) over
 * `n` little-endian 32-bit words; k0, k1 are the key's two little-endian words. Allocation-free.
 */
export function halfSipHash4(k0: number, k1: number, n: number, m0: number, m1: number, m2: number, m3: number): number {
  let v0 = k0 | 0
  let v1 = k1 | 0
  let v2 = 0x6c796765 ^ k0
  let v3 = 0x74656462 ^ k1
  for (let i = 0; i <= n; i++) {
    // Words m0..m(n-1), then the final block: the length in bytes in the top byte.
    const m = i === n ? (n * 4) << 24 : i === 0 ? m0 : i === 1 ? m1 : i === 2 ? m2 : m3
    v3 ^= m
    for (let r = 0; r < 2; r++) {
      v0 = (v0 + v1) | 0
      v1 = rotl(v1, 5) ^ v0
      v0 = rotl(v0, 16)
      v2 = (v2 + v3) | 0
      v3 = rotl(v3, 8) ^ v2
      v0 = (v0 + v3) | 0
      v3 = rotl(v3, 7) ^ v0
      v2 = (v2 + v1) | 0
      v1 = rotl(v1, 13) ^ v2
      v2 = rotl(v2, 16)
    }
    v0 ^= m
  }
  v2 ^= 0xff
  for (let r = 0; r < 4; r++) {
    v0 = (v0 + v1) | 0
    v1 = rotl(v1, 5) ^ v0
    v0 = rotl(v0, 16)
    v2 = (v2 + v3) | 0
    v3 = rotl(v3, 8) ^ v2
    v0 = (v0 + v3) | 0
    v3 = rotl(v3, 7) ^ v0
    v2 = (v2 + v1) | 0
    v1 = rotl(v1, 13) ^ v2
    v2 = rotl(v2, 16)
  }
  return v1 ^ v3
}
