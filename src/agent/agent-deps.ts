/**
 * Everything an Agent takes from outside itself, chosen once when it is built. `defaultDeps()` is what
 * `enclave run` uses: native devices, iproute2 and iptables, the wall clock, the system resolver, a piscina
 * pool for the responder's handshake crypto, and stdout for the log. Tests replace what they need (see
 * test/helpers/mesh.ts: memory devices on a MemoryNet, a MemoryOsNetwork, an OffsetClock).
 */
import { type Clock, systemClock } from '../platform/clock.js'
import { type OsNetwork, linuxNetwork } from '../platform/os-network.js'
import { type DeviceOptions, type OpenDevices, openNativeDevices } from './devices.js'
import { type Resolver, systemResolver } from './peers/endpoints.js'
import { type HandshakePool, startHandshakePool } from './handshake-pool.js'
import type { LineSink } from '../log/logger.js'

export interface AgentDeps {
  clock: Clock
  os: OsNetwork
  openDevices: OpenDevices
  deviceOptions: DeviceOptions
  resolve: Resolver
  handshakePool: (privateKey: Uint8Array, publicKey: Uint8Array) => HandshakePool
  /** Where log lines go (stdout, with rotation of a redirected log file, when undefined). */
  logOut?: LineSink
  /** `enclave run` needs root for the TUN device and routes; memory devices do not. */
  requireRoot: boolean
  /** Offer the test hooks (crash a worker) on the control socket. */
  testHooks: boolean
  /** Handshake messages per second above which control is under load (mac2 and cookies); WireGuard's default. */
  underLoadHandshakesPerS?: number
  /** Rounds of each worker's JIT warm-up (src/dataplane/warmup.ts); undefined: WARMUP_ROUNDS. */
  warmupRounds?: number
}

export function defaultDeps(env: NodeJS.ProcessEnv = process.env): AgentDeps {
  return {
    clock: systemClock,
    os: linuxNetwork,
    openDevices: openNativeDevices,
    // ENCLAVE_TUN_OFFLOAD=0 and ENCLAVE_TUN_USO=0 turn them off (for measuring what they are worth).
    deviceOptions: { offload: env.ENCLAVE_TUN_OFFLOAD !== '0', uso: env.ENCLAVE_TUN_USO !== '0' },
    resolve: systemResolver,
    handshakePool: startHandshakePool,
    requireRoot: true,
    testHooks: env.ENCLAVE_TEST_HOOKS === '1',
    // ENCLAVE_DATAPATH_WARMUP=0 turns the workers' JIT warm-up off (for measuring what it is worth).
    warmupRounds: env.ENCLAVE_DATAPATH_WARMUP === '0' ? 0 : undefined,
  }
}
