/**
 * WireGuard's MAC (keyed BLAKE2s with a 16-byte output) without allocation, for the data-plane workers'
 * mac1/mac2 checks and cookie replies (src/protocol/macs.ts).
 *
 * The BLAKE2s is hash-wasm's (4.13, MIT): its WebAssembly binary, compiled from the reference-style C in
 * that package, is taken from the package's own distribution file and instantiated here, synchronously,
 * once per thread. Its exports are driven directly (Hash_Init with the key in the shared buffer,
 * Hash_Update, Hash_Final), because the package's hasher objects fix the key at creation (mac2's key, the
 * cookie, differs per sender) and allocate a view and a result per call. At load the module is checked
 * against @noble/hashes' BLAKE2s on keyed and unkeyed inputs; a mismatch (an incompatible hash-wasm)
 * throws, naming the package, rather than letting a wrong MAC drop every handshake.
 */
import fs from 'node:fs'
import { createRequire } from 'node:module'
import { blake2s as nobleBlake2s } from '@noble/hashes/blake2s'

export const MAC_SIZE = 16
/** Longest input one call takes (the module's buffer is 16 KiB; handshake messages are <= 148 B). */
const MAX_INPUT = 8192

// The lib settings here leave WebAssembly out (no DOM lib); the little of it used, typed locally.
type WasmModule = object
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => WasmModule
  Instance: new (module: WasmModule, imports: object) => { exports: unknown }
}

interface Blake2sExports {
  memory: { buffer: ArrayBuffer }
  Hash_GetBuffer(): number
  Hash_Init(param: number): void
  Hash_Update(len: number): void
  Hash_Final(): void
}

function loadModule(): WasmModule {
  const require = createRequire(import.meta.url)
  const file = require.resolve('hash-wasm/dist/blake2s.umd.min.js')
  const src = fs.readFileSync(file, 'utf8')
  const m = /\{name:"blake2s",data:"([A-Za-z0-9+/=]+)",hash:"[0-9a-f]+"\}/.exec(src)
  if (!m) throw new Error(`${file}: no BLAKE2s WebAssembly binary found (hash-wasm 4.13 expected)`)
  return new WebAssembly.Module(Buffer.from(m[1], 'base64'))
}

/** Keyed BLAKE2s-128 (and BLAKE2s-256 for tests) over bytes of any Uint8Array, into any Uint8Array. */
export class Blake2sMac {
  private readonly x: Blake2sExports
  private readonly mem: Uint8Array

  constructor(module: WasmModule = loadModule()) {
    this.x = new WebAssembly.Instance(module, {}).exports as unknown as Blake2sExports
    this.mem = new Uint8Array(this.x.memory.buffer, this.x.Hash_GetBuffer(), MAX_INPUT)
    selfTest(this)
  }

  /**
   * out[outOff, outOff+outLen) = BLAKE2s(key = key[keyOff, keyOff+keyLen), data[off, off+len), outLen).
   * keyLen 0 is the unkeyed hash. Allocates nothing.
   */
  hash(
    key: Uint8Array,
    keyOff: number,
    keyLen: number,
    data: Uint8Array,
    off: number,
    len: number,
    out: Uint8Array,
    outOff: number,
    outLen: number,
  ): void {
    if (len > MAX_INPUT || keyLen > 32 || outLen < 1 || outLen > 32) throw new RangeError('BLAKE2s: input, key or output too long')
    const m = this.mem
    for (let i = 0; i < keyLen; i++) m[i] = key[keyOff + i]
    this.x.Hash_Init((outLen * 8) | (keyLen << 16))
    for (let i = 0; i < len; i++) m[i] = data[off + i]
    this.x.Hash_Update(len)
    this.x.Hash_Final()
    for (let i = 0; i < outLen; i++) out[outOff + i] = m[i]
  }

  /** WireGuard's MAC(key, data): keyed BLAKE2s-128 (the key is 32 bytes, or 16 for mac2's cookie). */
  mac(key: Uint8Array, keyOff: number, keyLen: number, data: Uint8Array, off: number, len: number, out: Uint8Array, outOff: number): void {
    this.hash(key, keyOff, keyLen, data, off, len, out, outOff, MAC_SIZE)
  }
}

function selfTest(b: Blake2sMac): void {
  const data = new Uint8Array(148)
  const key = new Uint8Array(32)
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 255
  for (let i = 0; i < key.length; i++) key[i] = (i * 13 + 1) & 255
  const got = new Uint8Array(32)
  const cases: Array<[number, number, number]> = [
    [32, 116, 16], // mac1 over an initiation
    [16, 132, 16], // mac2 over an initiation, keyed with a cookie
    [32, 6, 16], // a cookie from an address and port
    [0, 148, 32], // the plain hash
    [32, 0, 16],
  ]
  for (const [keyLen, len, outLen] of cases) {
    b.hash(key, 0, keyLen, data, 0, len, got, 0, outLen)
    const want = nobleBlake2s(data.subarray(0, len), keyLen ? { key: key.subarray(0, keyLen), dkLen: outLen } : { dkLen: outLen })
    for (let i = 0; i < outLen; i++)
      if (got[i] !== want[i])
        throw new Error(`hash-wasm's BLAKE2s disagrees with @noble/hashes (key ${keyLen} B, input ${len} B): is hash-wasm 4.13 installed?`)
  }
}
