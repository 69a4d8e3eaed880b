/** Resolving a peer's configured Endpoint (an address or a host name looked up over DNS, IPv4 only). */
import dns from 'node:dns/promises'
import { intToIp, parseIpv4 } from '../../common/ipv4.js'
import type { AgentLogger } from '../../log/logger.js'
import type { PeerMemory } from './peer-memory.js'
import type { PeerRuntime } from './peer-table.js'

/**
 * Sets `peer.ep.configured`. The endpoint workers send to is set too when none is known yet,
 * or (with `force`) when the name now resolves elsewhere.
 */
/** Looks up a host name's IPv4 address (the system resolver by default). */
export type Resolver = (host: string) => Promise<string>
export const systemResolver: Resolver = async (host) => (await dns.lookup(host, { family: 4 })).address

export interface EndpointContext {
  memory: PeerMemory
  log: AgentLogger
  now: () => number
  resolve: Resolver
}

export async function resolveEndpoint(peer: PeerRuntime, c: EndpointContext, force = false): Promise<void> {
  const { memory, log } = c
  const ep = peer.cfg.endpoint
  if (!ep) return
  peer.ep.lastResolveMs = c.now()
  let ip = parseIpv4(ep.host)
  if (typeof ip === 'string') {
    try {
      ip = parseIpv4(await c.resolve(ep.host)) as number
    } catch (e) {
      log.warn(
        { peer: peer.cfg.identity, endpoint: `${ep.host}:${ep.port}`, err: (e as Error).message },
        'cannot resolve peer endpoint; waiting for the peer to connect',
      )
      return
    }
  }
  const prev = peer.ep.configured
  const changed = prev !== undefined && (prev.ip !== ip || prev.port !== ep.port)
  peer.ep.configured = { ip, port: ep.port }
  if (memory.endpointRaw(peer.slot) === 0 || (force && changed)) memory.setEndpoint(peer.slot, peer.ep.configured)
  if (changed)
    log.network(
      { peer: peer.cfg.identity, host: ep.host, address: `${intToIp(ip)}:${ep.port}` },
      'peer endpoint name resolves to a new address',
    )
}

/**
 * The one endpoint override: the admin edited the peer's Endpoint, which wins over a roamed one. The
 * endpoint workers send to is set from the profile again (or cleared, when the Endpoint was removed).
 */
export async function overrideEndpoint(peer: PeerRuntime, c: EndpointContext): Promise<void> {
  peer.ep.configured = undefined
  c.memory.setEndpoint(peer.slot, undefined)
  await resolveEndpoint(peer, c)
}
