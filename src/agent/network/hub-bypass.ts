/**
 * The hub's IPv4 addresses, for the policy rules that keep them on the underlay while 0.0.0.0/0 goes
 * through an exit node (src/ops/route-installer.ts). The hub connection is a TCP socket the agent
 * cannot mark; through the tunnel it would leave from the underlay address, which no exit node accepts.
 * A name is resolved through the system resolver (on failure: no rule for it, logged by the caller).
 */
import dns from 'node:dns/promises'
import { parseIpv4 } from '../../common/ipv4.js'

export async function hubAddresses(urls: readonly string[], lookup = dns.lookup): Promise<{ addrs: number[]; unresolved: string[] }> {
  const addrs = new Set<number>()
  const unresolved: string[] = []
  for (const u of urls) {
    let host: string
    try {
      host = new URL(u).hostname
    } catch {
      continue
    }
    const literal = parseIpv4(host)
    if (typeof literal === 'number') {
      addrs.add(literal >>> 0)
      continue
    }
    try {
      for (const r of await lookup(host, { all: true, family: 4 })) {
        const a = parseIpv4(r.address)
        if (typeof a === 'number') addrs.add(a >>> 0)
      }
    } catch {
      unresolved.push(host)
    }
  }
  return { addrs: [...addrs].sort((a, b) => a - b), unresolved }
}
