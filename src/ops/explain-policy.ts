/**
 * The policy half of `enclave explain <ip>` (pure): how a new flow to <ip> is judged, by this
 * profile's Policies, in both directions.
 *  - sends: this system starts it; the receiver judges it. The receiver is the peer that has the
 *    address or carries the route (predicted with this profile's view of its tags and routes), or
 *    this system itself when <ip> is its own address or inside a route it provides.
 *  - receives: a peer starts it to <ip> here (this system's address or a provided route); one line
 *    per peer, or only the peer named by --from.
 */
import { type Cidr, cidrContains } from '../common/ipv4.js'
import type { Profile } from '../config/profile.js'
import { judgeFlow } from '../compile/policy.js'

export const EXPLAIN_PROTOCOLS = { any: 0, icmp: 1, tcp: 6, udp: 17 } as const
export type ExplainProtocol = keyof typeof EXPLAIN_PROTOCOLS

export interface PolicyExplanation {
  flow: string
  mode: 'none' | 'enforce'
  /** Traffic this system starts to the address: who judges it and the verdict. */
  sends?: { receiver: string; verdict: string }
  /** Traffic peers would start to the address here. */
  receives: Array<{ from: string; verdict: string }>
}

export function flowText(proto: ExplainProtocol, port: number): string {
  const name = proto === 'any' ? 'any protocol' : proto === 'icmp' ? 'Icmp' : proto === 'tcp' ? 'Tcp' : 'Udp'
  return port > 0 ? `${name} port ${port}` : name
}

function isHere(p: Profile, ip: number): boolean {
  return (ip | 0) === (p.virtualAddress | 0) || p.exitNode.providesRoutes.some((c) => cidrContains(c, ip))
}

/**
 * `receiverIdentity`: the peer the overlay sends <ip> to (explain's carrier), if any.
 * `from`: only this peer (identity or description) for the receiving side.
 */
export function explainPolicy(
  p: Profile,
  ip: number,
  proto: ExplainProtocol,
  port: number,
  receiverIdentity: string | undefined,
  from?: string,
): PolicyExplanation {
  const n = EXPLAIN_PROTOCOLS[proto]
  const out: PolicyExplanation = { flow: flowText(proto, port), mode: p.policies === undefined ? 'none' : 'enforce', receives: [] }
  const self = { tags: p.tags, address: p.virtualAddress, routes: p.exitNode.providesRoutes }
  const here = isHere(p, ip)
  const receiver = p.peers.find((x) => x.identity === receiverIdentity || (x.virtualAddress | 0) === (ip | 0))
  if (receiver && !here) {
    const routes: Cidr[] = receiver.availableRoutes
    const v = judgeFlow(p.policies, { tags: receiver.tags, address: receiver.virtualAddress, routes }, p.tags, n, ip, port)
    out.sends = { receiver: `${receiver.identity} (as this profile knows its tags; it judges by its own)`, verdict: v.text }
  } else if (here) out.sends = { receiver: 'this system', verdict: "allow (this system's own traffic is never judged here)" }
  if (here) {
    const peers = from === undefined ? p.peers : p.peers.filter((x) => x.identity === from || x.description === from)
    for (const peer of peers) out.receives.push({ from: peer.identity, verdict: judgeFlow(p.policies, self, peer.tags, n, ip, port).text })
  }
  return out
}
