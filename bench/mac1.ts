/**
 * The cost of checking one handshake message's mac1 (keyed BLAKE2s-128 over the first 116 bytes of an
 * initiation), in process: @noble/hashes as control computes it (noise.ts checkMac1), and hash-wasm's
 * BLAKE2s driven without allocation as the workers do (src/protocol/blake2s-mac.ts).
 */
import { blake2s } from '@noble/hashes/blake2s'
import { Blake2sMac } from '../src/protocol/blake2s-mac.js'

export interface Mac1Result {
  case: 'mac1'
  impl: 'noble' | 'hash-wasm'
  ns_per_mac1: number
}

export function runMac1Bench(seconds = 1): Mac1Result[] {
  const msg = new Uint8Array(148)
  const key = new Uint8Array(32)
  for (let i = 0; i < msg.length; i++) msg[i] = i
  for (let i = 0; i < 32; i++) key[i] = 255 - i
  const out = new Uint8Array(16)
  const wasm = new Blake2sMac()
  let sink = 0
  const time = (f: () => void): number => {
    for (let i = 0; i < 20000; i++) f() // warm-up
    let n = 0
    const t0 = process.hrtime.bigint()
    const end = t0 + BigInt(Math.round(seconds * 1e9))
    let t = t0
    while (t < end) {
      for (let i = 0; i < 1000; i++) f()
      n += 1000
      t = process.hrtime.bigint()
    }
    return Number(t - t0) / n
  }
  const noble = time(() => {
    sink ^= blake2s(msg.subarray(0, 116), { key, dkLen: 16 })[0]
  })
  const hw = time(() => {
    wasm.mac(key, 0, 32, msg, 0, 116, out, 0)
    sink ^= out[0]
  })
  if (sink === 0x1234) console.log('') // keeps the results live
  return [
    { case: 'mac1', impl: 'noble', ns_per_mac1: Math.round(noble) },
    { case: 'mac1', impl: 'hash-wasm', ns_per_mac1: Math.round(hw) },
  ]
}

if (process.argv[1]?.endsWith('mac1.js')) for (const r of runMac1Bench(2)) console.log(JSON.stringify(r))
